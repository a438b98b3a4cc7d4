"""Bad datasets are refused: one clear line per problem naming the file, exit code 2, no traceback.

The corpus is generated here from a small valid dataset, one mutation per case (nothing binary is
committed). Each mutation must be reported with its own message.
"""

import gzip
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from experts.data.manifest import scan_dataset
from experts.data.nifti import save_volume
from experts.errors import DatasetError
from pipelines.cli import cli

AFF = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture
def valid(tmp_path):
    """2 training cases, 1 test case, experts a (dense) and b (partial), labels 0..2 + ignore 3."""
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for case, split in (("c1", "Tr"), ("c2", "Tr"), ("t1", "Ts")):
        save_volume(root / f"images{split}" / f"{case}_0000.nii.gz", rng.normal(size=(8, 8, 6)).astype(np.float32), AFF)
        lab = np.zeros((8, 8, 6), np.uint8)
        lab[2:6, 2:6, 1:5] = 1
        lab[3:5, 3:5, 2:4] = 2
        save_volume(root / f"labels{split}" / "a" / f"{case}.nii.gz", lab, AFF)
        part = np.full((8, 8, 6), 3, np.uint8)
        part[:, :, 2] = lab[:, :, 2]
        save_volume(root / f"labels{split}" / "b" / f"{case}.nii.gz", part if split == "Tr" else lab, AFF)
    spec = {"name": "T", "channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1, "y": 2, "ignore": 3}, "file_ending": ".nii.gz", "experts": {"a": {}, "b": {"description": "scribbles"}}}
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def edit_spec(root, **changes):
    spec = json.loads((root / "dataset.json").read_text())
    for k, v in changes.items():
        if v is None:
            spec.pop(k, None)
        else:
            spec[k] = v
    (root / "dataset.json").write_text(json.dumps(spec))


def img(root, name="c1_0000.nii.gz", split="Tr"):
    return root / f"images{split}" / name


def lab(root, expert="a", case="c1", split="Tr"):
    return root / f"labels{split}" / expert / f"{case}.nii.gz"


def write_raw(path, array, affine=AFF):
    nib.save(nib.Nifti1Image(array, affine), str(path))


def absurd_header(root):
    path = img(root)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 6))
    hdr.set_data_dtype(np.float32)
    raw = bytearray(hdr.binaryblock)
    raw[42:48] = np.array([30000, 30000, 30000], dtype="<i2").tobytes()  # dim[1..3]
    path.write_bytes(gzip.compress(bytes(raw) + b"\0" * 4 + b"\0" * 64))


def symlink_out(root):
    outside = root.parent / "outside_0000.nii.gz"
    save_volume(outside, np.zeros((8, 8, 6), np.float32), AFF)
    img(root).unlink()
    os.symlink(outside, img(root))


def shifted(root, **kw):
    a = AFF.copy()
    for k, v in kw.items():
        if k == "origin":
            a[:3, 3] += v
        elif k == "spacing":
            a[2, 2] = v
        elif k == "rotate":
            c, s = np.cos(v), np.sin(v)
            a[:2, :2] = 2.0 * np.array([[c, -s], [s, c]])
    vol = nib.load(str(lab(root)))
    save_volume(lab(root), np.asanyarray(vol.dataobj), a)


