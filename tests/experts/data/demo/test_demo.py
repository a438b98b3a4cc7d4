"""The BrainTissueDemo generator: valid layout, determinism, experts that differ, logged parameters."""

from __future__ import annotations

import json
import time
from itertools import combinations

import nibabel as nib
import numpy as np
import pytest

from experts.data.demo import (
    DEMO_EXPERTS,
    PARAMS_FILE,
    make_demo_dataset,
    output_grid,
    posterior_fossa,
    replay_label,
    style_dice,
)
from experts.data.manifest import scan_dataset
from experts.data.nifti import load_volume
from experts.errors import DatasetError

SMALL = dict(n_train=4, n_test=2, spacing=6.0, progress=False)
EXPERT_IDS = [e.id for e in DEMO_EXPERTS]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "BrainTissueDemo", seed=0, **SMALL)


@pytest.fixture(scope="module")
def manifest(demo):
    return scan_dataset(demo)


def _arrays(root):
    return {str(p.relative_to(root)): np.asanyarray(nib.load(p).dataobj) for p in sorted(root.rglob("*.nii.gz"))}


def test_passes_scan_dataset(demo, manifest):
    assert manifest.spec.name == "BrainTissueDemo"
    assert manifest.spec.channel_names == {"0": "T1"}
    assert manifest.spec.labels == {"background": 0, "gm": 1, "wm": 2, "ignore": 3}
    assert manifest.spec.file_ending == ".nii.gz"
    assert manifest.experts == EXPERT_IDS
    assert len(manifest.cases) == 6
    assert sorted(c.split for c in manifest.cases.values()).count("test") == 2
    assert "drnew" in manifest.spec.description and "nofossa" in manifest.spec.description
    for eid in EXPERT_IDS:
        assert len(manifest.description_of(eid)) > 40, eid


def test_new_doctor_is_marked_new(manifest):
    assert manifest.new_experts == ["drnew", "drfar"]
    raw = json.loads((manifest.root / "dataset.json").read_text())
    assert raw["experts"]["drnew"]["role"] == raw["experts"]["drfar"]["role"] == "new"
    assert all("role" not in v for k, v in raw["experts"].items() if k not in ("drnew", "drfar"))


def test_every_expert_labels_every_test_case_densely(manifest):
    test_cases = sorted(c for c, f in manifest.cases.items() if f.split == "test")
    for eid in EXPERT_IDS:
        dense = sorted(lf.case for lf in manifest.labels if lf.expert == eid and lf.split == "test" and lf.kind == "dense")
        assert dense == test_cases, eid


def test_partial_labels_and_experts_skipping_cases(manifest):
    train = [lf for lf in manifest.labels if lf.split == "train"]
    n_train = sum(f.split == "train" for f in manifest.cases.values())
    kinds = {eid: [lf.kind for lf in train if lf.expert == eid] for eid in EXPERT_IDS}
    assert kinds["scribbler"] and set(kinds["scribbler"]) == {"partial"}
    assert "partial" in kinds["wmtight"] and "dense" in kinds["wmtight"], "another expert scribbles on some cases too"
    assert kinds["ref"] == ["dense"] * n_train
    assert any(len(k) < n_train for k in kinds.values()), "some experts skip cases"
    assert sum(k == "dense" for k in kinds["drnew"]) == n_train  # min 16 dense, capped by the 4 cases
    for lf in train:
        if lf.kind == "partial":
            assert 0.0 < lf.annotated_fraction < 0.5
            values = np.unique(load_volume(lf.path, kind="label").array)
            assert set(values.tolist()) <= {0, 1, 2, 3} and 3 in values


def test_spacing_affine_and_orientation(demo, manifest):
    shape, affine = output_grid(6.0)
    for case in manifest.cases.values():
        img = nib.load(case.images[0])
        assert img.shape == shape == case.shape
        assert np.allclose(img.affine, affine)
        assert np.allclose(img.header.get_qform(), img.header.get_sform())
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert np.allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(0)), 6.0)
        assert img.get_data_dtype() == np.float32
    # the brain sits where MNI puts it: tissue centroid near (0, -18, 8) mm, left/right balanced
    lab = load_volume(demo / "labelsTs" / "ref" / "sub004.nii.gz", kind="label")
    ijk = np.argwhere(lab.array > 0)
    centroid = (lab.affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].mean(1)
    assert np.abs(centroid - np.array([0.0, -18.0, 8.0])).max() < 12.0, centroid
    # the brain never touches the grid's border
    assert not lab.array[[0, -1]].any() and not lab.array[:, [0, -1]].any() and not lab.array[:, :, [0, -1]].any()


def test_deterministic_by_seed(demo, tmp_path):
    again = make_demo_dataset(tmp_path / "again", seed=0, **SMALL)
    a, b = _arrays(demo), _arrays(again)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    assert (demo / PARAMS_FILE).read_text() == (again / PARAMS_FILE).read_text()
    other = _arrays(make_demo_dataset(tmp_path / "other", seed=1, **SMALL))
    assert not np.array_equal(a["imagesTr/sub000_0000.nii.gz"], other["imagesTr/sub000_0000.nii.gz"])


