"""QUBIQ import: 2D slices become X x Y x 1, raters are read per case, masks are normalised or refused."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from trees import save_nifti, tree_hash

from experts.data.converters import import_dataset
from experts.data.manifest import scan_dataset
from experts.errors import DatasetError

AFF2D = np.array([[0.5, 0, 0, -10.0], [0, 0.7, 0, 20.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])



def save(path: Path, array: np.ndarray, affine=AFF2D) -> Path:
    return save_nifti(path, array, affine)


def disc(shift: int) -> np.ndarray:
    m = np.zeros((8, 8), np.uint8)
    m[2 + shift % 3 : 6, 2:6] = 1
    return m


def make_qubiq(root: Path, *, raters=None, tasks=(1, 2)) -> Path:
    """Training case01..03 (case02: 5 raters, the others 6), Validation case04; 8x8 2D slices."""
    rng = np.random.default_rng(0)
    raters = raters or {"case01": 6, "case02": 5, "case03": 6, "case04": 6}
    for case, n in raters.items():
        split = "Validation" if case == "case04" else "Training"
        save(root / split / case / "image.nii.gz", rng.normal(size=(8, 8)).astype(np.float32))
        for t in tasks:
            for r in range(1, n + 1):
                save(root / split / case / f"task{t:02d}_seg{r:02d}.nii.gz", disc(r + t))
    return root


@pytest.fixture
def src(tmp_path):
    return make_qubiq(tmp_path / "brain-growth")


def test_import_layout_geometry_and_raters(src, tmp_path):
    before = tree_hash(src)
    out = import_dataset("qubiq", src=src, out=tmp_path / "out", task=1, label_name="brain")
    assert tree_hash(src) == before
    m = scan_dataset(out)
    assert m.case_ids("train") == ["case01", "case02", "case03"] and m.case_ids("test") == ["case04"]
    assert m.experts == [f"rater{i}" for i in range(1, 7)]
    assert m.spec.labels == {"background": 0, "brain": 1} and m.spec.channel_names == {"0": "image"}
    assert m.label("case02", "rater6") is None and m.label("case01", "rater6") is not None
    assert len(m.labels_of(expert="rater1")) == 4 and {lf.kind for lf in m.labels} == {"dense"}
    assert m.labels_of(expert="rater1", split="test")[0].path.parent.parent.name == "labelsTs"
    case = m.cases["case01"]
    assert case.shape == (8, 8, 1)
    np.testing.assert_allclose(case.spacing, (0.5, 0.7, 1.0))
    np.testing.assert_allclose(case.affine[:3, 3], (-10.0, 20.0, 3.0))
    np.testing.assert_allclose(case.affine[:2, :2], AFF2D[:2, :2])
    img = nib.load(str(m.label("case01", "rater2").path))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj)[:, :, 0], disc(3))
    image = nib.load(str(case.images[0]))
    np.testing.assert_allclose(image.get_fdata()[:, :, 0], nib.load(str(src / "Training/case01/image.nii.gz")).get_fdata(), rtol=1e-6)


def test_float_and_255_masks_are_normalised(src, tmp_path):
    save(src / "Training/case01/task01_seg01.nii.gz", disc(2).astype(np.float32))
    save(src / "Training/case03/task01_seg02.nii.gz", disc(3) * np.uint8(255))
    m = scan_dataset(import_dataset("qubiq", src=src, out=tmp_path / "out", task="task01"))
    for case, rater, expected in (("case01", "rater1", disc(2)), ("case03", "rater2", disc(3))):
        img = nib.load(str(m.label(case, rater).path))
        assert img.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asanyarray(img.dataobj)[:, :, 0], expected)


@pytest.mark.parametrize("values", [np.array([0.0, 0.5]), np.array([0, 2])])
def test_non_binary_mask_refused_nothing_written(src, tmp_path, values):
    bad = disc(1).astype(np.float32)
    bad[bad == 1] = values[1]
    path = save(src / "Training/case03/task01_seg04.nii.gz", bad)
    before = tree_hash(src)
    with pytest.raises(DatasetError) as err:
        import_dataset("qubiq", src=src, out=tmp_path / "out", task=1)
    assert str(path) in str(err.value) and ("fractional" in str(err.value) or "not binary" in str(err.value))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["brain-growth"]
    assert tree_hash(src) == before


def test_task_choice(src, tmp_path):
    with pytest.raises(DatasetError, match=r"available tasks: 1 \(task01_seg\*\), 2 \(task02_seg\*\)"):
        import_dataset("qubiq", src=src, out=tmp_path / "a")
    with pytest.raises(DatasetError, match=r"no mask of task 7 .*available tasks: 1 \(task01_seg\*\), 2"):
        import_dataset("qubiq", src=src, out=tmp_path / "b", task=7)
    m = scan_dataset(import_dataset("qubiq", src=src, out=tmp_path / "c", task=2))
    assert "task02" in m.spec.name
    single = make_qubiq(tmp_path / "kidney", raters={"case01": 3, "case02": 3}, tasks=(1,))
    assert scan_dataset(import_dataset("qubiq", src=single, out=tmp_path / "d")).experts == ["rater1", "rater2", "rater3"]


def test_split_folder_as_src_and_unlabelled_cases(src, tmp_path):
    (src / "Training/case03/task01_seg01.nii.gz").unlink()
    for p in (src / "Training/case02").glob("task01_*"):
        p.unlink()
    m = scan_dataset(import_dataset("qubiq", src=src / "Training", out=tmp_path / "out", task=1))
    assert m.case_ids("train") == ["case01", "case02", "case03"] and m.case_ids("test") == []
    assert [e for e in m.experts if m.label("case02", e)] == []
    assert m.label("case03", "rater1") is None and m.label("case03", "rater2") is not None


def test_test_ids_clash_gets_prefix(src, tmp_path):
    (src / "Validation/case04").rename(src / "Validation/case01")
    m = scan_dataset(import_dataset("qubiq", src=src, out=tmp_path / "out", task=1))
    assert m.case_ids("test") == ["test_case01"]


def test_already_3d_slices_kept(tmp_path):
    src = tmp_path / "q"
    aff = np.diag([0.8, 0.8, 3.0, 1.0])
    save(src / "Training/case01/image.nii.gz", np.ones((8, 8, 1), np.int16), aff)
    save(src / "Training/case01/task01_seg01.nii.gz", disc(0)[:, :, None], aff)
    m = scan_dataset(import_dataset("qubiq", src=src, out=tmp_path / "out", task=1))
    np.testing.assert_allclose(m.cases["case01"].affine, aff)
    assert nib.load(str(m.cases["case01"].images[0])).get_data_dtype() == np.int16


RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


@pytest.mark.parametrize("shape,dtype,match", [((8, 8, 3), np.float32, "RGB-like"), ((8, 8, 1, 3), np.float32, "extra dimensions"), ((8, 8), RGB, r"colour \(RGB\)")])
def test_colour_or_extra_dim_images_refused(src, tmp_path, shape, dtype, match):
    path = save(src / "Training/case02/image.nii.gz", np.zeros(shape, dtype))
    with pytest.raises(DatasetError, match=match) as err:
        import_dataset("qubiq", src=src, out=tmp_path / "out", task=1)
    assert str(path) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no QUBIQ case found"):
        import_dataset("qubiq", src=tmp_path / "empty", out=tmp_path / "o1", task=1)
    src = make_qubiq(tmp_path / "q", raters={"case04": 2})
    with pytest.raises(DatasetError, match="only held-out split"):
        import_dataset("qubiq", src=src, out=tmp_path / "o2", task=1)
    (src / "Validation").rename(src / "Extra")
    with pytest.raises(DatasetError, match="split folder name not recognised"):
        import_dataset("qubiq", src=src, out=tmp_path / "o3", task=1)


def test_degenerate_third_axis_gets_the_slice_normal(tmp_path):
    src = tmp_path / "q"
    aff = np.array([[0, 0.9, 0, 1.0], [-0.9, 0, 0, 2.0], [0, 0, 0, 3.0], [0, 0, 0, 1]])  # 2D header with a zero z column
    for name, array in (("image", np.ones((8, 8), np.float32)), ("task01_seg01", disc(0))):
        img = nib.Nifti1Image(array, None)
        img.set_sform(aff, code=1)  # nibabel refuses such a qform; an sform-only header can hold it
        img.set_qform(None, code=0)
        (src / "Training/case01").mkdir(parents=True, exist_ok=True)
        nib.save(img, str(src / "Training/case01" / f"{name}.nii.gz"))
    m = scan_dataset(import_dataset("qubiq", src=src, out=tmp_path / "out", progress=True))
    got = m.cases["case01"].affine
    np.testing.assert_allclose(got[:3, :2], aff[:3, :2], atol=1e-6)
    np.testing.assert_allclose(got[:3, 3], aff[:3, 3])
    np.testing.assert_allclose(np.abs(got[:3, 2]), (0, 0, 1.0))
    assert abs(np.linalg.det(got[:3, :3])) > 0
