"""``expertseg data scribble`` and ``expertseg data import scribbles`` on the toy dataset: what they
write (only the new expert's folders, dataset.json and its log), replays, and one-line refusals."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from experts.data.manifest import scan_dataset
from experts.data.nifti import load_volume, save_volume
from pipelines.cli import cli

AFF = np.diag([2.0, 2.0, 2.0, 1.0])  # toy cases: 20^3 voxels of 2 mm


def fingerprint(root: Path) -> dict[str, str]:
    """sha256 of every file (and every folder's name) under ``root``, by relative path."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir") for p in sorted(root.rglob("*"))}


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def scribble(data, *args):
    return run("data", "scribble", "--data", data, *args)


def import_scribbles(data, src, *args):
    return run("data", "import", "scribbles", "--src", src, "--data", data, *args)


def test_scribble_adds_a_new_expert_partial_on_training_dense_on_test(toy_dataset):
    before = fingerprint(toy_dataset)
    result = scribble(toy_dataset, "--expert", "medium", "--style", "line", "--as", "drlines")
    assert result.exit_code == 0, result.output
    assert "added expert drlines" in result.stdout and ".expertseg/scribbles-drlines.json" in result.stdout
    manifest = scan_dataset(toy_dataset)
    assert [lf.kind for lf in manifest.labels_of(expert="drlines", split="train")] == ["partial"] * 6
    assert [lf.kind for lf in manifest.labels_of(expert="drlines", split="test")] == ["dense"] * 2
    assert manifest.new_experts == ["newdoc", "drlines"]
    diff = changed(before, fingerprint(toy_dataset))
    own = ("labelsTr/drlines", "labelsTs/drlines")
    assert all(p in ("dataset.json", ".expertseg", ".expertseg/scribbles-drlines.json") or p.split("/")[0] + "/" + p.split("/")[1] in own for p in diff)
    assert {"dataset.json", ".expertseg/scribbles-drlines.json", "labelsTr/drlines/case00.nii.gz", "labelsTs/drlines/test01.nii.gz"} <= diff


def test_dataset_json_keeps_every_other_key_in_its_order(toy_dataset):
    raw = json.loads((toy_dataset / "dataset.json").read_text())
    scribble(toy_dataset, "--expert", "small", "--habit", "contour-tracer", "--role", "pretrain")
    after = json.loads((toy_dataset / "dataset.json").read_text())
    assert list(after) == list(raw) and {k: v for k, v in after.items() if k != "experts"} == {k: v for k, v in raw.items() if k != "experts"}
    assert list(after["experts"]) == [*raw["experts"], "small-contour-tracer"]
    assert {k: after["experts"][k] for k in raw["experts"]} == raw["experts"]
    assert "role" not in after["experts"]["small-contour-tracer"] and "contour-tracer" in after["experts"]["small-contour-tracer"]["description"]


def test_the_same_command_twice_gives_byte_identical_files(toy_dataset_master, tmp_path):
    copies = [shutil.copytree(toy_dataset_master, tmp_path / name) for name in ("a", "b")]
    for root in copies:
        assert scribble(root, "--expert", "large", "--style", "slicewise", "--seed", "4").exit_code == 0
    prints = [{k: v for k, v in fingerprint(root).items() if "large-slicewise" in k or k == "dataset.json"} for root in copies]
    assert len(prints[0]) == 2 + 6 + 2 + 1 + 1 and prints[0] == prints[1]  # 2 folders, 6 + 2 labels, the log, dataset.json
    other = shutil.copytree(toy_dataset_master, tmp_path / "c")
    scribble(other, "--expert", "large", "--style", "slicewise", "--seed", "5")
    a, c = (load_volume(r / "labelsTr/large-slicewise/case00.nii.gz", kind="label").array for r in (copies[0], other))
    assert not np.array_equal(a, c)


def test_params_come_from_the_config_when_it_names_the_style_then_from_set(toy_dataset, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("seed: 7\nscribbles:\n  name: line\n  params: {n_strokes: 3, density: 1.0}\n")
    assert scribble(toy_dataset, "--expert", "small", "--style", "line", "--config", config, "--set", "scribbles.params.n_strokes=2").exit_code == 0
    log = json.loads((toy_dataset / ".expertseg/scribbles-small-line.json").read_text())
    assert (log["config"]["n_strokes"], log["config"]["density"], log["seed"]) == (2, 1.0, 7)
    assert scribble(toy_dataset, "--expert", "small", "--style", "contour", "--config", config).exit_code == 0
    log = json.loads((toy_dataset / ".expertseg/scribbles-small-contour.json").read_text())
    from experts.scribbles import create_scribble_style

    assert log["config"] == create_scribble_style("contour").get_params()  # the style's own defaults


def test_overwrite_replaces_only_the_new_experts_folders(toy_dataset):
    assert scribble(toy_dataset, "--expert", "small", "--style", "line", "--as", "drx").exit_code == 0
    before = fingerprint(toy_dataset)
    result = scribble(toy_dataset, "--expert", "large", "--style", "box", "--as", "drx", "--overwrite")
    assert result.exit_code == 0, result.output
    diff = changed(before, fingerprint(toy_dataset))
    assert diff and all(p.startswith(("labelsTr/drx/", "labelsTs/drx/")) or p in ("dataset.json", ".expertseg/scribbles-drx.json") for p in diff)
    assert "style box" in json.loads((toy_dataset / "dataset.json").read_text())["experts"]["drx"]["description"]


def test_out_writes_a_new_dataset_and_leaves_the_source_untouched(toy_dataset, tmp_path):
    before = fingerprint(toy_dataset)
    result = scribble(toy_dataset, "--expert", "medium", "--style", "clicks", "--out", tmp_path / "plus")
    assert result.exit_code == 0, result.output
    assert fingerprint(toy_dataset) == before
    assert "medium-clicks" in scan_dataset(tmp_path / "plus").experts
    plus = fingerprint(tmp_path / "plus")
    result = scribble(toy_dataset, "--expert", "medium", "--style", "box", "--out", tmp_path / "plus")
    assert result.exit_code == 2 and "output folder is not empty; pass --overwrite" in result.stderr
    assert fingerprint(tmp_path / "plus") == plus and fingerprint(toy_dataset) == before


def hand_made(shifted: bool, shape=(20, 20, 20)) -> np.ndarray:
    """Background, core and rim at three voxels of one row, unlabelled elsewhere."""
    out = np.zeros(shape, np.uint8) if shifted else np.full(shape, 255, np.uint8)
    out[0, 0, 0], out[1, 0, 0], out[2, 0, 0] = (1, 2, 3) if shifted else (0, 1, 2)
    return out


@pytest.mark.parametrize("unlabelled", ["zero-shifted", "255"])
def test_import_scribbles_maps_both_conventions(toy_dataset, tmp_path, unlabelled):
    save_volume(tmp_path / "tool/case02.nii.gz", hand_made(unlabelled == "zero-shifted"), AFF)
    before = fingerprint(toy_dataset)
    result = import_scribbles(toy_dataset, tmp_path / "tool", "--expert", "drscrib", "--unlabelled", unlabelled)
    assert result.exit_code == 0, result.output
    out = load_volume(toy_dataset / "labelsTr/drscrib/case02.nii.gz", kind="label").array
    assert out[:3, 0, 0].tolist() == [0, 1, 2] and (out[3:] == 3).all() and (out[:, 1:] == 3).all()
    assert "drscrib" in scan_dataset(toy_dataset).new_experts
    assert changed(before, fingerprint(toy_dataset)) == {"dataset.json", ".expertseg", ".expertseg/import-drscrib.json", "labelsTr/drscrib", "labelsTr/drscrib/case02.nii.gz"}


def without_ignore(root: Path) -> Path:
    """The toy dataset minus its scribbler (partial labels) and its ignore label."""
    raw = json.loads((root / "dataset.json").read_text())
    del raw["labels"]["ignore"], raw["experts"]["scribbler"]
    (root / "dataset.json").write_text(json.dumps(raw))
    shutil.rmtree(root / "labelsTr/scribbler")
    shutil.rmtree(root / "labelsTs/scribbler")
    return root


REFUSALS = {
    "unknown expert": (["scribble", "--expert", "nobody", "--style", "line"], "no expert 'nobody'; experts: small, medium, large"),
    "expert without dense training label": (["scribble", "--expert", "scribbler", "--style", "line"], "has no dense training label"),
    "unknown style": (["scribble", "--expert", "small", "--style", "wobbly"], "unknown scribble style 'wobbly'; known styles: box, centreline"),
    "unknown habit": (["scribble", "--expert", "small", "--habit", "doodler"], "unknown annotator habit 'doodler'; known habits: box-then-clicks"),
    "habit with another style": (["scribble", "--expert", "small", "--style", "line", "--habit", "quick-lines"], "--habit quick-lines goes with --style habit"),
    "bad style params": (["scribble", "--expert", "small", "--style", "line", "--set", "scribbles.params.density=5"], "'scribbles' (line)"),
    "unknown style param": (["scribble", "--expert", "small", "--style", "line", "--set", "scribbles.params.wobble=1"], "wobble"),
    "existing new id": (["scribble", "--expert", "small", "--style", "line", "--as", "large"], "expert 'large' already exists; choose another id, or pass --overwrite"),
    "new id is the source": (["scribble", "--expert", "small", "--style", "line", "--as", "small", "--overwrite"], "would replace the labels it is simulated from"),
    "import out-of-range value": (["import", "bad_value"], "case01.nii.gz: value 9 is out of range for --unlabelled zero-shifted"),
    "import wrong shape": (["import", "bad_shape"], "case01.nii.gz: shape (20, 20, 10) differs from shape (20, 20, 20)"),
    "import unknown case": (["import", "bad_case"], "no case nocase in"),
    "import existing expert": (["import", "good", "--expert", "medium"], "expert 'medium' already exists"),
    "import bad convention": (["import", "good", "--unlabelled", "zero"], "--unlabelled 'zero': expected 'zero-shifted'"),
    "import without --data": (["import-no-data", "good"], "data import scribbles needs --data"),
    "scribble without ignore label": (["scribble", "--expert", "small", "--style", "line", "@no-ignore"], 'labels declare no "ignore" value'),
    "import without ignore label": (["import", "good", "@no-ignore"], 'labels declare no "ignore" value'),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_is_one_line_exit_2_and_changes_nothing(toy_dataset, tmp_path, case):
    argv, message = REFUSALS[case]
    sources = {"bad_value": (np.full((20, 20, 20), 9, np.uint8), "case01"), "bad_shape": (np.ones((20, 20, 10), np.uint8), "case01"),
               "bad_case": (hand_made(True), "nocase"), "good": (hand_made(True), "case01")}
    if "@no-ignore" in argv:
        argv = [a for a in argv if a != "@no-ignore"]
        without_ignore(toy_dataset)
    before = fingerprint(toy_dataset)
    if argv[0] == "scribble":
        result = scribble(toy_dataset, *argv[1:])
    else:
        array, name = sources[argv[1]]
        save_volume(tmp_path / argv[1] / f"{name}.nii.gz", array, AFF)
        options = {"--expert": "drscrib", "--unlabelled": "zero-shifted"} | dict(zip(argv[2::2], argv[3::2]))
        flat = [x for kv in options.items() for x in kv]
        if argv[0] == "import-no-data":
            result = run("data", "import", "scribbles", "--src", tmp_path / argv[1], *flat)
        else:
            result = import_scribbles(toy_dataset, tmp_path / argv[1], *flat)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output
    assert fingerprint(toy_dataset) == before


def test_other_import_formats_refuse_the_scribble_options(toy_dataset, tmp_path):
    result = run("data", "import", "nnunet", "--src", toy_dataset, "--data", toy_dataset)
    assert result.exit_code == 2 and result.stderr.strip() == "error: data import nnunet: needs --out (the dataset to create); --data, --unlabelled and --role are for 'data import scribbles'"


def test_help_of_both_commands_shows_an_example():
    assert "expertseg data scribble --data demo_data --expert drnew" in run("data", "scribble", "--help").output
    assert "expertseg data import scribbles --src" in run("data", "import", "--help").output
