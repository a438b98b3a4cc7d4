"""The compact-structure demo (DeepNucleiDemo): valid layout, compact visible nuclei, experts' styles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from experts.data.demo import DEMO_EXPERTS, NUCLEI_LABELS, make_demo_dataset, replay_label
from experts.data.demo.anatomy import make_subject, make_subject_params, nucleus_depth
from experts.data.manifest import scan_dataset
from experts.data.nifti import load_volume

SMALL = dict(n_train=3, n_test=1, spacing=3.0, progress=False)
CLASSES = {"thalamus": 1, "caudate": 2, "lentiform": 3}


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("nuclei") / "DeepNucleiDemo", seed=0, structures="nuclei", **SMALL)


def _label(root, expert, case="sub003"):
    return np.asarray(load_volume(root / "labelsTs" / expert / f"{case}.nii.gz", kind="label").array)


def test_a_valid_dataset_with_the_nuclei_classes(nuclei):
    manifest = scan_dataset(nuclei)
    assert manifest.spec.name == "DeepNucleiDemo"
    assert manifest.spec.labels == NUCLEI_LABELS
    assert manifest.experts == [e.id for e in DEMO_EXPERTS]
    raw = json.loads((nuclei / "dataset.json").read_text())
    assert raw["demo"]["structures"] == "nuclei"
    assert "pallidum" in raw["experts"]["drfar"]["description"]  # its nuclei protocol, not its tissue one


def test_every_nucleus_is_compact_and_present(nuclei):
    label = _label(nuclei, "ref")
    for name, value in CLASSES.items():
        voxels = np.argwhere(label == value)
        assert len(voxels) > 10, name
        extent = voxels.max(0) - voxels.min(0) + 1
        # both hemispheres together span under half the volume on every axis: a box says where it is
        assert (extent < 0.5 * np.array(label.shape)).all(), (name, extent, label.shape)
    assert (label > 0).mean() < 0.02


def test_the_nuclei_are_visible_in_the_t1():
    params = make_subject_params(np.random.default_rng(3))
    plain = make_subject(params, spacing=3.0)
    drawn = make_subject(params, spacing=3.0, nuclei_contrast=True)
    depth = nucleus_depth(drawn.mni, "putamen")
    inside, ring = depth > 1.5, (depth < -1.5) & (depth > -6.0)
    ratio = lambda s: float(np.median(s.image[inside]) / np.median(s.image[ring]))  # noqa: E731
    assert ratio(drawn) < ratio(plain) - 0.08
    assert np.array_equal(plain.gm, drawn.gm)  # only the image changes


def test_styles_differ_as_described(nuclei):
    size = {e: {n: int((_label(nuclei, e) == v).sum()) for n, v in CLASSES.items()} for e in ("ref", "overseg", "drnew", "drfar", "nofossa")}
    for name in CLASSES:
        assert size["drnew"][name] < size["ref"][name] < size["overseg"][name], name  # tight < edge < generous
    assert size["drfar"]["lentiform"] < 0.9 * size["ref"]["lentiform"]  # the putamen alone
    assert size["drfar"]["thalamus"] > size["ref"]["thalamus"]
    assert size["nofossa"]["caudate"] < size["ref"]["caudate"] and size["nofossa"]["thalamus"] == pytest.approx(size["ref"]["thalamus"], rel=0.25)


def test_labels_replay_from_the_log(nuclei):
    for expert in ("drfar", "overseg"):
        assert np.array_equal(replay_label(nuclei, "sub003", expert), _label(nuclei, expert))


def test_the_command_line_writes_it_and_refuses_an_unknown_set(tmp_path):
    from pipelines.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["data", "demo", "--out", str(tmp_path / "n"), "--structures", "nuclei", "--train-cases", "1", "--test-cases", "0", "--spacing", "6"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "n" / "dataset.json").read_text())["labels"]["lentiform"] == 3
    bad = runner.invoke(cli, ["data", "demo", "--out", str(tmp_path / "m"), "--structures", "lesions"])
    assert bad.exit_code == 2 and "lesions" in bad.output
