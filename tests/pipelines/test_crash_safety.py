"""Crash safety: kill -9 and --resume, damaged checkpoints, non-finite losses, tracker faults."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from click.testing import CliRunner

from experts.bundle import load_bundle
from experts.errors import ModelFileError, TrackingError
from experts.training.checkpoint import CheckpointDir, load_checked, save_checked
from experts.training.loop import NonFiniteLoss
from pipelines.cli import cli
from pipelines.pretrain import pretrain

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.val_every=100", "predict.sw_batch_size=1")


def cmd(*args):
    return [sys.executable, "-m", "pipelines.cli", *args]


def sets(*items):
    return [x for s in items for x in ("--set", s)]


def kill_after(path_glob, args, out, timeout=180):
    """Start ``args``, SIGKILL it once a file matching ``path_glob`` under ``out`` exists."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + timeout
    while not list(out.glob(path_glob)):
        assert proc.poll() is None and time.time() < deadline, "ended before the first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    import sys as _sys
    from pathlib import Path

    _sys.path.insert(0, str(Path(__file__).parents[1]))
    from toydata import make_toy_dataset

    root = tmp_path_factory.mktemp("crash")
    data = make_toy_dataset(root / "data")
    pretrain(data=str(data), out=str(root / "pre"), overrides=TINY + ("train.steps=4",), tracking="local", progress=False)
    return data, root / "pre"


def test_kill_and_resume_adaptation_ends_with_the_same_weights(pretrained, tmp_path):
    data, pre = pretrained
    base = ["adapt", "--model", str(pre), "--data", str(data), "--expert", "newdoc", "--shots", "3", "--tracking", "local"]
    opts = sets("adapt.steps=40", "adapt.eval_every=10", "adapt.checkpoint_every=2", "adapt.batch_size=1", "train.deterministic=true", "train.threads=1")
    ref = subprocess.run(cmd(*base, "--out", str(tmp_path / "ref"), *opts), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    # killed inside the cross-validation of trainable 'auto': one fold done, the next rung halfway
    kill_after("checkpoints/cv-*-rows+lowrank/step_0000004.pt.sha256", cmd(*base, "--out", str(out), *opts), out)
    assert not (out / "summary.json").exists() and (out / "cv.json").exists()
    done = subprocess.run(cmd(*base, "--out", str(out), "--resume", *opts), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "adapter" / "adapter.pt", weights_only=True)
    b = torch.load(out / "adapter" / "adapter.pt", weights_only=True)
    assert all(torch.equal(a["rows"][k]["gamma"], b["rows"][k]["gamma"]) and torch.equal(a["rows"][k]["beta"], b["rows"][k]["beta"]) for k in a["rows"])
    assert a.keys() == b.keys() and all(torch.equal(a["shared"][k], b["shared"][k]) for k in a["shared"])
    assert all(torch.equal(a["low_rank"][s][k], b["low_rank"][s][k]) for s in a.get("low_rank", {}) for k in a["low_rank"][s])
    ref_summary, resumed = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "ref", out))
    assert (resumed["rung"], resumed["steps"], resumed["cv"]) == (ref_summary["rung"], ref_summary["steps"], ref_summary["cv"])


