"""End-to-end pretraining on the toy dataset: tracking, expert selection, crash-safe resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from experts.bundle import load_bundle
from experts.errors import ConfigError
from pipelines.pretrain import pretrain

TINY = (
    "network.channels=[4,8]",
    "data.patch_size=[16,16,16]",
    "data.n_folds=3",
    "train.batch_size=2",
    "train.log_every=2",
    "train.val_every=4",
    "train.checkpoint_every=4",
    "predict.sw_batch_size=1",
)


def run(data, out, *extra, tracking="mlflow", **kw):
    return pretrain(data=str(data), out=str(out), overrides=TINY + extra, tracking=tracking, progress=False, **kw)


def test_pretraining_is_tracked_in_mlflow(toy_dataset, tmp_path, mlflow_uri):
    summary = run(toy_dataset, tmp_path / "run", "train.steps=8")
    client = MlflowClient(tracking_uri=mlflow_uri)
    r = client.get_run(summary["mlflow_run_id"])
    assert r.info.status == "FINISHED"
    assert r.data.params["train.steps"] == "8" and r.data.params["plan.patch_size"] == "[16, 16, 16]"
    assert r.data.tags["experts"] == "small,medium,large,scribbler"
    loss = client.get_metric_history(r.info.run_id, "train/loss")
    assert [m.step for m in loss] == [2, 4, 6, 8]
    for name in ("train/partial_dice_ce", "train/partial_dice_ce/ce", "train/partial_dice_ce/dice", "train/partial_dice_ce/annotated_fraction", "val/dice/small", "test/dice/large"):
        assert client.get_metric_history(r.info.run_id, name), name
    assert [m.step for m in client.get_metric_history(r.info.run_id, "val/dice/medium")] == [4, 8]
    arts = {a.path for a in client.list_artifacts(r.info.run_id)} | {a.path for a in client.list_artifacts(r.info.run_id, "model")}
    assert {"plan.json", "config.yaml", "model/weights.pt", "model/model.json", "tracking.jsonl"} <= arts
    inputs = r.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "ToySpheres" and len(inputs[0].dataset.digest) == 16
    mv = client.get_model_version_by_alias("expertseg-ToySpheres", "pretrained")
    assert mv.run_id == r.info.run_id and mv.tags["stage"] == "pretrain" and mv.tags["label_kinds"] == "dense,partial"
    # The registered source is our bundle, loaded by our code.
    import mlflow

    local = mlflow.artifacts.download_artifacts("models:/expertseg-ToySpheres@pretrained", dst_path=str(tmp_path / "dl"))
    bundle = load_bundle(local)
    assert bundle.experts == ["small", "medium", "large", "scribbler"]


def test_new_expert_stays_out_unless_asked(toy_dataset, tmp_path):
    summary = run(toy_dataset, tmp_path / "a", "train.steps=2", tracking="local")
    assert "newdoc" not in summary["experts"]
    summary = run(toy_dataset, tmp_path / "b", "train.steps=2", tracking="local", include=["small", "newdoc"])
    assert summary["experts"] == ["small", "newdoc"]
    summary = run(toy_dataset, tmp_path / "c", "train.steps=2", tracking="local", exclude=["large"])
    assert summary["experts"] == ["small", "medium", "scribbler"]


def test_pooled_baseline_has_one_row(toy_dataset, tmp_path):
    summary = run(toy_dataset, tmp_path / "p", "train.steps=2", "sampling.pool_experts=true", tracking="local")
    bundle = load_bundle(summary["model"])
    assert bundle.experts == ["pooled"] and bundle.network.num_experts == 1
    assert set(summary["test_dice"]) == {"small", "medium", "large", "scribbler"}


def test_existing_run_folder_is_not_overwritten(toy_dataset, tmp_path):
    run(toy_dataset, tmp_path / "r", "train.steps=2", tracking="local")
    with pytest.raises(ConfigError, match="--resume"):
        run(toy_dataset, tmp_path / "r", "train.steps=2", tracking="local")


def _cli(*args):
    return [sys.executable, "-m", "pipelines.cli", *args]


TOY_TERM = Path(__file__).parents[1] / "plugins" / "toy_feature_term.py"


def test_kill_and_resume_ends_with_the_same_weights_and_loss_term_state(toy_dataset, tmp_path):
    """A plugin term with running state (one file + a config entry) trains, is killed, resumes."""
    common = ["--data", str(toy_dataset), "--tracking", "local"]
    terms = "loss.terms=[{name: partial_dice_ce}, {name: toy_feature_energy, weight: 0.01, params: {momentum: 0.8}, start_step: 2, ramp_steps: 4}]"
    sets = [x for s in TINY + ("train.steps=60", "train.deterministic=true", "train.threads=1", "train.val_every=1000", terms) for x in ("--set", s)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EXPERTSEG_PLUGINS": str(TOY_TERM)}
    subprocess.run(_cli("pretrain", *common, "--out", str(tmp_path / "ref"), *sets), check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli("pretrain", *common, "--out", str(out), *sets), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step_0000004.pt.sha256").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model").exists(), "killed too late: the run had finished"
    done = subprocess.run(_cli("pretrain", *common, "--out", str(out), "--resume", *sets), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    started = int(done.stdout.split("resuming from step ")[1].split()[0])
    assert 0 < started < 60
    a = torch.load(tmp_path / "ref" / "model" / "weights.pt", weights_only=True)
    b = torch.load(out / "model" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "summary.json").read_text())["experts"] == ["small", "medium", "large", "scribbler"]
    # The term's running state went through the checkpoint: it counts every step from its start
    # step across the kill (a term restarted from scratch would count only the steps after it).
    ref_state = torch.load(tmp_path / "ref" / "checkpoints" / "step_0000060.pt", weights_only=True)["loss"]
    got_state = torch.load(out / "checkpoints" / "step_0000060.pt", weights_only=True)["loss"]
    assert int(got_state["terms.toy_feature_energy.updates"]) == 60 - 2
    assert torch.equal(ref_state["terms.toy_feature_energy.running"], got_state["terms.toy_feature_energy.running"])
    logged = [json.loads(line) for line in (out / "tracking.jsonl").read_text().splitlines()]
    parts = {k for e in logged if e.get("event") == "metrics" for k in e["metrics"]}
    assert {"train/toy_feature_energy", "train/toy_feature_energy/energy", "train/partial_dice_ce/ce"} <= parts


def test_bfloat16_autocast_on_the_cpu_trains_when_asked(toy_dataset, tmp_path):
    summary = run(toy_dataset, tmp_path / "bf16", "train.steps=2", "train.cpu_bf16=true", tracking="local")
    assert summary["test_dice"] and all(0 <= v["mean"] <= 1 for v in summary["test_dice"].values())
