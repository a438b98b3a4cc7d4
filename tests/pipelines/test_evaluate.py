"""expertseg evaluate: per case, expert and class; partial references; defined empty values."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from experts.data.nifti import save_volume
from pipelines.cli import cli
from pipelines.evaluate import evaluate, score_pair


def copy_label(data, split, expert, case, dst, edit=None):
    img = nib.load(str(data / f"labels{split}" / expert / f"{case}.nii.gz"))
    lab = np.asanyarray(img.dataobj).copy()
    if edit:
        lab = edit(lab)
    save_volume(dst / expert / f"{case}.nii.gz", lab, img.affine)


def test_perfect_and_broken_predictions_score_as_expected(toy_dataset, tmp_path):
    pred = tmp_path / "pred"
    copy_label(toy_dataset, "Ts", "small", "test00", pred)  # perfect
    copy_label(toy_dataset, "Ts", "large", "test00", pred, edit=lambda l: np.where(l == 1, 0, l))  # core missing
    result = evaluate(pred=str(pred), data=str(toy_dataset), progress=False)
    rows = {(r["prediction"], r["class"]): r for r in result["rows"]}
    assert rows[("small", "core")]["dice"]["value"] == 1.0 and rows[("small", "rim")]["hd95"]["value"] == 0.0
    assert rows[("small", "rim")]["nsd"]["value"] == 1.0
    assert rows[("large", "core")]["dice"]["value"] == 0.0
    assert rows[("large", "core")]["hd95"] == {"value": None, "reason": "empty prediction"}
    json.loads((pred / "evaluation.json").read_text())  # strict JSON, no NaN
    with open(pred / "evaluation.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and {r["hd95_reason"] for r in table} >= {"", "empty prediction"}


def test_partial_reference_reports_only_overlap_on_annotated_voxels(toy_dataset, tmp_path):
    pred = tmp_path / "pred"
    img = nib.load(str(toy_dataset / "labelsTr" / "medium" / "case00.nii.gz"))
    save_volume(pred / "scribbler" / "case00.nii.gz", np.asanyarray(img.dataobj), img.affine)  # dense medium == scribbler's style
    result = evaluate(pred=str(pred), data=str(toy_dataset), progress=False)
    for r in result["rows"]:
        assert r["reference_kind"] == "partial" and r["dice"]["value"] == 1.0
        assert r["hd95"] == {"value": None, "reason": "not defined against a partial reference"}


def test_consensus_is_scored_against_every_expert(toy_dataset, tmp_path):
    pred = tmp_path / "pred"
    copy_label(toy_dataset, "Ts", "medium", "test01", pred)
    (pred / "medium").rename(pred / "consensus")
    result = evaluate(pred=str(pred), data=str(toy_dataset), progress=False)
    assert {r["reference"] for r in result["rows"]} == {"small", "medium", "large", "scribbler", "newdoc"}


@pytest.mark.parametrize(
    "pred, ref, dice, hd95",
    [
        # [X=1, Y=1, Z=6] lines, spacing 1 mm: prediction shifted by one voxel
        # surface distances {0, 1} each way: the interpolated 95th percentile is 0.95 (MONAI, numpy)
        ([0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0], 0.5, 0.95),
        ([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], None, None),
        ([0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], 0.0, None),
    ],
)
def test_score_pair_table(pred, ref, dice, hd95):
    p = np.array(pred).reshape(1, 1, 6)
    r = np.array(ref).reshape(1, 1, 6)
    row = score_pair(p, r, class_names=["background", "x"], spacing=(1.0, 1.0, 1.0), tolerance_mm=1.0, ignore_label=None)[0]
    assert row["dice"]["value"] == dice
    assert row["hd95"]["value"] == (pytest.approx(hd95, abs=1e-6) if hd95 is not None else None)


def test_no_matching_prediction_is_a_clear_error(toy_dataset, tmp_path):
    (tmp_path / "pred" / "nobody").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["evaluate", "--pred", str(tmp_path / "pred"), "--data", str(toy_dataset)])
    assert result.exit_code == 2 and "no prediction matches a label" in result.output
