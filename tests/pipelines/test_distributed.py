"""torchrun + DDP on CPU (gloo): replicas stay in sync and match a single process."""

import json
import os
import subprocess
import sys

import torch

COMMON = (
    "network.channels=[4,8]",
    "data.patch_size=[16,16,16]",
    "data.n_folds=3",
    "train.steps=6",
    "train.val_every=100",
    "train.checkpoint_every=100",
    "train.deterministic=true",
    "train.threads=1",
    "train.grad_clip=0",
    "augment.intensity=false",
    # SGD and the Dice term alone make the two set-ups the same computation: DDP averages per-rank
    # gradients, which equals one batch's gradient when the loss is a mean over samples; Adam would
    # turn float-rounding differences of near-zero gradients into full-size steps.
    "train.optimizer=sgd",
    "train.lr=0.05",
    "loss.terms=[{name: partial_dice_ce, params: {ce_weight: 0}}]",
    "predict.sw_batch_size=1",
)


def cli(*args, launcher=()):
    return [sys.executable, *launcher, "-m", "pipelines.cli", *args]


def sets(*extra):
    return [x for s in COMMON + extra for x in ("--set", s)]


def test_two_process_ddp_matches_one_process(toy_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["pretrain", "--data", str(toy_dataset), "--tracking", "local"]
    single = subprocess.run(cli(*base, "--out", str(tmp_path / "single"), *sets("train.batch_size=2")), env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    ddp = subprocess.run(cli(*base, "--out", str(tmp_path / "ddp"), *sets("train.batch_size=1"), launcher=launcher), env=env, capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    log = [json.loads(l) for l in (tmp_path / "ddp" / "tracking.jsonl").read_text().splitlines()]
    digests = next(e["digests"] for e in log if e["event"] == "replicas")
    assert len(digests) == 2 and digests[0] == digests[1]
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["world_size"] == 2
    a = torch.load(tmp_path / "single" / "model" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "model" / "weights.pt", weights_only=True)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    torch.manual_seed(0)  # the initial weights, as both runs built them (seed 0)
    from experts.networks import create_network

    init = create_network("cin_unet", in_channels=1, num_classes=3, num_experts=4, channels=[4, 8]).state_dict()
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    assert moved > 1e-3 and worst < 1e-5, (moved, worst)
