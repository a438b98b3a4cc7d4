"""The capacity ladder and ``auto``: the choice of rung and step count by leaving cases out."""

import numpy as np
import pytest
import torch

from experts.adaptation import Adapter, LabelledCase, create_trainable
from experts.adaptation.crossval import CrossValidation, cross_validate, pick
from experts.adaptation.trainable import PenalisedLoss
from experts.bundle import load_bundle
from experts.data.manifest import scan_dataset
from experts.data.nifti import load_volume, save_volume
from experts.errors import ConfigError

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.steps=8", "train.val_every=100", "predict.sw_batch_size=1")


def curves(**per_rung):
    """A training function that returns fixed score histories per (rung, left-out case)."""
    calls = []

    def train(rung, held):
        calls.append((rung, held))
        return per_rung[rung][held]

    return train, calls


def test_the_best_mean_over_folds_wins_and_ties_go_to_the_simpler_rung_and_fewer_steps():
    train, calls = curves(
        rows={"c": [(0, 0.5), (2, 0.7), (4, 0.7)], "b": [(0, 0.5), (2, 0.6), (4, 0.6)]},
        big={"c": [(0, 0.5), (2, 0.6), (4, 0.8)], "b": [(0, 0.5), (2, 0.5), (4, 0.5)]},
    )
    cv = cross_validate(train, cases=["a", "b", "c"], rungs=["rows", "big"], folds=2, keep=2)
    assert cv.held_out == ["c", "b"] and calls == [("rows", "c"), ("big", "c"), ("rows", "b"), ("big", "b")]
    assert (cv.rung, cv.step) == ("rows", 2) and cv.score == pytest.approx(0.65) and cv.initial == pytest.approx(0.5)
    assert cv.mean_curves()["big"][4] == pytest.approx(0.65)  # a tie with rows at 2 steps: the simpler, shorter one stays


def test_only_the_best_rungs_of_the_first_fold_go_on():
    train, calls = curves(
        rows={"c": [(0, 0.5), (2, 0.6)], "b": [(0, 0.5), (2, 0.6)]},
        mid={"c": [(0, 0.5), (2, 0.9)], "b": [(0, 0.5), (2, 0.7)]},
        big={"c": [(0, 0.5), (2, 0.55)], "b": [(0, 0.5), (2, 0.99)]},
    )
    cv = cross_validate(train, cases=["a", "b", "c"], rungs=["rows", "mid", "big"], folds=2, keep=2)
    assert cv.kept == ["rows", "mid"] and ("big", "b") not in calls
    assert (cv.rung, cv.step) == ("mid", 2)
    assert cv.summary()["pruned_after_first_fold"] == {"big": 0.55}


def test_the_initial_row_is_kept_when_no_training_beats_it():
    train, _ = curves(rows={"b": [(0, 0.8), (2, 0.7), (4, 0.6)], "a": [(0, 0.8), (2, 0.8), (4, 0.7)]})
    cv = cross_validate(train, cases=["a", "b"], rungs=["rows"], folds=5, keep=1)
    assert cv.held_out == ["b", "a"] and (cv.rung, cv.step) == (None, 0) and cv.summary()["rung"] == "initial"
    assert pick(CrossValidation(held_out=["x"], scores={"rows": [{2: 0.1}]}, kept=["rows"])).step == 2  # no step-0 score: training wins


def test_auto_refuses_unknown_rungs_and_itself():
    with pytest.raises(ConfigError, match="unknown rung"):
        create_trainable({"name": "auto", "params": {"rungs": ["rows", "everything"]}})
    with pytest.raises(ConfigError, match="unknown rung"):
        create_trainable({"name": "auto", "params": {"rungs": ["auto"]}})
    with pytest.raises(ConfigError, match="l2sp must be >= 0"):
        create_trainable({"name": "decoder", "params": {"l2sp": -1.0}})


