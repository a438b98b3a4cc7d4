"""expertseg pretrain --interactive, refine and evaluate-interactive on the toy spheres; bad input is one line, exit 2."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from experts.bundle import load_bundle
from experts.data.nifti import load_volume
from pipelines.cli import cli
from pipelines.pretrain import pretrain

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.batch_size=2", "train.log_every=2", "train.val_every=100", "train.checkpoint_every=2", "predict.sw_batch_size=1")


@pytest.fixture(scope="module")
def models(tmp_path_factory, toy_dataset_master):
    """A pretrained toy model and its interactive counterpart (4 steps each, no MLflow)."""
    root = tmp_path_factory.mktemp("models")
    pretrain(data=str(toy_dataset_master), out=str(root / "pre"), overrides=TINY + ("train.steps=4",), tracking="local", progress=False)
    pretrain(data=str(toy_dataset_master), out=str(root / "inter"), overrides=TINY + ("train.steps=4", "interactive.rounds=1"), tracking="local", progress=False, interactive=str(root / "pre"))
    return root


def write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def refine(models, data, tmp_path, prompts, *extra):
    image = str(data / "imagesTs" / "test00_0000.nii.gz")
    args = ["refine", "--model", str(models / "inter"), "--image", image, "--expert", "medium", "--prompts", write(tmp_path / "p.json", prompts), "--out", str(tmp_path / "m.nii.gz"), *extra]
    return CliRunner().invoke(cli, args)


def test_the_interactive_model_is_its_own_model_and_the_pretrained_one_is_unchanged(models):
    pre, inter = load_bundle(models / "pre" / "model"), load_bundle(models / "inter" / "model")
    assert inter.arch["name"] == "promptable" and inter.experts == pre.experts
    assert inter.network.prompt_channels == 7 and not getattr(pre.network, "prompt_channels", 0)
    assert json.loads((models / "inter" / "summary.json").read_text())["model"].endswith("inter/model")


def test_refine_writes_a_mask_with_the_inputs_affine_and_shape(models, toy_dataset_master, tmp_path):
    prompts = {"coordinates": "voxel", "class": "core", "prompts": [{"type": "box", "lower": [6, 6, 6], "upper": [13, 13, 13]}, {"type": "click", "point": [10, 10, 10]}, {"type": "undo"}]}
    result = refine(models, toy_dataset_master, tmp_path, prompts)
    assert result.exit_code == 0, result.output
    image = load_volume(toy_dataset_master / "imagesTs" / "test00_0000.nii.gz")
    mask = load_volume(tmp_path / "m.nii.gz", kind="label")
    assert mask.array.shape == image.array.shape and np.allclose(mask.affine, image.affine)
    assert len(json.loads((tmp_path / "m.nii.gz.json").read_text())["steps"]) == 3


@pytest.mark.parametrize("prompts, extra, match", [
    ({"prompts": [{"type": "click", "point": [99, 0, 0]}]}, (), "outside the image"),
    ({"prompts": [{"type": "click", "point": [1, 1, 1]}]}, ("--expert", "nobody"), "not in this model"),
    ({"prompts": [{"type": "box", "lower": [4, 4, 4], "upper": [4, 4, 9]}]}, (), "zero size"),
    ("{not json", (), "not valid JSON"),
    ({"prompts": [{"type": "click", "point": [1, 1, 1]}], "colour": "red"}, (), "unknown key"),
    ({"prompts": [{"type": "click", "point": [1, 1, 1], "radius": 3}]}, (), "unknown key"),
    ({"coordinates": "pixels", "prompts": [{"type": "click", "point": [1, 1, 1]}]}, (), "coordinates"),
])
def test_bad_input_is_one_line_and_exit_2(models, toy_dataset_master, tmp_path, prompts, extra, match):
    result = refine(models, toy_dataset_master, tmp_path, prompts, *extra)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in result.output


def test_evaluate_interactive_writes_json_csv_and_a_plot(models, toy_dataset_master, tmp_path):
    out = tmp_path / "ev"
    args = ["evaluate-interactive", "--model", str(models / "inter"), "--data", str(toy_dataset_master), "--expert", "small,large", "--classes", "core", "--clicks", "2", "--max-cases", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "interactive.json").read_text())
    box = report["experts"]["small"]["core/box"]
    assert len(box["dice"]) == 3 and 0 <= box["dice_auc"] <= 2 and box["seconds_median"] > 0
    assert "core/scribble" in report["experts"]["large"]
    other = box["other_row"]  # the nearest other row: one of the model's other experts, on the one case
    assert len(other["rows"]) == 1 and "small" not in other["rows"] and sum(other["rows"].values()) == 1 and len(other["same_prompts"]["dice"]) == len(other["own_clicks"]["dice"]) == 3
    assert (out / "dice_per_interaction.png").stat().st_size > 0
    assert len(box["box_alone"]["dice"]) == 3 and "box_alone" not in report["experts"]["small"]["core/scribble"]
    assert len((out / "interactive.csv").read_text().splitlines()) == 1 + 2 * 3 * (2 * 3 + 1)  # 2 experts x 3 steps x (2 variants x 3 arms + box alone)
    alone = CliRunner().invoke(cli, args[:-1] + [str(tmp_path / "ev1"), "--no-other-row"])
    assert alone.exit_code == 0 and "other_row" not in json.loads((tmp_path / "ev1" / "interactive.json").read_text())["experts"]["small"]["core/box"]


def test_resuming_interactive_training_from_a_checkpoint_ends_with_the_same_weights(models, toy_dataset_master, tmp_path):
    import shutil

    import torch

    run = tmp_path / "inter"
    shutil.copytree(models / "inter", run)
    for name in ("model", "summary.json"):  # as if killed between the checkpoints of steps 2 and 4
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    for f in (run / "checkpoints").glob("step_0000004*"):
        f.unlink()
    pretrain(data=str(toy_dataset_master), out=str(run), overrides=TINY + ("train.steps=4", "interactive.rounds=1"), tracking="local", progress=False, interactive=str(models / "pre"), resume=True)
    a = torch.load(models / "inter" / "model" / "weights.pt", weights_only=True)
    b = torch.load(run / "model" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_new_doctor_adapts_on_the_interactive_model_and_their_row_answers_prompts(models, toy_dataset_master, tmp_path):
    from experts.interactive.session import InteractiveSession
    from pipelines.adapt import adapt

    adapt(model=str(models / "inter"), data=str(toy_dataset_master), expert="newdoc", out=str(tmp_path / "ad"), shots=2,
          overrides=TINY + ("adapt.steps=2", "adapt.eval_every=1", "adapt.batch_size=1"), tracking="local", progress=False)
    import torch

    from pipelines.runtime.models import load_model

    inter, adapted = load_bundle(models / "inter" / "model"), load_bundle(tmp_path / "ad" / "model")
    assert adapted.experts == inter.experts + ["newdoc"] and adapted.network.prompt_channels == 7
    summary = json.loads((tmp_path / "ad" / "summary.json").read_text())
    source = inter.experts.index(summary["init_source"])  # the new interactive row: a copy of the nearest colleague's
    for name, (gamma, beta) in adapted.network.interactive.row_tables().items():
        g0, b0 = inter.network.interactive.row_tables()[name]
        assert torch.equal(gamma[-1], g0[source]) and torch.equal(beta[-1], b0[source]) and torch.equal(gamma[:-1], g0)
    image = str(toy_dataset_master / "imagesTs" / "test00_0000.nii.gz")
    stacked = load_model(str(tmp_path / "ad" / "adapter"))  # the adapter file onto the interactive model: the same model
    assert stacked.experts == adapted.experts and stacked.network.prompt_channels == 7
    a, b = (InteractiveSession(m, image, "newdoc", target="core") for m in (adapted, stacked))
    assert np.allclose(a.prob, b.prob, atol=1e-6)  # both start from the adapted automatic row
    out_a, _ = a.click([10, 10, 10]), b.click([10, 10, 10])
    assert out_a["network_calls"] >= 1 and np.allclose(a.prob, b.prob, atol=1e-6)
    from experts.inference import predict_experts

    plain = load_model(str(models / "pre"), adapters=[str(tmp_path / "ad" / "adapter")])  # and onto the pretrained model
    probs = predict_experts(plain.network, a.image, [plain.experts.index("newdoc")], patch_size=plain.plan.patch_size)[0, 1].numpy()
    assert plain.experts[-1] == "newdoc" and np.allclose(probs, InteractiveSession(adapted, image, "newdoc", target="core").prob, atol=1e-5)


def test_evaluate_interactive_scores_named_training_cases_and_refuses_unknown_ones(models, toy_dataset_master, tmp_path):
    base = ["evaluate-interactive", "--model", str(models / "inter"), "--data", str(toy_dataset_master), "--expert", "small", "--classes", "core", "--clicks", "1", "--no-other-row"]
    result = CliRunner().invoke(cli, base + ["--split", "train", "--cases", "case01", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "interactive.json").read_text())
    assert report["split"] == "train" and report["cases"] == ["case01"] and report["experts"]["small"]["core/box"]["cases"] == 1
    bad = CliRunner().invoke(cli, base + ["--split", "train", "--cases", "test00", "--out", str(tmp_path / "ev2")])
    assert bad.exit_code == 2 and "not among the train cases" in bad.output


def test_an_adapter_of_the_pretrained_model_stacks_onto_its_interactive_model(models, toy_dataset_master, tmp_path):
    from experts.interactive.session import InteractiveSession
    from pipelines.adapt import adapt
    from pipelines.runtime.models import load_model

    adapt(model=str(models / "pre"), data=str(toy_dataset_master), expert="newdoc", out=str(tmp_path / "ad"), shots=2,
          overrides=TINY + ("adapt.steps=2", "adapt.eval_every=1", "adapt.batch_size=1"), tracking="local", progress=False)
    stacked = load_model(str(models / "inter"), adapters=[str(tmp_path / "ad" / "adapter")])
    assert stacked.experts[-1] == "newdoc" and stacked.network.prompt_channels == 7
    assert InteractiveSession(stacked, str(toy_dataset_master / "imagesTs" / "test00_0000.nii.gz"), "newdoc", target="core").click([10, 10, 10])["step"] == 1
