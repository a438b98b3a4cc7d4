"""Progress without a terminal: a plain line every interval, as nnU-Net prints its epochs."""


def test_plain_progress_prints_a_line_every_interval_and_at_the_end():
    import io

    from experts.training.loop import PlainProgress

    now = [0.0]
    out = io.StringIO()
    bar = PlainProgress("pretrain", start=0, total=100, every=30.0, clock=lambda: now[0], out=out)
    for step in range(1, 101):
        now[0] = step * 1.0  # one step per second
        bar.update(step, 0.5)
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["pretrain: step 30/100", "pretrain: step 60/100", "pretrain: step 90/100", "pretrain: step 100/100"]
    assert "1.00 steps/s" in lines[0] and "~70 s left" in lines[0]
