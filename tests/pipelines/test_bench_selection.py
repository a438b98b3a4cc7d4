"""The case-selection suite at a toy scale: every strategy's curve for two held-out experts, the
Markdown section with its verdict and the plot (the numbers mean nothing at this scale)."""

import pytest

from pipelines.bench import runner
from toybench import tiny_mode_settings

TINY = tiny_mode_settings(ks=[1])
OPTIONS = {"selection.seeds": "2", "selection.train_seeds": "1", "selection.ks": "1,2", "selection.held_out_pretraining": "1"}


@pytest.fixture
def tiny_mode(monkeypatch):
    monkeypatch.setitem(runner.MODES, "tiny", TINY)


def test_selection_suite_reports_every_strategy_for_each_held_out_expert(tiny_mode, tmp_path):
    from experts.selection import STRATEGIES

    md = tmp_path / "BENCHMARKS.md"
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("selection",), write=str(md), command="expertseg bench --tiny --suite selection", options=OPTIONS)
    sel = result["results"]["selection"]
    held = sel["held_out"]
    assert len(held) == 2 and "drnew" in held  # the new doctor and one pretraining expert held out
    for h, entry in held.items():
        assert set(entry["strategies"]) == set(STRATEGIES.names()), h
        assert h not in entry["experts_asked"]
        for name, st in entry["strategies"].items():
            runs = st["runs"]
            assert set(runs) == {"1", "2"} and all(len(runs[k]) == (2 if st["seeded"] else 1) for k in runs), (h, name)
            assert all(r["cases"] == runs["2"][i]["cases"][:1] for i, r in enumerate(runs["1"]))  # K = 1 is the first of K = 2
            assert all(set(r["cases"]) <= set(entry["candidates"]) for k in runs for r in runs[k])
            assert st["summary"]["2"]["mean"] is not None
        seeded = entry["strategies"]["random"]["summary"]["2"]
        assert seeded["n"] == 2 and seeded["low"] <= seeded["mean"] <= seeded["high"]
    assert set(sel["verdict"]["gaps"]) == set(STRATEGIES.names()) - {"foreground-random"}
    text = md.read_text()
    assert "## Case selection" in text and "Target: a strategy whose mean beats `foreground-random`" in text
    assert (tmp_path / "benchmarks" / "case_selection.png").exists()


def test_a_selection_option_that_does_not_exist_names_the_known_ones(tiny_mode, tmp_path):
    from experts.errors import ConfigError

    with pytest.raises(ConfigError, match="known: selection.seeds"):
        runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("selection",), options={"selection.sedes": "2"})


def test_an_option_for_a_suite_that_does_not_run_is_refused(tmp_path):
    import click

    with pytest.raises(click.UsageError, match="add --suite selection"):
        runner.run_bench(out=str(tmp_path / "b"), mode="quick", suites=("speed",), options={"selection.seeds": "2"})


def test_bench_option_must_name_a_suite_key_and_value():
    from click.testing import CliRunner

    from pipelines.cli import cli

    result = CliRunner().invoke(cli, ["bench", "--suite", "selection", "--option", "seeds=2"])
    assert result.exit_code == 2 and "SUITE.KEY=VALUE" in result.output
