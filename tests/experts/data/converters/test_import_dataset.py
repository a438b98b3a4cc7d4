"""import_dataset: argument checks, a read-only source, all-or-nothing output, overwrite, the CLI."""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from trees import tree_hash
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from test_msseg2016 import patient_original  # noqa: E402
from test_nnunet import make_nnunet  # noqa: E402
from test_qubiq import make_qubiq  # noqa: E402

from experts.data.converters import IMPORTERS, import_dataset  # noqa: E402
from experts.data.manifest import scan_dataset  # noqa: E402
from experts.errors import DatasetError  # noqa: E402



@pytest.fixture
def qubiq_src(tmp_path):
    return make_qubiq(tmp_path / "src" / "prostate", tasks=(1,))


def test_registry():
    assert sorted(IMPORTERS) == ["msseg2016", "nnunet", "qubiq"]


def test_argument_errors(qubiq_src, tmp_path):
    with pytest.raises(DatasetError, match="unknown import format 'nifti'; choose one of qubiq, msseg2016, nnunet"):
        import_dataset("nifti", src=qubiq_src, out=tmp_path / "o")
    with pytest.raises(DatasetError, match="unknown option.*expert; this importer accepts: task, label_name"):
        import_dataset("qubiq", src=qubiq_src, out=tmp_path / "o", expert="x")
    with pytest.raises(DatasetError, match="source folder not found"):
        import_dataset("qubiq", src=tmp_path / "nope", out=tmp_path / "o")
    for out in (qubiq_src, qubiq_src / "converted", tmp_path / "src"):
        with pytest.raises(DatasetError, match="overlaps the source folder"):
            import_dataset("qubiq", src=qubiq_src, out=out, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        import_dataset("qubiq", src=qubiq_src, out=tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "src"]


def test_non_empty_out_refused_then_overwritten(qubiq_src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="output folder is not empty; pass --overwrite or choose an empty folder"):
        import_dataset("qubiq", src=qubiq_src, out=out)
    assert (out / "old.txt").read_text() == "keep me"
    result = import_dataset("qubiq", src=qubiq_src, out=out, overwrite=True)
    assert result == out.resolve() and not (out / "old.txt").exists()
    assert scan_dataset(out).case_ids("train") == ["case01", "case02", "case03"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temporary folder left


def test_empty_out_and_missing_parents(qubiq_src, tmp_path):
    (tmp_path / "empty").mkdir()
    assert scan_dataset(import_dataset("qubiq", src=qubiq_src, out=tmp_path / "empty")).experts
    assert scan_dataset(import_dataset("qubiq", src=str(qubiq_src), out=str(tmp_path / "a" / "b" / "c"))).experts


def test_failure_midway_writes_nothing(qubiq_src, tmp_path):
    bad = np.zeros((8, 8), np.float32)
    bad[2:4, 2:4] = 0.25
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(qubiq_src / "Validation/case04/task01_seg06.nii.gz"))  # the last file read
    before = tree_hash(qubiq_src)
    with pytest.raises(DatasetError, match="fractional mask value"):
        import_dataset("qubiq", src=qubiq_src, out=tmp_path / "new" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # neither out, nor its parent, nor a temporary folder
    out = tmp_path / "out"
    import_dataset("qubiq", src=tmp_path / "src" / "prostate" / "Training", out=out)
    existing = tree_hash(out)
    with pytest.raises(DatasetError):
        import_dataset("qubiq", src=qubiq_src, out=out, overwrite=True)
    assert tree_hash(out) == existing and sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    assert tree_hash(qubiq_src) == before


def test_contract_problem_names_the_source(qubiq_src, tmp_path):
    shifted = np.diag([0.5, 0.7, 2.5, 1.0])
    shifted[:3, 3] = (-10.0, 25.0, 3.0)  # origin differs from the image's
    mask = np.zeros((8, 8), np.uint8)
    bad = qubiq_src / "Training/case02/task01_seg03.nii.gz"
    nib.save(nib.Nifti1Image(mask, shifted), str(bad))
    with pytest.raises(DatasetError) as err:
        import_dataset("qubiq", src=qubiq_src, out=tmp_path / "out")
    text = str(err.value)
    assert f"{bad} (converted to labelsTr/rater3/case02.nii.gz): origin" in text
    assert "nothing was written" in text and ".importing-" not in text
    assert not (tmp_path / "out").exists()


def test_sources_unchanged_for_every_format(tmp_path):
    srcs = {
        "qubiq": make_qubiq(tmp_path / "q"),
        "nnunet": make_nnunet(tmp_path / "n"),
    }
    patient_original(tmp_path / "m" / "Center_01" / "Patient_01", seed=0)
    srcs["msseg2016"] = tmp_path / "m"
    for fmt, src in srcs.items():
        before = tree_hash(src)
        import_dataset(fmt, src=src, out=tmp_path / f"out_{fmt}", **({"task": 2} if fmt == "qubiq" else {}))
        assert tree_hash(src) == before, fmt


def test_cli(qubiq_src, tmp_path):
    from pipelines.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["data", "import", "qubiq", "--src", str(qubiq_src), "--out", str(tmp_path / "out"), "--task", "1"])
    assert result.exit_code == 0, result.output
    assert scan_dataset(tmp_path / "out").experts == [f"rater{i}" for i in range(1, 7)]
    result = runner.invoke(cli, ["data", "import", "qubiq", "--src", str(qubiq_src), "--out", str(tmp_path / "out"), "--task", "1"])
    assert result.exit_code == 2 and "pass --overwrite or choose an empty folder" in result.output
    result = runner.invoke(cli, ["data", "import", "qubiq", "--src", str(qubiq_src), "--out", str(tmp_path / "out"), "--task", "3", "--overwrite"])
    assert result.exit_code == 2 and "available tasks: 1 (task01_seg*)" in result.output
