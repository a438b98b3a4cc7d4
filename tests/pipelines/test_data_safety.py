"""A user's data is never lost, a run resumes only itself, and a refusal writes nothing."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.pretrain import pretrain

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.val_every=100", "predict.sw_batch_size=1", "train.checkpoint_every=2")


def fingerprint(root: Path) -> dict:
    """Every file under ``root`` and the sha256 of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def sets(*items):
    return [x for s in items for x in ("--set", s)]


def refused(args, *watched: Path, cwd: Path | None = None):
    """Run the CLI; assert exit 2, one error line, no traceback, and every watched tree unchanged."""
    before = [fingerprint(w) if w.exists() else None for w in watched]
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        os.chdir(old)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    assert [fingerprint(w) if w.exists() else None for w in watched] == before
    return result.output


@pytest.fixture(scope="module")
def pre(toy_dataset_master, tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "pre"
    pretrain(data=str(toy_dataset_master), out=str(out), overrides=TINY + ("train.steps=2",), tracking="local", progress=False)
    return out


def test_pretraining_into_the_dataset_itself_is_refused(toy_dataset):
    msg = refused(["pretrain", "--data", toy_dataset, "--out", toy_dataset, "--overwrite", "--tracking", "local", *sets(*TINY)], toy_dataset)
    assert "is the dataset" in msg


def test_predicting_into_the_reference_labels_is_refused(toy_dataset, pre):
    msg = refused(["predict", "--model", pre, "--images", toy_dataset / "imagesTs", "--out", toy_dataset / "labelsTs", "--overwrite"], toy_dataset)
    assert "labelsTs/" in msg


def test_a_run_folder_inside_a_label_folder_is_refused_and_not_created(toy_dataset):
    target = toy_dataset / "labelsTr" / "run1"
    refused(["pretrain", "--data", toy_dataset, "--out", target, "--tracking", "local", *sets(*TINY)], toy_dataset)
    assert not target.exists()


def test_demo_data_over_the_current_folder_or_other_files_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    refused(["data", "demo", "--out", ".", "--overwrite", "--train-cases", "2", "--test-cases", "1"], work, cwd=work)
    refused(["data", "demo", "--out", work, "--overwrite", "--train-cases", "2", "--test-cases", "1"], work)


def test_overwrite_removes_only_the_commands_own_outputs_and_the_old_checkpoints(toy_dataset, tmp_path):
    out = tmp_path / "run"
    pretrain(data=str(toy_dataset), out=str(out), overrides=TINY + ("train.steps=6",), tracking="local", progress=False)
    (out / "my_notes.txt").write_text("keep me")
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step_0000004.pt", "step_0000006.pt"]
    pretrain(data=str(toy_dataset), out=str(out), overrides=TINY + ("train.steps=2",), tracking="local", progress=False, overwrite=True)
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step_0000002.pt"]  # the longer old run is gone
    assert json.loads((out / "summary.json").read_text())["experts"]
    assert (out / "data_manifest.json").is_file() and not (out / "dataset.json").exists()


def test_resume_refuses_another_config_and_another_runs_checkpoints(toy_dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        pretrain(data=str(toy_dataset), out=str(out), overrides=TINY + ("train.steps=4",), tracking="local", progress=False)
    common = ["pretrain", "--data", toy_dataset, "--tracking", "local", "--resume"]
    msg = refused([*common, "--out", a, *sets(*TINY, "train.steps=8", "train.lr=0.1")], a)
    assert "another config" in msg
    msg = refused([*common, "--out", a, "--experts", "small,large", *sets(*TINY, "train.steps=4")], a)
    assert "other experts" in msg  # not a size-mismatch traceback
    for f in (b / "checkpoints").iterdir():  # b's folder now holds a's checkpoints
        f.unlink()
    for f in (a / "checkpoints").iterdir():
        shutil.copy(f, b / "checkpoints" / f.name)
    msg = refused([*common, "--out", b, *sets(*TINY, "train.steps=4")], b)
    assert "another run" in msg


def test_a_refused_adaptation_leaves_no_output_folder(toy_dataset, pre, tmp_path):
    out = tmp_path / "adapt"
    refused(["adapt", "--model", pre, "--data", toy_dataset, "--expert", "newdoc", "--shots", "1", "--out", out, "--tracking", "local", "--set", "adapt.init.name=closest"])
    refused(["adapt", "--model", tmp_path / "nope", "--data", toy_dataset, "--expert", "newdoc", "--shots", "1", "--out", out, "--tracking", "local"])
    refused(["adapt", "--model", pre, "--data", toy_dataset, "--expert", "nobody", "--shots", "1", "--out", out, "--tracking", "local"])
    assert not out.exists()


def test_predict_with_a_damaged_input_leaves_the_output_as_it_was(toy_dataset, pre, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(toy_dataset / "imagesTs", images)
    second = sorted(images.glob("*.nii.gz"))[1]
    second.write_bytes(second.read_bytes()[:200])  # truncated
    out = tmp_path / "preds"
    out.mkdir()
    (out / "earlier.txt").write_text("earlier")
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", "--model", str(pre), "--images", str(images), "--out", str(out)], capture_output=True, text=True)
    assert result.returncode != 0
    assert fingerprint(out) == {"earlier.txt": hashlib.sha256(b"earlier").hexdigest()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".preds.partial")]
