"""Adaptation to a new doctor: init strategies, trainable sets, adapters, untouched pretrained experts."""

import json
import shutil

import pytest
import torch

from experts.adaptation import apply_adapter
from experts.bundle import load_bundle
from experts.errors import ConfigError, DatasetError, ModelFileError
from experts.adaptation import choose_cases
from pipelines.adapt import adapt
from pipelines.runtime.models import load_model
from pipelines.pretrain import pretrain

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.steps=6", "train.val_every=100", "predict.sw_batch_size=1")
ADAPT = ("adapt.steps=4", "adapt.eval_every=2", "adapt.batch_size=1")
STACKABLE = ("adapt.trainable.params.rungs=[rows,rows+lowrank]",)  # auto among the rungs that leave shared weights alone


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from toydata import make_toy_dataset

    root = tmp_path_factory.mktemp("adapt")
    data = make_toy_dataset(root / "data")
    pretrain(data=str(data), out=str(root / "pre"), overrides=TINY, tracking="local", progress=False)
    return data, root / "pre"


def run_adapt(pretrained, out, *extra, **kw):
    data, pre = pretrained
    kw.setdefault("shots", 2)
    return adapt(model=str(pre), data=str(data), expert="newdoc", out=str(out), overrides=ADAPT + extra, tracking="local", progress=False, **kw)


def probe(bundle, rows):
    torch.manual_seed(0)
    x = torch.randn(len(rows), 1, 16, 16, 16)
    with torch.no_grad():
        return bundle.network.eval()(x, torch.tensor(rows)).logits


@pytest.mark.parametrize("init", ["mean", "nearest", "expert:large"])
def test_each_init_strategy_adapts(pretrained, tmp_path, init):
    name, _, of = init.partition(":")
    summary = run_adapt(pretrained, tmp_path / "a", f"adapt.init.name={name}", *([f"adapt.init.params.expert={of}"] if of else []))
    expected = {"mean": "mean of rows", "expert:large": "large"}.get(init)
    meta = json.loads((tmp_path / "a" / "adapter" / "adapter.json").read_text())
    if expected:
        assert summary["init_source"] == expected and meta["init_scores"] is None
    else:  # every pretrained expert was scored on the doctor's cases; the choice itself is tested above
        assert set(meta["init_scores"]) == {"small", "medium", "large", "scribbler"}
        assert summary["init_source"] in meta["init_scores"]
    assert summary["test_dice"] is not None and summary["test_dice_before"] is not None


@pytest.mark.parametrize("trainable", ["rows", "rows+head", "rows+lowrank", "decoder", "all"])
def test_each_trainable_set(pretrained, tmp_path, trainable):
    _, pre = pretrained
    run_adapt(pretrained, tmp_path / "a", f"adapt.trainable.name={trainable}")
    base = load_bundle(pre / "model")
    adapted = load_model(str(tmp_path / "a" / "adapter"))
    assert adapted.experts == base.experts + ["newdoc"]
    same = torch.allclose(probe(base, [0, 1, 2, 3]), probe(adapted, [0, 1, 2, 3]))
    assert same == (trainable in ("rows", "rows+head", "rows+lowrank"))  # shared weights move only for forks
    meta = json.loads((tmp_path / "a" / "adapter" / "adapter.json").read_text())
    payload = torch.load(tmp_path / "a" / "adapter" / "adapter.pt", weights_only=True)
    assert meta["forks"] == bool(payload["shared"]) == (trainable in ("decoder", "all"))
    assert bool(payload["head"]) == (trainable == "rows+head")
    assert bool(payload.get("low_rank")) == (trainable == "rows+lowrank")
    rows_only = sum(t.numel() for r in payload["rows"].values() for t in r.values())
    assert rows_only == 2 * (4 + 4 + 8 + 8 + 4 + 4)  # gamma + beta of one row in each of the 6 CIN layers


def test_pretrained_experts_are_unchanged_and_adapter_round_trips(pretrained, tmp_path):
    _, pre = pretrained
    summary = run_adapt(pretrained, tmp_path / "a", *STACKABLE)
    assert summary["rung"] in ("initial", "rows", "rows+lowrank") and summary["cv"]["held_out"] == summary["cases"][::-1]
    base = load_bundle(pre / "model")
    full = load_bundle(tmp_path / "a" / "model")
    from_adapter = apply_adapter(base, tmp_path / "a" / "adapter")
    assert torch.equal(probe(base, [0, 1, 2, 3]), probe(full, [0, 1, 2, 3]))
    assert torch.equal(probe(full, [4, 4]), probe(from_adapter, [4, 4]))
    assert torch.equal(probe(load_bundle(pre / "model"), [0, 1, 2, 3]), probe(base, [0, 1, 2, 3]))


