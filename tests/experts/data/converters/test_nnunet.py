"""nnU-Net raw import: one expert, labels/channels/file ending copied, ignore label -> partial labels."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from trees import save_nifti, tree_hash

from experts.data.converters import import_dataset
from experts.data.manifest import scan_dataset
from experts.errors import DatasetError

AFF = np.array([[0, -1.5, 0, 12.0], [1.5, 0, 0, -7.0], [0, 0, 2.0, 1.0], [0, 0, 0, 1]])



def save(path: Path, array: np.ndarray, affine=AFF) -> Path:
    return save_nifti(path, array, affine)


def label(k: int) -> np.ndarray:
    lab = np.zeros((8, 8, 4), np.uint8)
    lab[1:6, 2:6, 1:3] = 1
    lab[3:5, 3:5, 1 + k % 2] = 2
    return lab


def make_nnunet(root: Path, *, ending=".nii.gz", spec_changes=None) -> Path:
    """3 training cases (hippo_003 partial: mostly ignore), 1 test case with a label, 2 channels."""
    spec = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3},
        "numTraining": 3,
        "file_ending": ending,
        "overwrite_image_reader_writer": "NibabelIOWithReorient",
        "name": "Hippocampus",
    }
    spec.update(spec_changes or {})
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(spec))
    rng = np.random.default_rng(0)
    for split, case in (("Tr", "hippo_001"), ("Tr", "hippo_002"), ("Tr", "hippo_003"), ("Ts", "hippo_101")):
        for c in range(2):
            save(root / f"images{split}" / f"{case}_{c:04d}{ending}", rng.integers(0, 900, size=(8, 8, 4)).astype(np.int16))
        lab = label(int(case[-1]))
        if case == "hippo_003":
            lab = np.where(np.arange(4)[None, None, :] == 1, lab, 3).astype(np.uint8)
        save(root / f"labels{split}" / f"{case}{ending}", lab)
    return root


@pytest.fixture
def src(tmp_path):
    return make_nnunet(tmp_path / "Dataset004_Hippocampus")


def test_import_one_expert_with_partial_labels(src, tmp_path):
    before = tree_hash(src)
    m = scan_dataset(import_dataset("nnunet", src=src, out=tmp_path / "out"))
    assert tree_hash(src) == before
    assert m.experts == ["nnunet"] and m.case_ids("train") == ["hippo_001", "hippo_002", "hippo_003"] and m.case_ids("test") == ["hippo_101"]
    assert m.spec.labels == {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3}
    assert m.spec.channel_names == {"0": "T1", "1": "T2"} and m.spec.file_ending == ".nii.gz" and m.spec.name == "Hippocampus"
    assert m.spec.extra == {"numTraining": 3, "overwrite_image_reader_writer": "NibabelIOWithReorient"}
    assert m.label("hippo_003", "nnunet").kind == "partial" and m.label("hippo_001", "nnunet").kind == "dense"
    assert m.label("hippo_101", "nnunet").split == "test"
    np.testing.assert_allclose(m.cases["hippo_002"].affine, AFF)
    img = nib.load(str(m.cases["hippo_002"].images[1]))
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), np.asanyarray(nib.load(str(src / "imagesTr/hippo_002_0001.nii.gz")).dataobj))
    lab = nib.load(str(m.label("hippo_002", "nnunet").path))
    assert lab.get_data_dtype() == np.uint8
    np.testing.assert_allclose(lab.get_qform(), lab.get_sform(), atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(lab.dataobj), label(2))


def test_expert_name_nii_ending_and_float_labels(tmp_path):
    src = make_nnunet(tmp_path / "Dataset005_X", ending=".nii")
    save(src / "labelsTr/hippo_001.nii", label(1).astype(np.float32))
    m = scan_dataset(import_dataset("nnunet", src=src, out=tmp_path / "out", expert="dr_a"))
    assert m.experts == ["dr_a"] and m.spec.file_ending == ".nii"
    assert nib.load(str(m.label("hippo_001", "dr_a").path)).get_data_dtype() == np.uint8
    with pytest.raises(DatasetError, match="expert id 'dr.a' is not allowed"):
        import_dataset("nnunet", src=src, out=tmp_path / "o2", expert="dr.a")


def test_v1_labels_inverted_and_unlabelled_case(tmp_path):
    src = make_nnunet(tmp_path / "Task04", spec_changes={"labels": {"0": "background", "1": "anterior", "2": "posterior", "3": "ignore"}})
    (src / "labelsTr/hippo_002.nii.gz").unlink()
    m = scan_dataset(import_dataset("nnunet", src=src, out=tmp_path / "out"))
    assert m.spec.labels == {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3}
    assert m.label("hippo_002", "nnunet") is None and "hippo_002" in m.cases


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}, "region-based labels"),
        ({"file_ending": ".png"}, r"file_ending '.png' is not supported"),
        ({"labels": {"background": 0, "ignore": 1, "anterior": 2}}, "ignore label 1 must be the highest"),
    ],
)
def test_bad_dataset_json(tmp_path, changes, match):
    src = make_nnunet(tmp_path / "Dataset006_Bad", spec_changes=changes)
    with pytest.raises(DatasetError, match=match) as err:
        import_dataset("nnunet", src=src, out=tmp_path / "out")
    assert "dataset.json" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_bad_files(src, tmp_path):
    path = save(src / "labelsTr/hippo_002.nii.gz", label(2) * 3)
    with pytest.raises(DatasetError, match=r"label value\(s\) 6 not declared") as err:
        import_dataset("nnunet", src=src, out=tmp_path / "a")
    assert str(path) in str(err.value)
    save(src / "labelsTr/hippo_002.nii.gz", label(2))
    (src / "imagesTr/hippo_001_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case hippo_001 has channel\(s\) 0001 missing"):
        import_dataset("nnunet", src=src, out=tmp_path / "b")
    save(src / "imagesTr/hippo_001_0001.nii.gz", np.zeros((8, 8, 4), np.int16))
    save(src / "labelsTr/orphan.nii.gz", label(0))
    with pytest.raises(DatasetError, match="no image for case orphan"):
        import_dataset("nnunet", src=src, out=tmp_path / "c")
    (src / "labelsTr/orphan.nii.gz").unlink()
    (src / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="dataset.json: missing"):
        import_dataset("nnunet", src=src, out=tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset004_Hippocampus"]


def test_case_ids_made_valid(src, tmp_path):
    for p in sorted(src.rglob("hippo_001*")):
        p.rename(p.with_name(p.name.replace("hippo_001", "hippo.001")))
    m = scan_dataset(import_dataset("nnunet", src=src, out=tmp_path / "out"))
    assert "hippo_001" in m.cases and m.label("hippo_001", "nnunet") is not None
