"""The scribble regularisers in real runs: every one of them at once is killed and resumed to the
same weights and EM state, and ``expertseg tune`` searches each one's weight."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import torch

from pipelines.runtime.config import load_config
from pipelines.tune import SEARCH_SPACES, TERM_WEIGHT_RANGE

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "predict.sw_batch_size=1")
ALL_TERMS = (
    "loss.terms=[{name: partial_dice_ce}, {name: masked_crf, weight: 0.1, params: {radius: [1, 1, 1]}}, "
    "{name: attentive_similarity, weight: 0.1, start_step: 2}, {name: em_class_ratio, weight: 0.3, start_step: 2, ramp_steps: 4}, "
    "{name: shape_prior, weight: 0.1}]"
)
REGULARISED = TINY + (
    ALL_TERMS,
    "network.attention={level: 0, heads: 2, radius: [1, 1, 1]}",
    "network.features=[decoder.0, attention]",
    "augment.mix=0.5",
    "augment.occlusion=0.3",
)


def _cli(*args):
    return [sys.executable, "-m", "pipelines.cli", *args]


def test_kill_and_resume_with_every_regulariser_restores_the_em_state(toy_dataset, tmp_path):
    common = ["--data", str(toy_dataset), "--tracking", "local"]
    sets = [x for s in REGULARISED + ("train.steps=24", "train.checkpoint_every=4", "train.deterministic=true", "train.threads=1", "train.val_every=1000") for x in ("--set", s)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli("pretrain", *common, "--out", str(tmp_path / "ref"), *sets), check=True, env=env, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli("pretrain", *common, "--out", str(out), *sets), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step_0000008.pt.sha256").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its second checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model").exists(), "killed too late: the run had finished"
    done = subprocess.run(_cli("pretrain", *common, "--out", str(out), "--resume", *sets), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0 < int(done.stdout.split("resuming from step ")[1].split()[0]) < 24
    a = torch.load(tmp_path / "ref" / "model" / "weights.pt", weights_only=True)
    b = torch.load(out / "model" / "weights.pt", weights_only=True)
    assert any(k.startswith("attention.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    ref = torch.load(tmp_path / "ref" / "checkpoints" / "step_0000024.pt", weights_only=True)["loss"]
    got = torch.load(out / "checkpoints" / "step_0000024.pt", weights_only=True)["loss"]
    for key in ("prior", "labelled_counts", "updates"):
        assert torch.equal(ref[f"terms.em_class_ratio.{key}"], got[f"terms.em_class_ratio.{key}"]), key
    assert int(got["terms.em_class_ratio.updates"].sum()) > 0  # the scribbler's row was estimated
    logged = [json.loads(line) for line in (out / "tracking.jsonl").read_text().splitlines()]
    parts = {k for e in logged if e.get("event") == "metrics" for k in e["metrics"]}
    assert {"train/masked_crf/energy", "train/attentive_similarity", "train/em_class_ratio/pi_1", "train/shape_prior/changed_fraction"} <= parts


def test_tune_searches_the_weight_of_every_regulariser_around_its_configured_weight():
    cfg = load_config(None, (ALL_TERMS,))
    trial = optuna.create_study(storage=optuna.storages.InMemoryStorage()).ask()
    terms = {t["name"]: t for t in SEARCH_SPACES["pretrain"](trial, cfg)["loss.terms"]}
    for name, weight in (("masked_crf", 0.1), ("attentive_similarity", 0.1), ("em_class_ratio", 0.3), ("shape_prior", 0.1)):
        searched = trial.params[f"loss.{name}.weight"]
        assert terms[name]["weight"] == searched and TERM_WEIGHT_RANGE[0] * weight <= searched <= TERM_WEIGHT_RANGE[1] * weight
    assert "loss.partial_dice_ce.weight" not in trial.params and terms["em_class_ratio"]["start_step"] == 2