def test_adapter_for_another_pretrained_model_is_refused(pretrained, tmp_path):
    data, pre = pretrained
    run_adapt(pretrained, tmp_path / "a")
    other = pretrain(data=str(data), out=str(tmp_path / "other"), overrides=TINY + ("seed=1",), tracking="local", progress=False)
    with pytest.raises(ModelFileError, match="was trained on pretrained model"):
        apply_adapter(load_bundle(other["model"]), tmp_path / "a" / "adapter")


def test_stacked_adapters_each_add_a_row(pretrained, tmp_path):
    data, pre = pretrained
    shutil.copytree(data, tmp_path / "data")
    spec = json.loads((tmp_path / "data" / "dataset.json").read_text())
    spec["experts"]["newdoc2"] = {"role": "new"}
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(spec))
    shutil.copytree(tmp_path / "data" / "labelsTr" / "newdoc", tmp_path / "data" / "labelsTr" / "newdoc2")
    shutil.copytree(tmp_path / "data" / "labelsTs" / "newdoc", tmp_path / "data" / "labelsTs" / "newdoc2")
    adapt(model=str(pre), data=str(tmp_path / "data"), expert="newdoc", out=str(tmp_path / "a1"), shots=2, overrides=ADAPT + ("adapt.trainable.name=rows+lowrank",), tracking="local", progress=False)
    adapt(model=str(pre), data=str(tmp_path / "data"), expert="newdoc2", out=str(tmp_path / "a2"), shots=2, overrides=ADAPT + ("adapt.init.name=mean",) + STACKABLE, tracking="local", progress=False)
    both = load_model(str(tmp_path / "a1" / "adapter"), adapters=[str(tmp_path / "a2" / "adapter")])
    assert both.experts[-2:] == ["newdoc", "newdoc2"]
    single = load_model(str(tmp_path / "a2" / "adapter"))
    assert torch.allclose(probe(both, [5]), probe(single, [4]), atol=1e-6)
    lowrank = load_model(str(tmp_path / "a1" / "adapter"))  # low-rank residuals travel in the adapter and in the full model
    assert torch.load(tmp_path / "a1" / "adapter" / "adapter.pt", weights_only=True)["low_rank"]
    assert torch.allclose(probe(both, [4]), probe(lowrank, [4]), atol=1e-6)
    assert torch.equal(probe(load_bundle(tmp_path / "a1" / "model"), [4]), probe(lowrank, [4]))
    with pytest.raises(ModelFileError, match="already in the model"):
        apply_adapter(both, tmp_path / "a1" / "adapter")


def test_case_choice_is_validated_and_seeded():
    available = ["c1", "c2", "c3", "c4"]
    assert choose_cases(available, cases=None, shots=2, seed=0) == choose_cases(available, cases=None, shots=2, seed=0)
    assert choose_cases(available, cases=["c3", "c1"], shots=None, seed=0) == ["c3", "c1"]
    with pytest.raises(ConfigError, match="exactly one"):
        choose_cases(available, cases=["c1"], shots=1, seed=0)
    with pytest.raises(ConfigError, match="between 1 and 4"):
        choose_cases(available, cases=None, shots=9, seed=0)
    with pytest.raises(DatasetError, match="no training label for case"):
        choose_cases(available, cases=["zz"], shots=None, seed=0)


def test_holdout_picks_the_step_count_with_three_cases(pretrained, tmp_path):
    summary = run_adapt(pretrained, tmp_path / "a", "adapt.checkpoint_every=1", "adapt.trainable.name=rows", shots=3)
    meta = json.loads((tmp_path / "a" / "adapter" / "adapter.json").read_text())
    assert summary["holdout"] == summary["cases"][-1]
    history = meta["holdout_history"]
    assert [s for s, _ in history] == [2, 4]
    best = max(history, key=lambda h: h[1])[0]  # the first step reaching the highest held-back Dice
    assert summary["steps"] == best
    # The final training on all three cases ran exactly that many steps, not the full budget.
    final = sorted(p.name for p in (tmp_path / "a" / "checkpoints" / "final").glob("step_*.pt"))
    assert final[-1] == f"step_{best:07d}.pt"


