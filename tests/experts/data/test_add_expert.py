"""Adding an expert to a dataset: simulated and imported scribbles, written all at once under the
expert's own folders (DATASET_SPEC rule 11), dataset.json edited in place, failures leave no trace."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from experts.data import expert_writer
from experts.data.expert_writer import ExpertWriter
from experts.data.manifest import scan_dataset
from experts.data.nifti import load_volume, save_volume
from experts.data.scribble_import import import_scribbles
from experts.data.simulated_expert import case_seed, simulate_expert
from experts.data.spec_edit import set_expert_entry
from experts.errors import ConfigError, DatasetError

AFF = np.diag([2.0, 2.0, 2.0, 1.0])  # the toy dataset's affine; its cases are 20^3


def fingerprint(root: Path) -> dict[str, str]:
    """Every file's sha256 and every folder, by path relative to ``root``."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir") for p in sorted(root.rglob("*"))}


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def owned_by(expert: str, paths: set[str], log: str) -> bool:
    """Every path is the expert's label folders, dataset.json or the expert's log (rule 11)."""
    own = (f"labelsTr/{expert}", f"labelsTs/{expert}")
    return all(p in ("dataset.json", ".expertseg", f".expertseg/{log}") or any(p == o or p.startswith(o + "/") for o in own) for p in paths)


def test_owned_by_spots_a_foreign_path():
    assert owned_by("x", {"labelsTr/x", "labelsTr/x/c.nii.gz", "dataset.json", ".expertseg/s-x.json"}, "s-x.json")
    assert not owned_by("x", {"labelsTr/x/c.nii.gz", "labelsTr/xy/c.nii.gz"}, "s-x.json")
    assert not owned_by("x", {"imagesTr/c_0000.nii.gz"}, "s-x.json") and not owned_by("x", {".expertseg/other.json"}, "s-x.json")


def test_simulated_expert_is_partial_on_training_cases_and_dense_copies_on_test_cases(toy_dataset):
    added = simulate_expert(toy_dataset, source="medium", style="line", params={"n_strokes": 2}, seed=3)
    assert added.expert == "medium-line" and len(added.train) == 6 and added.test == ("test00", "test01")
    manifest = scan_dataset(toy_dataset)
    assert {lf.kind for lf in manifest.labels_of(expert="medium-line", split="train")} == {"partial"}
    assert {lf.kind for lf in manifest.labels_of(expert="medium-line", split="test")} == {"dense"}
    for case in added.test:
        assert (toy_dataset / "labelsTs/medium-line" / f"{case}.nii.gz").read_bytes() == (toy_dataset / "labelsTs/medium" / f"{case}.nii.gz").read_bytes()
    assert "medium-line" in manifest.new_experts


def test_scribbles_annotate_only_what_the_source_expert_labelled(toy_dataset):
    simulate_expert(toy_dataset, source="large", style="slicewise", params={"density": 1.0}, seed=0)
    for case in ("case00", "case03"):
        dense = load_volume(toy_dataset / "labelsTr/large" / f"{case}.nii.gz", kind="label").array
        partial = load_volume(toy_dataset / "labelsTr/large-slicewise" / f"{case}.nii.gz", kind="label").array
        annotated = partial != 3
        assert annotated.any() and (partial[annotated] == dense[annotated]).all()


def test_the_log_records_every_case_seed_and_params_outside_the_label_folders(toy_dataset):
    added = simulate_expert(toy_dataset, source="medium", style="habit", params={"habit": "box-then-clicks"}, seed=2)
    assert added.expert == "medium-box-then-clicks" and added.log == toy_dataset.resolve() / ".expertseg/scribbles-medium-box-then-clicks.json"
    log = json.loads(added.log.read_text())
    assert log["style"] == "habit" and log["config"] == {"habit": "box-then-clicks"} and log["seed"] == 2
    assert [c["seed"] for c in log["train"]] == [case_seed(2, i) for i in range(6)] == [2000, 2001, 2002, 2003, 2004, 2005]
    assert all(c["params"]["habit"] == "box-then-clicks" for c in log["train"])
    entry = json.loads((toy_dataset / "dataset.json").read_text())["experts"]["medium-box-then-clicks"]
    assert entry["role"] == "new" and "box-then-clicks" in entry["description"] and "seed 2" in entry["description"]


