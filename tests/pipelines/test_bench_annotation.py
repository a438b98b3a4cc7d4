"""The learn-from-corrections bench suite at toy size: both arms run and the report section is
written (the numbers mean nothing at this scale)."""

import pytest

from pipelines.bench import runner
from test_bench import TINY  # noqa: F401  (the toy sizes of the bench tests)


@pytest.fixture
def tiny_mode(monkeypatch):
    monkeypatch.setitem(runner.MODES, "tiny", {**TINY, "overrides": TINY["overrides"] + ("interactive.rounds=1",)})


def test_annotation_suite_runs_both_arms_and_writes_its_section(tiny_mode, tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    options = {"annotation.cases": "4", "annotation.max_clicks": "2", "annotation.learn_steps": "2"}
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("annotation",), write=str(md), command="expertseg bench --suite annotation", options=options)
    r = result["results"]["annotation"]
    assert r["expert"] == "drnew" and len(r["cases"]) == 4 and 0 < r["goal"] < 1
    for arm in ("adapting", "control"):
        rows = r["arms"][arm]["rows"]
        assert [x["case"] for x in rows] == r["cases"] and all(0 <= x["clicks"] <= 2 for x in rows)
    assert r["arms"]["adapting"]["rows"][1]["start"] == "drnew-page" and r["arms"]["control"]["rows"][1]["start"] == r["start"]
    assert "## Learning from corrections" in md.read_text()
    assert not (tmp_path / "b" / "annotation" / "adapting" / "data").exists()  # the copies are removed


def test_an_unknown_option_is_refused(tiny_mode, tmp_path):
    from experts.errors import ConfigError

    with pytest.raises(ConfigError, match="annotation.clicks"):
        runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("annotation",), options={"annotation.clicks": "3"})