def test_nearest_init_takes_the_rows_of_the_best_scoring_expert():
    from experts.adaptation import initial_rows
    from experts.networks import create_network

    torch.manual_seed(0)
    net = create_network("cin_unet", in_channels=1, num_classes=3, num_experts=3, channels=(4, 8))
    with torch.no_grad():
        for layer in net.cin_layers().values():
            layer.gamma[0].uniform_(0.5, 1.5)
    rows, source = initial_rows(net, "nearest", experts=["a", "b", "c"], scores={"a": 0.4, "b": 0.9, "c": 0.7})
    assert source == "b"
    assert all(torch.equal(rows[n][0], g) for n, (g, _) in net.expert_rows(1).items())
    mean, _ = initial_rows(net, "mean", experts=["a", "b", "c"])
    assert all(torch.allclose(mean[n][0], t[0].mean(0, keepdim=True)) for n, t in net.row_tables().items())


def test_expert_already_in_model_is_refused(pretrained, tmp_path):
    data, pre = pretrained
    with pytest.raises(ConfigError, match="already in the model"):
        adapt(model=str(pre), data=str(data), expert="small", out=str(tmp_path / "x"), shots=1, overrides=ADAPT, tracking="local", progress=False)


def test_scribble_adaptation_uses_simulated_partial_labels(pretrained, tmp_path):
    import nibabel as nib
    import numpy as np

    summary = run_adapt(pretrained, tmp_path / "s", scribbles=True)
    assert summary["label_kind"] == "scribbles" and summary["test_dice"] is not None
    files = sorted((tmp_path / "s" / "scribbles").glob("*.nii.gz"))
    assert [f.name.split(".")[0] for f in files] == sorted(summary["cases"])
    for f in files:
        lab = np.asanyarray(nib.load(str(f)).dataobj)
        assert 0 < (lab != 3).mean() < 0.5 and set(np.unique(lab)) >= {0, 3}


def test_partial_labels_in_the_dataset_train_as_they_are(pretrained, tmp_path):
    import nibabel as nib
    import numpy as np

    from experts.data.nifti import save_volume

    data, pre = pretrained
    shutil.copytree(data, tmp_path / "data")
    for f in (tmp_path / "data" / "labelsTr" / "newdoc").glob("*.nii.gz"):
        img = nib.load(str(f))
        lab = np.asanyarray(img.dataobj).copy()
        lab[:, :, ::2] = 3
        save_volume(f, lab, img.affine)
    summary = adapt(model=str(pre), data=str(tmp_path / "data"), expert="newdoc", out=str(tmp_path / "a"), shots=2, overrides=ADAPT, tracking="local", progress=False)
    assert summary["label_kind"] == "partial"


def test_adapting_from_scribbles_of_another_style_or_habit(pretrained, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import cli

    data, pre = pretrained
    base = ["adapt", "--model", str(pre), "--data", str(data), "--expert", "newdoc", "--shots", "2", "--tracking", "local", *[x for s in ADAPT for x in ("--set", s)]]
    for style, out in (("clicks", "c"), ("habit:contour-tracer", "h")):
        result = CliRunner().invoke(cli, [*base, "--scribble-style", style, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / out / "summary.json").read_text())
        config = (tmp_path / out / "config.yaml").read_text()
        assert summary["label_kind"] == "scribbles" and style.split(":")[0] in config
    bad = CliRunner().invoke(cli, [*base, "--scribble-style", "squiggles", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown scribble style 'squiggles'" in bad.output


def test_auto_s_choice_reaches_mlflow_as_params_and_metrics(pretrained, tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    data, pre = pretrained
    summary = adapt(model=str(pre), data=str(data), expert="newdoc", out=str(tmp_path / "a"), shots=2, overrides=ADAPT, tracking="mlflow", progress=False)
    log = (tmp_path / "a" / "tracking.jsonl").read_text()
    assert "tracker_error" not in log  # every metric name is one MLflow takes ('+' of rung names included)
    run = MlflowClient(mlflow_uri).get_run(summary["mlflow_run_id"])
    assert run.data.params["adapt.chosen_rung"] == summary["rung"] and "cv/initial" in run.data.metrics
    assert {"cv/rows", "cv/rows_lowrank", "cv/decoder"} <= set(run.data.metrics)