def test_only_the_new_experts_folders_and_dataset_json_change_and_other_keys_keep_their_order(toy_dataset):
    raw = json.loads((toy_dataset / "dataset.json").read_text())
    raw["numTraining"] = 6  # an nnU-Net key this platform ignores
    (toy_dataset / "dataset.json").write_text(json.dumps(raw, indent=2))
    before = fingerprint(toy_dataset)
    simulate_expert(toy_dataset, source="small", style="centreline", new_id="drskel", role="pretrain")
    diff = changed(before, fingerprint(toy_dataset))
    assert diff and owned_by("drskel", diff, "scribbles-drskel.json") and "dataset.json" in diff
    after = json.loads((toy_dataset / "dataset.json").read_text())
    assert list(after) == list(raw) and {k: v for k, v in after.items() if k != "experts"} == {k: v for k, v in raw.items() if k != "experts"}
    assert list(after["experts"]) == list(raw["experts"]) + ["drskel"]
    assert {k: v for k, v in after["experts"].items() if k != "drskel"} == raw["experts"]
    assert "role" not in after["experts"]["drskel"]


def test_a_failing_commit_moves_everything_back(toy_dataset, monkeypatch):
    simulate_expert(toy_dataset, source="small", style="line", new_id="drx")
    before = fingerprint(toy_dataset)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(expert_writer, "set_expert_entry", broken)
    with pytest.raises(OSError, match="disk full"):
        simulate_expert(toy_dataset, source="large", style="box", new_id="drx", overwrite=True)
    assert fingerprint(toy_dataset) == before


def test_a_failure_while_simulating_leaves_the_dataset_as_it_was(toy_dataset, monkeypatch):
    from experts.scribbles.line import LineScribbles

    before = fingerprint(toy_dataset)
    calls = []
    original = LineScribbles.apply

    def fails_on_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LineScribbles, "apply", fails_on_third)
    with pytest.raises(RuntimeError):
        simulate_expert(toy_dataset, source="small", style="line")
    assert fingerprint(toy_dataset) == before


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"source": "nobody", "style": "line"}, DatasetError, "no expert 'nobody'; experts: small, medium"),
        ({"source": "scribbler", "style": "line"}, DatasetError, "has no dense training label (all are partial)"),
        ({"source": "small", "style": "wobbly"}, ConfigError, "unknown scribble style 'wobbly'"),
        ({"source": "small", "style": "line", "params": {"density": 5}}, ConfigError, "density"),
        ({"source": "small", "style": "line", "new_id": "large"}, DatasetError, "expert 'large' already exists"),
        ({"source": "small", "style": "line", "new_id": "small", "overwrite": True}, DatasetError, "would replace the labels it is simulated from"),
        ({"source": "small", "style": "line", "new_id": "bad id"}, DatasetError, 'expert id "bad id" is not allowed'),
    ],
)
def test_refusals_write_nothing(toy_dataset, kwargs, error, message):
    before = fingerprint(toy_dataset)
    with pytest.raises(error) as err:
        simulate_expert(toy_dataset, **kwargs)
    assert len(err.value.problems) == 1 and message in err.value.problems[0]
    assert fingerprint(toy_dataset) == before


