"""``expertseg suggest`` end to end on a toy model: the printed cases and reasons, the JSON for
scripts, the adapt line whose cases ``expertseg adapt --cases`` takes, and the one-line refusals."""

import json
import shlex

import pytest
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.pretrain import pretrain

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.steps=4", "train.val_every=100", "predict.sw_batch_size=1")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from toydata import make_toy_dataset

    root = tmp_path_factory.mktemp("suggest")
    data = make_toy_dataset(root / "data")
    pretrain(data=str(data), out=str(root / "pre"), overrides=TINY, tracking="local", progress=False)
    return data, root / "pre"


def run(pretrained, *args):
    data, pre = pretrained
    return CliRunner().invoke(cli, ["suggest", "--model", str(pre), "--data", str(data), "--expert", "newdoc", *args, "--set", "predict.sw_batch_size=1"])


@pytest.mark.parametrize("strategy", ["random", "foreground-random", "disagreement", "diversity", "disagreement+diversity"])
def test_suggest_prints_k_cases_with_reasons_and_the_adapt_line(pretrained, tmp_path, strategy):
    out = tmp_path / "s.json"
    result = run(pretrained, "--k", "2", "--candidates", "all", "--strategy", strategy, "--out", str(out))
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["strategy"] == strategy and saved["k"] == 2 and len(saved["cases"]) == 2 and saved["n_candidates"] == 6
    assert [r["case"] for r in saved["ranking"][:2]] == saved["cases"] and len(saved["ranking"]) == 6
    assert "newdoc" not in saved["experts"] and set(saved["experts"]) == {"small", "medium", "large", "scribbler"}
    lines = result.output.splitlines()
    for rank, case in enumerate(saved["cases"], 1):
        assert any(line.strip().startswith(f"{rank}. {case}") and saved["ranking"][rank - 1]["reason"] in line for line in lines)
    adapt = shlex.split(lines[-1])
    assert adapt[:2] == ["expertseg", "adapt"] and adapt[adapt.index("--cases") + 1] == ",".join(saved["cases"])
    assert lines[-1].strip() == saved["adapt_command"]
    again = run(pretrained, "--k", "2", "--candidates", "all", "--strategy", strategy)
    assert again.exit_code == 0 and again.output.splitlines()[-1] == lines[-1]  # the same seed, the same cases


def test_the_suggested_cases_flow_into_adapt(pretrained, tmp_path):
    from pipelines.adapt import adapt

    data, pre = pretrained
    out = tmp_path / "s.json"
    assert run(pretrained, "--k", "2", "--candidates", "all", "--strategy", "disagreement", "--out", str(out)).exit_code == 0
    cases = json.loads(out.read_text())["cases"]
    summary = adapt(model=str(pre), data=str(data), expert="newdoc", out=str(tmp_path / "a"), cases=cases, overrides=("adapt.steps=2", "adapt.eval_every=1", "adapt.batch_size=1"), tracking="local", progress=False)
    assert summary["cases"] == cases


def test_only_the_doctors_unlabelled_cases_are_candidates_by_default(pretrained, tmp_path):
    import shutil

    data, pre = pretrained
    mine = tmp_path / "data"
    shutil.copytree(data, mine)
    for case in ("case00", "case01", "case02", "case03"):
        (mine / "labelsTr" / "newdoc" / f"{case}.nii.gz").unlink()  # the doctor has labelled case04 and case05
    result = CliRunner().invoke(cli, ["suggest", "--model", str(pre), "--data", str(mine), "--expert", "newdoc", "--k", "4", "--strategy", "diversity", "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "s.json").read_text())
    assert sorted(saved["cases"]) == ["case00", "case01", "case02", "case03"] and saved["labelled"] == ["case04", "case05"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--k", "1"), "--k 1 is more than the 0 candidate case(s) (newdoc's unlabelled training cases); lower --k or pass --candidates all"),
        (("--k", "7", "--candidates", "all"), "--k 7 is more than the 6 candidate case(s) (every training case); lower --k"),
        (("--k", "0", "--candidates", "all"), "--k must be a whole number of cases >= 1"),
        (("--k", "1", "--candidates", "all", "--strategy", "entropy"), "unknown case-selection strategy 'entropy'"),
        (("--k", "1", "--candidates", "all", "--strategy", "diversity", "--param", "start=last"), "'start' must be one of 'medoid', 'random'"),
        (("--k", "1", "--candidates", "all", "--param", "weight"), "write KEY=VALUE"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(pretrained, args, message):
    result = run(pretrained, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_help_shows_an_example():
    result = CliRunner().invoke(cli, ["suggest", "--help"])
    assert result.exit_code == 0 and "expertseg suggest --model runs/pretrain" in result.output