def test_adding_an_expert_changes_no_subject_and_no_other_experts_labels():
    """Each subject's anatomy and each expert's draws come from streams of their own."""
    from dataclasses import replace

    from experts.data.demo import build
    from experts.data.demo.styles import DEMO_EXPERTS

    base = build.draw_params(seed=0, n_train=6, n_test=2, spacing=6.0)
    extra = replace(DEMO_EXPERTS[-1], id="drlater")
    more = build.draw_params(seed=0, n_train=6, n_test=2, spacing=6.0, experts=(DEMO_EXPERTS[0], extra) + DEMO_EXPERTS[1:])
    for case, entry in base["cases"].items():
        assert more["cases"][case]["subject"] == entry["subject"], case
        for eid, lab in entry["labels"].items():
            assert more["cases"][case]["labels"][eid] == lab, (case, eid)
    assert {e: v["plan"] for e, v in more["experts"].items() if e != "drlater"} == {e: v["plan"] for e, v in base["experts"].items()}


def test_styles_differ_even_at_coarse_resolution(demo):
    dice = style_dice(demo)
    assert set(dice) == {"gm", "wm"}
    for name, (ids, m) in dice.items():
        assert ids == EXPERT_IDS
        for i, j in combinations(range(len(ids)), 2):
            assert 0.6 < m[i, j] < 0.97, (name, ids[i], ids[j], m[i, j])


def test_parameters_are_logged_and_replay(demo, manifest):
    params = json.loads((demo / PARAMS_FILE).read_text())
    assert params["seed"] == 0 and params["spacing"] == 6.0
    assert set(params["experts"]) == set(EXPERT_IDS)
    for case, entry in params["cases"].items():
        assert {"rotation_deg", "scale", "warp_mm", "gamma", "bias", "noise", "noise_seed"} <= set(entry["subject"])
        for eid, lab in entry["labels"].items():
            assert {"outer_threshold", "wm_margin", "smooth_vox"} <= set(lab["style"])
            assert (lab["kind"] == "scribbles") == ("scribbles" in lab)
    logged = {(c, e) for c, entry in params["cases"].items() for e in entry["labels"]}
    on_disk = {(lf.case, lf.expert) for lf in manifest.labels}
    assert logged == on_disk
    for kind in ("dense", "partial"):
        lf = next(lf for lf in manifest.labels if lf.kind == kind and lf.split == "train")
        stored = load_volume(lf.path, kind="label").array
        assert np.array_equal(replay_label(demo, lf.case, lf.expert), stored), (lf.case, lf.expert)
    with pytest.raises(DatasetError, match="no label of expert"):
        replay_label(demo, "sub000", "nobody")


def test_refuses_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="overwrite=True"):
        make_demo_dataset(out, **SMALL)
    assert (out / "keep.txt").exists()
    make_demo_dataset(out, n_train=1, n_test=0, spacing=6.0, overwrite=True, progress=True)
    assert not (out / "keep.txt").exists()
    scan_dataset(out)
    assert [p.name for p in tmp_path.iterdir()] == ["busy"], "no temporary sibling left behind"
    with pytest.raises(ValueError, match="n_train"):
        make_demo_dataset(tmp_path / "x", n_train=0)
    with pytest.raises(ValueError, match="spacing"):
        make_demo_dataset(tmp_path / "x", spacing=0)


def test_posterior_fossa_region():
    points = {  # MNI mm -> inside?
        (0, -60, -30): True,  # cerebellar vermis
        (30, -70, -35): True,  # cerebellar hemisphere
        (0, -28, -30): True,  # pons
        (0, -60, 30): False,  # precuneus
        (45, -20, -25): False,  # inferior temporal lobe
        (0, -95, 0): False,  # occipital pole
    }
    mni = np.array(list(points), dtype=np.float32).T
    inside = posterior_fossa(mni) > 0.5
    assert inside.tolist() == list(points.values())


@pytest.mark.slow
def test_full_size_dataset_styles_in_range(tmp_path):
    start = time.perf_counter()
    root = make_demo_dataset(tmp_path / "full", seed=0, progress=False)
    elapsed = time.perf_counter() - start
    assert elapsed < 60.0, f"default demo took {elapsed:.1f} s"
    manifest = scan_dataset(root)
    assert len(manifest.cases) == 30
    n_dense = sum(lf.expert == "drnew" and lf.split == "train" and lf.kind == "dense" for lf in manifest.labels)
    assert n_dense >= 16
    shape = next(iter(manifest.cases.values())).shape
    assert all(45 <= s <= 70 for s in shape), shape
    roots = [root] + [make_demo_dataset(tmp_path / f"s{s}", seed=s, n_train=2, progress=False) for s in (1, 2)]
    for r in roots:
        for name, (ids, m) in style_dice(r).items():
            off = m[~np.eye(len(ids), dtype=bool)]
            assert 0.75 <= off.min() and off.max() <= 0.95, (r.name, name, m.round(3))
            k = ids.index("drnew")
            assert np.delete(m[k], k).max() <= 0.90, (r.name, name, m[k].round(3))