def test_out_writes_a_new_dataset_with_hard_links_and_leaves_the_source_untouched(toy_dataset, tmp_path):
    before = fingerprint(toy_dataset)
    added = simulate_expert(toy_dataset, source="medium", style="contour", out=tmp_path / "plus")
    assert fingerprint(toy_dataset) == before
    assert added.root == (tmp_path / "plus").resolve() and added.log.is_file()
    manifest = scan_dataset(tmp_path / "plus")
    assert "medium-contour" in manifest.experts and "medium-contour" not in scan_dataset(toy_dataset, read_voxels=False).experts
    assert os.path.samefile(tmp_path / "plus/imagesTr/case00_0000.nii.gz", toy_dataset / "imagesTr/case00_0000.nii.gz")
    assert not os.path.samefile(tmp_path / "plus/dataset.json", toy_dataset / "dataset.json")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_dataset_json_without_experts_gets_every_folder_declared(toy_dataset):
    raw = json.loads((toy_dataset / "dataset.json").read_text())
    raw.pop("experts")
    (toy_dataset / "dataset.json").write_text(json.dumps(raw))
    set_expert_entry(toy_dataset, "drnew", {"description": "d", "role": "new"})
    experts = json.loads((toy_dataset / "dataset.json").read_text())["experts"]
    assert experts == {"large": {}, "medium": {}, "newdoc": {}, "scribbler": {}, "small": {}, "drnew": {"description": "d", "role": "new"}}


def write_scribble(folder: Path, case: str, array, affine=AFF, ending=".nii.gz") -> Path:
    return save_volume(folder / f"{case}{ending}", np.asarray(array), affine)


def hand_made(shifted: bool) -> np.ndarray:
    """[20, 20, 20]: background, core, rim at three voxels of one row, the rest unlabelled."""
    out = np.zeros((20, 20, 20), np.int16) if shifted else np.full((20, 20, 20), 255, np.int16)
    out[0, 0, 0], out[1, 0, 0], out[2, 0, 0] = (1, 2, 3) if shifted else (0, 1, 2)
    return out


@pytest.mark.parametrize("unlabelled", ["zero-shifted", "255"])
def test_imported_scribbles_land_in_our_layout_for_both_conventions(toy_dataset, tmp_path, unlabelled):
    src = tmp_path / "tool"
    write_scribble(src, "case01", hand_made(unlabelled == "zero-shifted"))
    write_scribble(src, "test00", hand_made(unlabelled == "zero-shifted"), ending=".nii")
    added = import_scribbles(src, toy_dataset, expert="drscrib", unlabelled=unlabelled)
    assert added.train == ("case01",) and added.test == ("test00",)
    for split, case in (("labelsTr", "case01"), ("labelsTs", "test00")):
        out = load_volume(toy_dataset / split / "drscrib" / f"{case}.nii.gz", kind="label").array
        expected = np.full((20, 20, 20), 3)
        expected[:3, 0, 0] = [0, 1, 2]
        assert out.dtype == np.uint8 and (out == expected).all()
    manifest = scan_dataset(toy_dataset)
    assert [lf.kind for lf in manifest.labels_of(expert="drscrib")] == ["partial", "partial"]
    assert json.loads(added.log.read_text())["unlabelled"] == (unlabelled if unlabelled == "zero-shifted" else 255)


def test_a_scribble_file_annotating_nothing_is_skipped_with_a_warning(toy_dataset, tmp_path):
    src = tmp_path / "tool"
    write_scribble(src, "case01", hand_made(True))
    write_scribble(src, "case02", np.zeros((20, 20, 20), np.uint8))
    (src / "notes.txt").write_text("exported with my tool")
    added = import_scribbles(src, toy_dataset, expert="drscrib", unlabelled="zero-shifted")
    assert added.train == ("case01",) and not (toy_dataset / "labelsTr/drscrib/case02.nii.gz").exists()
    assert [w.split(": ", 1)[1] for w in added.warnings] == ["not a <case>.nii.gz or <case>.nii file; ignored", "annotates no voxel; skipped"]


