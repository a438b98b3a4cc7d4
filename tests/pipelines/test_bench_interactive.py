"""The interactive refinement bench suite at toy size: the nuclei demo, both models, the protocol
with its arms, latency on a finer volume and the report section (the numbers mean nothing here)."""

import pytest

from pipelines.bench import runner
from toybench import TINY_INTERACTIVE


@pytest.fixture
def tiny_mode(monkeypatch):
    monkeypatch.setitem(runner.MODES, "tiny", TINY_INTERACTIVE)


def test_interactive_suite_runs_the_protocol_and_times_a_finer_volume(tiny_mode, tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    options = {"interactive.max_cases": "1", "interactive.cases_1mm": "1", "interactive.fine_mm": "4"}
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("interactive",), write=str(md), command="expertseg bench --suite interactive", options=options)
    r = result["results"]["interactive"]
    assert r["classes"] == ["thalamus", "caudate", "lentiform"] and "drnew" not in r["experts"]
    some = next(iter(r["evaluation"].values()))
    box = next(v for k, v in some.items() if k.endswith("/box"))
    assert len(box["dice"]) == 6 and "box_alone" in box and "other_row" in box
    compact, fine = r["latency"]["compact"], r["latency"]["1mm"]
    assert compact["n"] > 0 and compact["median_s"] > 0 and compact["median_gflop"] > 0 and r["gflop_per_voxel"] > 0
    assert fine["spacing"] == 4.0 and fine["n"] > 0 and fine["shapes"][0][0] > r["shape"][0]
    text = md.read_text()
    assert "## Interactive refinement" in text and "Targets (box first):" in text and "benchmarks/interactive_dice.png" in text


def test_an_unknown_option_is_refused(tiny_mode, tmp_path):
    from experts.errors import ConfigError

    with pytest.raises(ConfigError, match="interactive.clicks"):
        runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("interactive",), options={"interactive.clicks": "3"})