def test_damaged_checkpoint_is_reported_and_skipped(tmp_path):
    ckpt = CheckpointDir(tmp_path)
    ckpt.save(1, {"w": torch.ones(3)})
    path = ckpt.save(2, {"w": torch.full((3,), 2.0)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    state, problems = ckpt.latest_valid()
    assert torch.equal(state["w"], torch.ones(3))
    assert len(problems) == 1 and "checksum mismatch" in problems[0] and "step_0000002.pt" in problems[0]
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_checked(path)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    save_checked(path, {"x": Evil()})
    with pytest.raises(ModelFileError, match="cannot be loaded as plain tensors"):
        load_checked(path)


def _resum(folder):
    from experts.bundle import BUNDLE_FILES
    from experts.training.checkpoint import file_digest

    (folder / "bundle.sha256").write_text("".join(f"{file_digest(folder / n)}  {n}\n" for n in BUNDLE_FILES))


def test_model_from_another_architecture_or_expert_count_is_refused(pretrained, tmp_path):
    import shutil

    _, pre = pretrained
    for name, edit, message in [
        ("arch", lambda m: m.update(arch={**m["arch"], "name": "cin_resunet"}), "weights do not fit a cin_resunet"),
        ("experts", lambda m: m.update(experts=m["experts"] + ["extra"]), "with 5 experts"),
        ("unknown", lambda m: m.update(arch={**m["arch"], "name": "vit"}), "unknown architecture 'vit'"),
    ]:
        folder = tmp_path / name
        shutil.copytree(pre / "model", folder)
        meta = json.loads((folder / "model.json").read_text())
        edit(meta)
        (folder / "model.json").write_text(json.dumps(meta))
        with pytest.raises(ModelFileError, match="does not match bundle.sha256"):
            load_bundle(folder)  # an edited model.json no longer matches the bundle's checksums
        _resum(folder)  # as if the edit had been written with its checksums: the content checks refuse it
        with pytest.raises(ModelFileError, match=message):
            load_bundle(folder)
        result = CliRunner().invoke(cli, ["predict", "--model", str(folder), "--images", str(pretrained[0] / "imagesTs"), "--out", str(tmp_path / f"p-{name}")])
        assert result.exit_code == 2 and "Traceback" not in result.output and not (tmp_path / f"p-{name}").exists()


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(pretrained, tmp_path):
    data, _ = pretrained
    with pytest.raises(NonFiniteLoss, match="the run stopped and its last good checkpoint is kept"):
        pretrain(data=str(data), out=str(tmp_path / "r"), overrides=TINY + ("train.steps=50", "train.optimizer=sgd", "train.lr=1e12", "train.grad_clip=0", "train.checkpoint_every=1"), tracking="local", progress=False)
    state, problems = CheckpointDir(tmp_path / "r" / "checkpoints").latest_valid()
    assert state is not None and not problems
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    log = [json.loads(l) for l in (tmp_path / "r" / "tracking.jsonl").read_text().splitlines()]
    assert log[-1] == {**log[-1], "event": "end", "status": "FAILED"}


def test_unreachable_tracking_server_fails_fast_with_a_message(pretrained, tmp_path, monkeypatch):
    import socket

    data, _ = pretrained
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    t0 = time.time()
    with pytest.raises(TrackingError, match="or pass --tracking local"):
        pretrain(data=str(data), out=str(tmp_path / "r"), overrides=TINY + ("train.steps=2",), progress=False)
    assert time.time() - t0 < 60  # seconds, not MLflow's minutes of retries
    summary = pretrain(data=str(data), out=str(tmp_path / "r2"), overrides=TINY + ("train.steps=2",), tracking="local", progress=False)
    assert summary["mlflow_run_id"] is None and (tmp_path / "r2" / "model" / "weights.pt").exists()


def test_tracker_error_mid_run_does_not_stop_training(pretrained, tmp_path, mlflow_uri, monkeypatch):
    from mlflow import MlflowClient

    data, _ = pretrained
    real = MlflowClient.log_batch
    calls = {"n": 0}

    def flaky(self, run_id, metrics=(), params=(), tags=(), **kw):
        if metrics:
            calls["n"] += 1
            raise ConnectionError("tracking server went away")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    monkeypatch.setattr(time, "sleep", lambda s: None)  # no back-off waits in the test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = pretrain(data=str(data), out=str(tmp_path / "r"), overrides=TINY + ("train.steps=4", "train.log_every=1"), progress=False)
    assert (tmp_path / "r" / "model" / "weights.pt").exists() and calls["n"] >= 3
    assert any("continuing with the local log" in str(w.message) for w in caught)
    log = [json.loads(l) for l in (tmp_path / "r" / "tracking.jsonl").read_text().splitlines()]
    assert any(e["event"] == "tracker_error" for e in log)
    assert [e["step"] for e in log if e["event"] == "metrics" and "train/loss" in e["metrics"]] == [1, 2, 3, 4]
    assert summary["mlflow_run_id"]
