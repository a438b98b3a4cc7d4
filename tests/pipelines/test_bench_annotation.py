"""The learn-from-corrections bench suite at toy size: both arms run and the report section is
written (the numbers mean nothing at this scale)."""

import pytest

from pipelines.bench import runner
from toybench import TINY_INTERACTIVE


@pytest.fixture
def tiny_mode(monkeypatch):
    monkeypatch.setitem(runner.MODES, "tiny", TINY_INTERACTIVE)


def test_annotation_suite_runs_both_arms_and_writes_its_section(tiny_mode, tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    options = {"annotation.experts": "drnew", "annotation.cases": "4", "annotation.max_clicks": "2", "annotation.learn_steps": "2"}
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("annotation",), write=str(md), command="expertseg bench --suite annotation", options=options)
    r = result["results"]["annotation"]
    assert list(r["experts"]) == ["drnew"]
    e = r["experts"]["drnew"]
    assert len(e["cases"]) == 4 and 0 < e["goal"] < 1
    assert set(e["dedicated"]) == {"multi_expert", "scratch_all"} and e["dedicated_dice"] == max(e["dedicated"].values())
    assert abs(e["goal"] - 0.95 * e["dedicated_dice"]) < 1e-9
    for arm in ("adapting", "control"):
        rows = e["arms"][arm]["rows"]
        assert [x["case"] for x in rows] == e["cases"] and all(0 <= x["clicks"] <= 2 and len(x["dice_per_click"]) == x["clicks"] + 1 for x in rows)
    assert e["arms"]["adapting"]["rows"][1]["start"] == "drnew-page" and e["arms"]["control"]["rows"][1]["start"] == e["start"]
    text = md.read_text()
    assert "## Learning from corrections" in text and "### `drnew` on grey and white matter" in text and "learning_from_corrections.png" in text and "What the clicks did" in text
    assert (tmp_path / "b" / "figures" / "learning_from_corrections.png").is_file()
    assert not (tmp_path / "b" / "annotation" / "adapting" / "data").exists()  # the copies are removed


def test_an_unknown_option_is_refused(tiny_mode, tmp_path):
    from experts.errors import ConfigError

    with pytest.raises(ConfigError, match="annotation.clicks"):
        runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("annotation",), options={"annotation.clicks": "3"})


def test_an_expert_that_is_not_a_new_doctor_is_refused(tiny_mode, tmp_path):
    from experts.errors import ConfigError

    with pytest.raises(ConfigError, match="not a new doctor"):
        runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("annotation",), options={"annotation.experts": "ref"})


def _rows(clicks):
    return [{"clicks": c} for c in clicks]


@pytest.mark.parametrize("adapting, control, expected", [
    ([10, 2, 1, 0, 1], [10, 9, 10, 8, 10], "met"),
    ([10, 2, 10, 1, 10], [10, 2, 1, 0, 1], "not met: the fall is not the adaptation's"),  # the control falls as far
    ([10, 9, 10, 8, 10], [10, 10, 10, 10, 10], "not met: clicks fell 20 %"),
    ([0, 0, 0, 0, 0], [0, 0, 0, 0, 0], "not measurable"),
])
def test_the_verdict_asks_the_fall_of_the_adaptation_not_of_the_cases(adapting, control, expected):
    from pipelines.bench.annotation import verdict

    assert verdict(_rows(adapting), _rows(control)).startswith(expected)


def test_the_nuclei_demo_adds_its_doctors_to_the_tissue_ones(tiny_mode, tmp_path):
    options = {"annotation.experts": "drnew", "annotation.cases": "2", "annotation.max_clicks": "1", "annotation.learn_steps": "1"}
    runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("annotation",), options=options, command="expertseg bench --suite annotation")
    md = tmp_path / "BENCHMARKS.md"
    result = runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("annotation",), write=str(md), options={**options, "annotation.structures": "nuclei"},
                              command="expertseg bench --suite annotation --option annotation.structures=nuclei")
    r = result["results"]["annotation"]["experts"]
    assert set(r) == {"drnew", "drnew (nuclei)"} and r["drnew (nuclei)"]["structures"] == "nuclei" and r["drnew (nuclei)"]["doctor"] == "drnew"
    assert (tmp_path / "b" / "runs" / "interactive-model" / "model").is_dir()  # the interactive suite's, shared by name
    text = md.read_text()
    assert "### `drnew` on the deep grey nuclei demo" in text and "Commands: " in text  # both runs' commands


def test_unknown_structures_are_refused(tiny_mode, tmp_path):
    from experts.errors import ConfigError

    with pytest.raises(ConfigError, match="annotation.structures"):
        runner.run_bench(out=str(tmp_path / "b"), mode="tiny", suites=("annotation",), options={"annotation.structures": "organs"})