@pytest.mark.parametrize(
    "name, array, affine, message",
    [
        ("case01", np.full((20, 20, 20), 7, np.uint8), AFF, "case01.nii.gz: value 7 is out of range for --unlabelled zero-shifted"),
        ("case01", np.ones((20, 20, 19), np.uint8), AFF, "shape (20, 20, 19) differs from shape (20, 20, 20) of case01_0000.nii.gz"),
        ("case01", np.ones((20, 20, 20), np.uint8), np.diag([2.0, 2.0, 2.5, 1.0]), "voxel spacing (2, 2, 2.5) differs from (2, 2, 2)"),
        ("case99", np.ones((20, 20, 20), np.uint8), AFF, "no case case99 in"),
    ],
)
def test_an_import_with_a_bad_file_names_it_and_writes_nothing(toy_dataset, tmp_path, name, array, affine, message):
    src = tmp_path / "tool"
    write_scribble(src, name, array, affine)
    before = fingerprint(toy_dataset)
    with pytest.raises(DatasetError) as err:
        import_scribbles(src, toy_dataset, expert="drscrib", unlabelled="zero-shifted")
    assert len(err.value.problems) == 1 and message in err.value.problems[0] and str(src / name) in err.value.problems[0]
    assert fingerprint(toy_dataset) == before


def test_a_dataset_without_ignore_label_refuses_partial_labels(toy_dataset, tmp_path):
    raw = json.loads((toy_dataset / "dataset.json").read_text())
    del raw["labels"]["ignore"], raw["experts"]["scribbler"]
    (toy_dataset / "dataset.json").write_text(json.dumps(raw))
    for split in ("labelsTr", "labelsTs"):
        for p in (toy_dataset / split / "scribbler").iterdir():
            p.unlink()
        (toy_dataset / split / "scribbler").rmdir()
    write_scribble(tmp_path / "tool", "case01", hand_made(True))
    before = fingerprint(toy_dataset)
    for call in (lambda: simulate_expert(toy_dataset, source="small", style="line"),
                 lambda: import_scribbles(tmp_path / "tool", toy_dataset, expert="drscrib", unlabelled="zero-shifted")):
        with pytest.raises(DatasetError, match='labels declare no "ignore" value.*add "ignore": 3'):
            call()
    assert fingerprint(toy_dataset) == before


def test_writer_refuses_a_case_twice(toy_dataset):
    with ExpertWriter(toy_dataset, "drtwice") as writer:
        writer.write(split="train", case="case01", array=np.zeros((20, 20, 20)), affine=AFF)
        with pytest.raises(DatasetError, match="written twice"):
            writer.write(split="train", case="case01", array=np.zeros((20, 20, 20)), affine=AFF)
    assert not (toy_dataset / ".expertseg").exists() and not (toy_dataset / "labelsTr/drtwice").exists()


def test_partial_labels_of_the_source_are_skipped_with_a_warning(toy_dataset):
    for split, case in (("labelsTr", "case00"), ("labelsTs", "test00")):
        partial = load_volume(toy_dataset / "labelsTr/scribbler/case00.nii.gz", kind="label")
        save_volume(toy_dataset / split / "medium" / f"{case}.nii.gz", partial.array, partial.affine)
    added = simulate_expert(toy_dataset, source="medium", style="slices")
    assert added.train == ("case01", "case02", "case03", "case04", "case05") and added.test == ("test01",)
    assert [w.split("/")[-1] for w in added.warnings] == [
        "case00.nii.gz: already partial; scribbles are simulated from dense labels only, case skipped",
        "test00.nii.gz: partial; the new expert's held-out labels are copies of dense ones only, case skipped",
    ]
    assert [c["seed"] for c in json.loads(added.log.read_text())["train"]] == [1, 2, 3, 4, 5]  # case i keeps seed*1000+i


def test_replacing_a_simulated_expert_by_imported_scribbles_drops_the_stale_log(toy_dataset, tmp_path):
    simulate_expert(toy_dataset, source="small", style="line", new_id="drx")
    write_scribble(tmp_path / "tool", "case01", hand_made(True))
    added = import_scribbles(tmp_path / "tool", toy_dataset, expert="drx", unlabelled="zero-shifted", overwrite=True)
    assert sorted(p.name for p in (toy_dataset / ".expertseg").iterdir()) == ["import-drx.json"] == [added.log.name]
    assert sorted(p.name for p in (toy_dataset / "labelsTr/drx").iterdir()) == ["case01.nii.gz"]
    assert not (toy_dataset / "labelsTs/drx").exists()
    assert scan_dataset(toy_dataset).labels_of(expert="drx")[0].kind == "partial"
