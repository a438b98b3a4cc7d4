"""A corpus of hostile inputs, each answered by one line and exit 2, with nothing written.

Every case runs a real command line (in-process, so the corpus takes seconds) and asserts: exit
code 2, exactly one ``error:`` line, no traceback, and the watched folders (the dataset, the model,
the output location) byte for byte as they were. The config part walks every config key with a
value of the wrong type, and every registry with an unknown name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.runtime.config import Config

TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.steps=2", "train.val_every=100", "predict.sw_batch_size=1")


def fingerprint(*roots: Path) -> dict:
    out = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
        elif root.is_dir():
            out.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()})
        else:
            out[str(root)] = None
    return out


@pytest.fixture(scope="module")
def world(toy_dataset_master, tmp_path_factory):
    """A dataset, a pretrained model, an adapter, and a scratch folder, shared by the corpus."""
    from pipelines.adapt import adapt
    from pipelines.pretrain import pretrain

    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    shutil.copytree(toy_dataset_master, data)
    pretrain(data=str(data), out=str(root / "pre"), overrides=TINY, tracking="local", progress=False)
    adapt(model=str(root / "pre"), data=str(data), expert="newdoc", out=str(root / "ad"), shots=1, overrides=("adapt.steps=2", "adapt.eval_every=2", "adapt.batch_size=1"), tracking="local", progress=False)
    (root / "afile").write_text("a file, not a folder")
    return {"data": data, "pre": root / "pre", "ad": root / "ad", "root": root}


def run_refused(world, argv: list, *, watch=()) -> str:
    watched = [world["data"], world["pre"], *watch]
    before = fingerprint(*watched)
    result = CliRunner().invoke(cli, [str(a) for a in argv])
    assert result.exit_code == 2, (argv, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    assert result.output.count("error:") == 1, result.output
    assert len(result.output) < 2000, result.output[:300]
    assert fingerprint(*watched) == before
    return result.output


# --- config: every key with a wrong value, every registry with an unknown name -------------------
def _leaves(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hint


def _wrong(hint) -> str:
    """A YAML value that ``hint`` refuses."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union,) or str(origin) == "<class 'types.UnionType'>":
        return "{a: {b: c}}"
    if origin is list:
        return "{a: 1}"
    if origin is dict:
        return "[1, 2]"
    if hint is str or origin is typing.Literal:
        return "[1, 2]"
    return "not-a-number" if hint in (int, float) else "[1, 2]"


CONFIG_KEYS = [k for k, _ in _leaves(Config) if k != "loss.terms"]


@pytest.mark.parametrize("key, hint", [kh for kh in _leaves(Config) if kh[0] != "loss.terms"], ids=lambda v: v if isinstance(v, str) else "")
def test_every_config_key_with_a_wrong_value_is_one_line(world, key, hint, tmp_path):
    out = tmp_path / "out"
    msg = run_refused(world, ["pretrain", "--data", world["data"], "--out", out, "--tracking", "local", "--set", f"{key}={_wrong(hint)}"], watch=[out])
    assert key.split(".")[-1] in msg
    assert not out.exists()


REGISTRY_CASES = {
    "network": "network.name=transformer9000",
    "loss term": "loss.terms=[{name: magic_loss}]",
    "loss term param": "loss.terms=[{name: partial_dice_ce, params: {ce_wieght: 1}}]",
    "init strategy": "adapt.init.name=psychic",
    "init param": "adapt.init.params.expert=1",
    "trainable set": "adapt.trainable.name=everything",
    "trainable param": "adapt.trainable.params.rank=8",
    "scribble style": "scribbles.name=doodle",
    "scribble param": "scribbles.params.density=5",
    "cin placement": "network.cin=middle",
    "network feature": "network.features=[decoder.9]",
}


@pytest.mark.parametrize("case", sorted(REGISTRY_CASES))
def test_every_registry_refuses_an_unknown_name_or_parameter(world, case, tmp_path):
    out = tmp_path / "out"
    run_refused(world, ["pretrain", "--data", world["data"], "--out", out, "--tracking", "local", *[x for s in TINY for x in ("--set", s)], "--set", REGISTRY_CASES[case]], watch=[out])
    assert not out.exists()


# --- paths, models, data, tracking -------------------------------------------------------------
def _damaged_model(world, tmp_path, change) -> Path:
    model = tmp_path / "model"
    shutil.copytree(world["pre"] / "model", model)
    change(model)
    return model


