"""MSSEG-2016 import: both layouts, 7 raters + consensus, FLAIR first, channels checked per case."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from trees import save_nifti, tree_hash

from experts.data.converters import import_dataset
from experts.data.manifest import scan_dataset
from experts.errors import DatasetError

AFF = np.array([[-1.0, 0, 0, 40.0], [0, 1.2, 0, -30.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
CHANNELS = ("FLAIR", "T1", "T2", "DP", "GADO")



def save(path: Path, array: np.ndarray, affine=AFF) -> Path:
    return save_nifti(path, array, affine)


def lesion(k: int) -> np.ndarray:
    m = np.zeros((8, 8, 4), np.float32)  # MSSEG masks are often stored as floats
    m[2:5, 2 + k % 3 : 6, 1:3] = 1.0
    return m


def patient_original(folder: Path, *, seed: int, channels=CHANNELS, raters=7) -> None:
    rng = np.random.default_rng(seed)
    for i, c in enumerate(channels):
        save(folder / "Preprocessed_Data" / f"{c}_preprocessed.nii.gz", (rng.normal(size=(8, 8, 4)) + i).astype(np.float32))
        save(folder / "Raw_Data" / f"{c}.nii.gz", rng.integers(0, 500, size=(8, 8, 4)).astype(np.int16))
    save(folder / "Masks" / "Brain_Mask.nii.gz", np.ones((8, 8, 4), np.uint8))
    save(folder / "Masks" / "Consensus.nii.gz", lesion(0))
    for r in range(1, raters + 1):
        save(folder / "Masks" / f"ManualSegmentation_{r}.nii.gz", lesion(r))


@pytest.fixture
def original(tmp_path):
    root = tmp_path / "MSSEG2016"
    patient_original(root / "Training/Center_01/Patient_01", seed=1)
    patient_original(root / "Training/Center_01/Patient_02", seed=2)
    patient_original(root / "Training/Center_07/Patient_01", seed=3, raters=6)
    patient_original(root / "Testing/Center_01/Patient_01", seed=4)
    patient_original(root / "Testing/Center_03/Patient_01", seed=5)
    return root


def test_original_layout_with_splits(original, tmp_path):
    before = tree_hash(original)
    m = scan_dataset(import_dataset("msseg2016", src=original, out=tmp_path / "out"))
    assert tree_hash(original) == before
    assert m.case_ids("train") == ["C01_P01", "C01_P02", "C07_P01"]
    assert m.case_ids("test") == ["C03_P01", "test_C01_P01"]
    assert m.experts == [f"rater{i}" for i in range(1, 8)] + ["consensus"]
    assert m.description_of("consensus") == "consensus of the 7 raters" and m.new_experts == []
    assert m.spec.channel_names == {str(i): c for i, c in enumerate(CHANNELS)}
    assert m.spec.labels == {"background": 0, "lesion": 1}
    assert m.label("C07_P01", "rater7") is None and m.label("C07_P01", "consensus") is not None
    assert len(m.labels) == 5 * 8 - 1
    np.testing.assert_allclose(m.cases["C01_P02"].affine, AFF)
    flair = nib.load(str(m.cases["C01_P02"].images[0]))
    src_flair = nib.load(str(original / "Training/Center_01/Patient_02/Preprocessed_Data/FLAIR_preprocessed.nii.gz"))
    np.testing.assert_allclose(flair.get_fdata(), src_flair.get_fdata())
    np.testing.assert_allclose(flair.get_qform(), flair.get_sform(), atol=1e-5)
    lab = nib.load(str(m.label("C01_P01", "rater3").path))
    assert lab.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(lab.dataobj), lesion(3).astype(np.uint8))


def test_src_is_the_training_folder(original, tmp_path):
    m = scan_dataset(import_dataset("msseg2016", src=original / "Training", out=tmp_path / "out"))
    assert m.case_ids("train") == ["C01_P01", "C01_P02", "C07_P01"] and m.case_ids("test") == []


def test_missing_channel_refused_or_dropped(original, tmp_path):
    (original / "Training/Center_01/Patient_02/Preprocessed_Data/T2_preprocessed.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case C01_P02 has no T2 image.*channels=\['FLAIR', 'T1', 'DP', 'GADO'\]"):
        import_dataset("msseg2016", src=original, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    m = scan_dataset(import_dataset("msseg2016", src=original, out=tmp_path / "b", channels=["T1", "FLAIR"]))
    assert m.spec.channel_names == {"0": "FLAIR", "1": "T1"}
    with pytest.raises(DatasetError, match="choose distinct names among"):
        import_dataset("msseg2016", src=original, out=tmp_path / "c", channels=["PD"])


def test_raw_variant(original, tmp_path):
    m = scan_dataset(import_dataset("msseg2016", src=original / "Training", out=tmp_path / "out", variant="raw", channels=["FLAIR"]))
    img = nib.load(str(m.cases["C01_P01"].images[0]))
    assert img.get_data_dtype() == np.int16
    with pytest.raises(DatasetError, match="choose 'preprocessed' or 'raw'"):
        import_dataset("msseg2016", src=original, out=tmp_path / "x", variant="bias-corrected")


def make_flat(root: Path) -> Path:
    names = {"3DFLAIR": "FLAIR", "3DT1": "T1", "3DT1GADO": "GADO", "DP": "DP", "T2": "T2"}
    for n, (pid, ending) in enumerate((("01016SACH", ".nii.gz"), ("patient 2.b", ".nii"), ("07040DORE", ".nii"))):
        rng = np.random.default_rng(n)
        for stem in names:
            save(root / pid / f"{stem}{ending}", rng.normal(size=(8, 8, 4)).astype(np.float32))
        save(root / pid / f"Consensus{ending}", lesion(0))
        for r in range(1, 8):
            save(root / pid / f"ManualSegmentation_{r}{ending}", lesion(r))
    (root / "README.txt").write_text("flat re-release")
    return root


def test_flat_layout(tmp_path):
    src = make_flat(tmp_path / "flat")
    before = tree_hash(src)
    m = scan_dataset(import_dataset("msseg2016", src=src, out=tmp_path / "out"))
    assert tree_hash(src) == before
    assert m.case_ids("train") == ["01016SACH", "07040DORE", "patient_2_b"]
    assert m.spec.channel_names == {str(i): c for i, c in enumerate(CHANNELS)}
    assert m.experts == [f"rater{i}" for i in range(1, 8)] + ["consensus"]
    assert len(m.labels) == 3 * 8
    with pytest.raises(DatasetError, match="flat layout has one version"):
        import_dataset("msseg2016", src=src, out=tmp_path / "raw", variant="raw")


def test_flat_layout_with_split_folders(tmp_path):
    make_flat(tmp_path / "ms" / "Training")
    make_flat(tmp_path / "ms" / "Testing")
    m = scan_dataset(import_dataset("msseg2016", src=tmp_path / "ms", out=tmp_path / "out"))
    assert m.case_ids("test") == ["test_01016SACH", "test_07040DORE", "test_patient_2_b"]


def test_not_msseg(tmp_path):
    (tmp_path / "src" / "whatever").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no MSSEG-2016 patient found"):
        import_dataset("msseg2016", src=tmp_path / "src", out=tmp_path / "out")


def test_fractional_mask_refused(original, tmp_path):
    bad = lesion(2) * 0.7
    path = save(original / "Testing/Center_03/Patient_01/Masks/ManualSegmentation_5.nii.gz", bad)
    with pytest.raises(DatasetError, match="fractional mask value") as err:
        import_dataset("msseg2016", src=original, out=tmp_path / "out")
    assert str(path) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MSSEG2016"]