def test_l2sp_pulls_retrained_weights_toward_their_pretrained_values():
    w = torch.nn.Parameter(torch.ones(3))
    penalty = create_trainable({"name": "decoder", "params": {"l2sp": 0.5}}).penalty([w])
    assert penalty().item() == 0.0
    with torch.no_grad():
        w.add_(torch.tensor([1.0, 0.0, -2.0]))
    assert penalty().item() == pytest.approx(0.5 * (1 + 4))
    loss = PenalisedLoss(lambda o, b, step=0: {"loss": torch.tensor(1.0)}, penalty)
    parts = loss(None, None)
    assert parts["loss"].item() == pytest.approx(3.5) and parts["penalty"].item() == pytest.approx(2.5)
    assert create_trainable({"name": "all", "params": {"l2sp": 0.0}}).penalty([w]) is None


@pytest.fixture(scope="module")
def base(toy_dataset_master, tmp_path_factory):
    from pipelines.pretrain import pretrain

    out = tmp_path_factory.mktemp("capacity") / "pre"
    pretrain(data=str(toy_dataset_master), out=str(out), overrides=TINY, tracking="local", progress=False)
    return load_bundle(out / "model"), scan_dataset(toy_dataset_master)


def labelled(manifest, expert, cases):
    return [LabelledCase(case=c, images=tuple(manifest.cases[c].images), label=manifest.label(c, expert).path, kind=manifest.label(c, expert).kind) for c in cases]


def test_auto_is_deterministic_for_a_seed(base):
    bundle, manifest = base
    cases = labelled(manifest, "newdoc", ["case00", "case01", "case02"])
    runs = [Adapter(bundle, "newdoc", steps=4, eval_every=2, batch_size=1, seed=5).fit(cases) for _ in range(2)]
    a, b = runs
    assert a.cv_.summary() == b.cv_.summary() and (a.rung_, a.steps_) == (b.rung_, b.steps_)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(a.network_.eval()(x, torch.tensor([a.row_])).logits, b.network_.eval()(x, torch.tensor([b.row_])).logits)


def test_auto_keeps_the_initial_row_when_the_labels_contradict_the_images(base, tmp_path):
    """The left-out cases are labelled exactly as the initial row predicts them (a perfect score
    before training); the case they are trained with is labelled with the classes swapped. No
    training can score higher on the left-out cases, so ``auto`` must keep the initial row."""
    from experts.data.datasets import VolumeCache
    from experts.inference import predict_experts

    bundle, manifest = base
    names = ["case00", "case01", "case02"]
    cache = VolumeCache(bundle.plan, images={c: list(manifest.cases[c].images) for c in names}, labels={}, pad=False)
    row = bundle.experts.index("small")
    cases = []
    for i, case in enumerate(names):
        probs = predict_experts(bundle.network, cache.image(case), [row], patch_size=bundle.plan.patch_size, device="cpu")
        pred = probs[0].argmax(0).numpy().astype(np.uint8)
        if i == 0:
            pred = np.where(pred == 0, 1, 0).astype(np.uint8)  # contradicts its image
        ref = load_volume(manifest.cases[case].images[0])
        assert pred.shape == ref.array.shape  # the toy plan keeps the grid: the label lines up voxel for voxel
        path = save_volume(tmp_path / f"{case}.nii.gz", pred, ref.affine)
        cases.append(LabelledCase(case=case, images=tuple(manifest.cases[case].images), label=path))
    adapter = Adapter(bundle, "newdoc", init="expert:small", steps=6, eval_every=2, batch_size=1, lr=0.5).fit(cases)
    assert adapter.cv_.initial == pytest.approx(1.0)
    assert adapter.rung_ == "initial" and adapter.steps_ == 0 and not adapter.forks_
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():  # the new expert predicts exactly as the expert it started from
        assert torch.equal(adapter.network_.eval()(x, torch.tensor([adapter.row_])).logits, bundle.network.eval()(x, torch.tensor([row])).logits)
