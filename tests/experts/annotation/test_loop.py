"""The simulated doctor's loop at toy size: it clicks, saves under its own id, adapts; the control
never adapts; the truth expert's files are untouched."""

from __future__ import annotations

from experts.annotation.loop import correction_loop, dice
from experts.data.manifest import scan_dataset

import numpy as np


def test_dice_of_hand_made_masks():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2], b[1:3] = True, True  # 32 and 32 voxels, 16 shared
    assert dice(a, b) == 0.5 and dice(a & False, b & False) == 1.0


def test_the_loop_clicks_saves_under_its_own_id_and_adapts(toy_model, small_dataset):
    truth = {p.name: p.read_bytes() for p in (small_dataset / "labelsTr" / "large").iterdir()}
    seen = []
    rows = correction_loop(toy_model, small_dataset, truth="large", as_expert="large-page", cases=["case00", "case01"], goal=0.99, start="small", max_clicks=2, learn_steps=2, on_case=seen.append)
    assert [r["case"] for r in rows] == ["case00", "case01"] and seen == rows
    assert all(r["clicks"] == 2 and not r["reached"] and r["model_seconds"] > 0 for r in rows)
    assert rows[0]["start"] == "small" and rows[1]["start"] == "large-page"  # the second case starts from the learned row
    assert rows[0]["learn_seconds"] > 0
    manifest = scan_dataset(small_dataset)
    assert [lf.case for lf in manifest.labels_of(expert="large-page")] == ["case00", "case01"]
    assert {p.name: p.read_bytes() for p in (small_dataset / "labelsTr" / "large").iterdir()} == truth


def test_the_control_never_adapts(toy_model, small_dataset):
    rows = correction_loop(toy_model, small_dataset, truth="large", as_expert="ctl", cases=["case00", "case01"], goal=0.0, start="medium", learn=False)
    assert [r["start"] for r in rows] == ["medium", "medium"] and all(r["clicks"] == 0 and r["reached"] and r["learn_seconds"] == 0 for r in rows)
