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


def test_the_logged_parts_carry_the_share_of_time_spent_waiting_for_batches():
    """A loader that sleeps most of each step shows up as a large ``data_wait_fraction``; one that
    yields ready batches as a small one (the speed bench reads it from a real pretraining)."""
    import time

    import torch

    from experts.records import Batch, NetOutput
    from experts.training.loop import Callbacks, fit

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 1)

        def forward(self, image, expert):
            return NetOutput(logits=self.conv(image))

    def batches(pause):
        while True:
            time.sleep(pause)
            yield Batch(image=torch.randn(1, 1, 4, 4, 4), label=torch.zeros(1, 1, 4, 4, 4, dtype=torch.long), expert=torch.zeros(1, dtype=torch.long), spacing=torch.ones(1, 3))

    def waited(data_pause, step_pause):
        """Both sides slowed by a sleep, so that the shares do not depend on how busy the machine is."""
        net, logged = Net(), []
        opt = torch.optim.SGD(net.parameters(), lr=0.01)

        def loss_fn(outputs, batch, step):
            time.sleep(step_pause)
            return {"loss": outputs.logits.square().mean()}

        fit(model=net, loss_fn=loss_fn, optimizers=[opt], schedules=[], batches=batches(data_pause), start_step=0, steps=6, device=torch.device("cpu"),
            callbacks=Callbacks(on_log=lambda step, parts: logged.append(parts), log_every=3), progress=False, plain_every=0)
        return [p["data_wait_fraction"] for p in logged]

    slow, fast = waited(0.1, 0.0), waited(0.0, 0.1)
    assert len(slow) == 2 and min(slow) > 0.5, slow
    assert max(fast) < 0.5, fast