CASES = {
    # --- the foundation list -------------------------------------------------------------------
    "not_nifti": (lambda r: img(r).write_bytes(b"this is a text file, not an image\n"), "c1_0000.nii.gz: not a readable NIfTI"),
    "truncated_gz": (lambda r: img(r).write_bytes(img(r).read_bytes()[:200]), "c1_0000.nii.gz: "),
    "shape_mismatch": (lambda r: save_volume(lab(r), np.zeros((8, 8, 5), np.uint8), AFF), "shape (8, 8, 5) differs"),
    "origin_mismatch": (lambda r: shifted(r, origin=1.0), "origin"),
    "spacing_mismatch": (lambda r: shifted(r, spacing=2.5), "voxel spacing"),
    "direction_mismatch": (lambda r: shifted(r, rotate=0.1), "orientation"),
    "undeclared_value": (lambda r: save_volume(lab(r), np.full((8, 8, 6), 7, np.uint8), AFF), "label value(s) 7 not declared"),
    "fractional_value": (lambda r: save_volume(lab(r), np.full((8, 8, 6), 0.5, np.float32), AFF), "fractional label value 0.5"),
    "ignore_not_highest": (lambda r: edit_spec(r, labels={"background": 0, "x": 1, "ignore": 2, "y": 3}), "ignore label 2 must be the highest label value (found 'y': 3)"),
    "expert_not_declared": (lambda r: (r / "labelsTr" / "a").rename(r / "labelsTr" / "zed"), 'expert folder "zed" is not declared'),
    "expert_without_folder": (lambda r: edit_spec(r, experts={"a": {}, "b": {}, "ghost": {}}), 'expert "ghost" is declared in dataset.json but has no folder'),
    "bad_case_id": (lambda r: img(r).rename(img(r, "c.1_0000.nii.gz")), 'case id "c.1" is not allowed'),
    "bad_expert_id": (lambda r: edit_spec(r, experts={"a": {}, "b": {}, "dr smith": {}}), 'expert id "dr smith" is not allowed'),
    "channel_missing": (lambda r: (edit_spec(r, channel_names={"0": "MR", "1": "CT"}), save_volume(img(r, "c1_0001.nii.gz"), np.zeros((8, 8, 6), np.float32), AFF)), "channel 1 missing for case c2"),
    "empty_dataset": (lambda r: [p.unlink() for p in (r / "imagesTr").iterdir()] and None, "the dataset has no training case"),
    # --- beyond it ------------------------------------------------------------------------------
    "nan_intensity": (lambda r: save_volume(img(r), np.full((8, 8, 6), np.nan, np.float32), AFF), "voxels are NaN or infinite"),
    "inf_intensity": (lambda r: save_volume(img(r), np.full((8, 8, 6), np.inf, np.float32), AFF), "voxels are NaN or infinite"),
    "image_4d": (lambda r: write_raw(img(r), np.zeros((8, 8, 6, 2), np.float32)), "4D volume of shape (8, 8, 6, 2), expected 3D"),
    "absurd_header": (absurd_header, "header declares dimensions (30000, 30000, 30000)"),
    "case_in_both_splits": (lambda r: save_volume(img(r, "c1_0000.nii.gz", "Ts"), np.zeros((8, 8, 6), np.float32), AFF), 'case id "c1" is used in both imagesTr and imagesTs'),
    "other_file_ending": (lambda r: write_raw(r / "imagesTr" / "c3_0000.nii", np.zeros((8, 8, 6), np.float32)), "file ending differs"),
    "symlink_escapes_root": (symlink_out, "points outside the dataset folder"),
    "non_utf8_json": (lambda r: (r / "dataset.json").write_bytes(b'{"name": "\xff\xfe"}'), "dataset.json: not UTF-8"),
    "non_json": (lambda r: (r / "dataset.json").write_text("name: not json"), "dataset.json: not valid JSON"),
    "json_not_object": (lambda r: (r / "dataset.json").write_text("[1, 2]"), "the top level must be a JSON object"),
    "missing_json": (lambda r: (r / "dataset.json").unlink(), "dataset.json: missing"),
    "region_labels": (lambda r: edit_spec(r, labels={"background": 0, "x": [1, 2], "ignore": 3}), 'label "x" has value [1, 2]'),
    "background_not_zero": (lambda r: edit_spec(r, labels={"background": 1, "x": 0, "y": 2, "ignore": 3}), '"background" must be label 0'),
    "labels_not_consecutive": (lambda r: edit_spec(r, labels={"background": 0, "x": 1, "y": 5, "ignore": 6}), "must be consecutive integers from 0"),
    "channel_keys_gap": (lambda r: edit_spec(r, channel_names={"0": "MR", "2": "CT"}), '"channel_names" keys must be "0", "1"'),
    "bad_file_ending": (lambda r: edit_spec(r, file_ending=".mha"), '"file_ending" must be ".nii.gz" or ".nii"'),
    "bad_role": (lambda r: edit_spec(r, experts={"a": {"role": "boss"}, "b": {}}), 'expert "a" has role \'boss\''),
    "label_without_image": (lambda r: save_volume(lab(r, case="c9"), np.zeros((8, 8, 6), np.uint8), AFF), "no image for case c9"),
    "label_in_labels_root": (lambda r: save_volume(r / "labelsTr" / "c1.nii.gz", np.zeros((8, 8, 6), np.uint8), AFF), "label files belong in one folder per expert"),
    "image_without_channel": (lambda r: img(r).rename(r / "imagesTr" / "c1.nii.gz"), "name must be <case>_<CCCC>.nii.gz"),
    "undeclared_channel": (lambda r: save_volume(img(r, "c1_0003.nii.gz"), np.zeros((8, 8, 6), np.float32), AFF), "channel 0003 is not declared"),
    "nan_label": (lambda r: save_volume(lab(r), np.full((8, 8, 6), np.nan, np.float32), AFF), "label holds NaN"),
    "folder_in_images": (lambda r: (r / "imagesTr" / "extra").mkdir(), "unexpected folder inside imagesTr/"),
    "stray_file": (lambda r: (r / "imagesTr" / "notes.txt").write_text("hi"), "notes.txt: not a NIfTI file name"),
    "missing_images_folder": (lambda r: [p.unlink() for p in (r / "imagesTr").iterdir()] and None or (r / "imagesTr").rmdir(), "imagesTr: missing"),
    "empty_file": (lambda r: img(r).write_bytes(b""), "c1_0000.nii.gz: not a readable NIfTI"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_dataset_is_refused_with_its_own_message(valid, name):
    mutate, message = CASES[name]
    mutate(valid)
    before = sorted(p.relative_to(valid) for p in valid.rglob("*"))
    result = CliRunner().invoke(cli, ["data", "check", str(valid)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [l for l in result.output.splitlines() if l.startswith("error: ")]
    assert lines and any(message in l for l in lines), result.output
    assert all(len(l) < 400 for l in lines)
    assert sorted(p.relative_to(valid) for p in valid.rglob("*")) == before  # nothing written


def test_corpus_messages_are_distinct():
    messages = [m for _, m in CASES.values()]
    assert len(CASES) >= 31
    assert len(set(messages)) >= len(messages) - 3  # a few checks share a message on purpose (NaN / inf, not NIfTI)


def test_valid_dataset_passes_and_reports_kinds(valid):
    m = scan_dataset(valid)
    assert [lf.kind for lf in m.labels_of(expert="b", split="train")] == ["partial", "partial"]
    assert m.labels_of(expert="b", split="test")[0].kind == "dense"
    assert 0 < m.labels_of(expert="b", split="train")[0].annotated_fraction < 0.2


@pytest.mark.parametrize(
    "mutate, warning",
    [
        (lambda r: [p.unlink() for p in (r / "labelsTr" / "a").iterdir()] and [p.unlink() for p in (r / "labelsTs" / "a").iterdir()], "expert folder holds no label file"),
        (lambda r: save_volume(lab(r, "b"), np.full((8, 8, 6), 3, np.uint8), AFF), "partial label annotates no voxel"),
    ],
)
def test_spec_warnings_do_not_fail_the_check(valid, mutate, warning):
    mutate(valid)
    result = CliRunner().invoke(cli, ["data", "check", str(valid)])
    assert result.exit_code == 0, result.output
    assert warning in result.output
    m = scan_dataset(valid)
    assert any(warning in w for w in m.warnings)


def test_every_problem_is_listed_at_once(valid):
    edit_spec(valid, experts={"a": {}, "b": {}, "ghost": {}})
    img(valid).rename(img(valid, "c.1_0000.nii.gz"))
    with pytest.raises(DatasetError) as err:
        scan_dataset(valid)
    assert len(err.value.problems) >= 2


def test_command_line_user_error_has_no_traceback(valid):
    (valid / "dataset.json").write_text("{")
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "data", "check", str(valid)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "dataset.json: not valid JSON" in proc.stderr