def _edit_json(path: Path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _resum(model: Path):
    from experts.bundle import BUNDLE_FILES
    from experts.training.checkpoint import file_digest

    (model / "bundle.sha256").write_text("".join(f"{file_digest(model / n)}  {n}\n" for n in BUNDLE_FILES))


CASES = {
    # paths
    "out under a file": lambda w, t: ["pretrain", "--data", w["data"], "--out", w["root"] / "afile" / "run", "--tracking", "local"],
    "out name too long": lambda w, t: ["pretrain", "--data", w["data"], "--out", t / ("x" * 300), "--tracking", "local"],
    "out is the dataset": lambda w, t: ["pretrain", "--data", w["data"], "--out", w["data"], "--overwrite", "--tracking", "local"],
    "out inside labelsTr": lambda w, t: ["pretrain", "--data", w["data"], "--out", w["data"] / "labelsTr" / "run", "--tracking", "local"],
    "out holds a dataset": lambda w, t: ["compare", "--model", w["pre"], "--data", w["data"], "--out", w["data"].parent, "--overwrite", "--tracking", "local"],
    "predict into labelsTs": lambda w, t: ["predict", "--model", w["pre"], "--images", w["data"] / "imagesTs", "--out", w["data"] / "labelsTs"],
    "resume without a run": lambda w, t: ["pretrain", "--data", w["data"], "--out", t / "fresh", "--resume", "--tracking", "local"],
    "resume and overwrite": lambda w, t: ["adapt", "--model", w["pre"], "--data", w["data"], "--expert", "newdoc", "--shots", "1", "--out", w["ad"], "--resume", "--overwrite", "--tracking", "local"],
    "resume a finished adaptation": lambda w, t: ["adapt", "--model", w["pre"], "--data", w["data"], "--expert", "newdoc", "--shots", "1", "--out", w["ad"], "--resume", "--tracking", "local", "--set", "adapt.steps=2", "--set", "adapt.eval_every=2", "--set", "adapt.batch_size=1"],
    "demo over a folder of files": lambda w, t: ["data", "demo", "--out", w["root"], "--overwrite", "--train-cases", "2"],
    "missing config file": lambda w, t: ["pretrain", "--data", w["data"], "--out", t / "o", "--config", t / "nope.yaml"],
    # models
    "no such model": lambda w, t: ["predict", "--model", t / "nothing", "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "plan patch size zero": lambda w, t: ["predict", "--model", _damaged_model(w, t, lambda m: (_edit_json(m / "plan.json", lambda d: d.update(patch_size=[0, 0, 0])), _resum(m))), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "plan edited, sums kept": lambda w, t: ["predict", "--model", _damaged_model(w, t, lambda m: _edit_json(m / "plan.json", lambda d: d.update(patch_size=[8, 8, 8]))), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "model.json without experts": lambda w, t: ["predict", "--model", _damaged_model(w, t, lambda m: (_edit_json(m / "model.json", lambda d: d.pop("experts")), _resum(m))), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "model.json experts as text": lambda w, t: ["predict", "--model", _damaged_model(w, t, lambda m: (_edit_json(m / "model.json", lambda d: d.update(experts="ab")), _resum(m))), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "truncated weights": lambda w, t: ["predict", "--model", _damaged_model(w, t, lambda m: (m / "weights.pt").write_bytes((m / "weights.pt").read_bytes()[:500])), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "weights of another size": lambda w, t: ["predict", "--model", _damaged_model(w, t, lambda m: (_edit_json(m / "model.json", lambda d: d["arch"]["kwargs"].update(channels=[8, 16])), _resum(m))), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "adapter without base id": lambda w, t: ["predict", "--model", _copy_adapter(w, t, lambda d: d.pop("base_model_id")), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "adapter of another model": lambda w, t: ["predict", "--model", _copy_adapter(w, t, lambda d: d.update(base_model_id="0" * 64)), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "adapter whose base is itself": lambda w, t: ["predict", "--model", _copy_adapter(w, t, lambda d: d.update(base=".")), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "adapter expert not text": lambda w, t: ["predict", "--model", _copy_adapter(w, t, lambda d: d.update(expert=5)), "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "unknown expert to predict": lambda w, t: ["predict", "--model", w["pre"], "--experts", "nobody", "--images", w["data"] / "imagesTs", "--out", t / "p"],
    "adapt an expert the model has": lambda w, t: ["adapt", "--model", w["pre"], "--data", w["data"], "--expert", "small", "--shots", "1", "--out", t / "a", "--tracking", "local"],
    "adapt too many shots": lambda w, t: ["adapt", "--model", w["pre"], "--data", w["data"], "--expert", "newdoc", "--shots", "99", "--out", t / "a", "--tracking", "local"],
    "adapt unknown case": lambda w, t: ["adapt", "--model", w["pre"], "--data", w["data"], "--expert", "newdoc", "--cases", "case99", "--out", t / "a", "--tracking", "local"],
    # data
    "demo without training cases": lambda w, t: ["data", "demo", "--out", t / "d", "--train-cases", "0"],
    "demo spacing absurd": lambda w, t: ["data", "demo", "--out", t / "d", "--spacing", "0.001"],
    "check a missing dataset": lambda w, t: ["data", "check", t / "nope"],
    "check a symbolic link loop": lambda w, t: ["data", "check", _looping_dataset(w, t)],
    "expert weights of nobody": lambda w, t: ["pretrain", "--data", w["data"], "--out", t / "o", "--tracking", "local", *[x for s in TINY for x in ("--set", s)], "--set", "sampling.expert_weights={nobody: 2}"],
    "pretrain unknown expert": lambda w, t: ["pretrain", "--data", w["data"], "--out", t / "o", "--tracking", "local", "--experts", "nobody"],
    "patch the network cannot take": lambda w, t: ["pretrain", "--data", w["data"], "--out", t / "o", "--tracking", "local", "--set", "network.channels=[4,8,16,32]", "--set", "data.patch_size=[12,12,12]"],
    "evaluate tolerance nan": lambda w, t: ["evaluate", "--pred", w["data"] / "labelsTs", "--data", w["data"], "--tolerance", "nan"],
    "evaluate tolerance negative": lambda w, t: ["evaluate", "--pred", w["data"] / "labelsTs", "--data", w["data"], "--tolerance", "-1"],
    "evaluate an unknown label value": lambda w, t: ["evaluate", "--pred", _odd_prediction(w, t), "--data", w["data"], "--out", t / "ev"],
    "predict an extra channel": lambda w, t: ["predict", "--model", w["pre"], "--images", _extra_channel(w, t), "--out", t / "p"],
    # tracking
    "tune storage scheme": lambda w, t: ["tune", "--data", w["data"], "--stage", "pretrain", "--trials", "1", "--out", t / "tune", "--storage", "bogus://x", "--tracking", "local"],
    "unreachable tracking server": lambda w, t: ["adapt", "--model", w["pre"], "--data", w["data"], "--expert", "newdoc", "--shots", "1", "--out", t / "a", "--tracking", "mlflow"],
    "tune zero trials": lambda w, t: ["tune", "--data", w["data"], "--stage", "pretrain", "--trials", "0", "--out", t / "tune", "--tracking", "local"],
    "tune adapt without a model": lambda w, t: ["tune", "--data", w["data"], "--stage", "adapt", "--trials", "1", "--out", t / "tune", "--tracking", "local"],
}


def _copy_adapter(world, tmp_path, edit) -> Path:
    ad = tmp_path / "adapter"
    shutil.copytree(world["ad"] / "adapter", ad)
    _edit_json(ad / "adapter.json", edit)
    return ad


def _looping_dataset(world, tmp_path) -> Path:
    import os

    data = tmp_path / "looping"
    shutil.copytree(world["data"], data)
    os.symlink("a_0000.nii.gz", data / "imagesTr" / "a_0000.nii.gz")  # a link to itself
    return data


def _odd_prediction(world, tmp_path) -> Path:
    import numpy as np

    from experts.data.nifti import load_volume, save_volume

    ref = sorted((world["data"] / "labelsTs" / "small").glob("*.nii.gz"))[0]
    vol = load_volume(ref, kind="label")
    arr = np.asarray(vol.array).astype(np.uint8)
    arr[0, 0, 0] = 7
    save_volume(tmp_path / "pred" / "small" / ref.name, arr, vol.affine)
    return tmp_path / "pred"


def _extra_channel(world, tmp_path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    first = sorted((world["data"] / "imagesTs").glob("*_0000.nii.gz"))[0]
    shutil.copy(first, images / first.name)
    shutil.copy(first, images / first.name.replace("_0000", "_0001"))
    return images


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_one_line_and_writes_nothing(world, case, tmp_path, monkeypatch):
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{sock.getsockname()[1]}")
    before_tmp = fingerprint(tmp_path)
    argv = CASES[case](world, tmp_path)
    made = fingerprint(tmp_path)  # what the case itself prepared
    run_refused(world, argv, watch=[world["ad"], world["root"] / "afile"])
    assert fingerprint(tmp_path) == made, "the command wrote into the scratch folder"
    assert before_tmp is not None
