"""Per-class Dice/IoU on hand-computed toy volumes, partial references, empty cases, MONAI agreement."""

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_iou
from monai.networks.utils import one_hot

from experts.metrics import overlap_metrics
from experts.metrics.results import ABSENT, ABSENT_ANNOTATED, NOTHING_ANNOTATED


def vol(rows):
    """Nested rows -> int volume [1, Y, Z] (X = 1)."""
    return np.array(rows, dtype=np.int64)[None]


# (name, prediction, reference, K, {class: (dice, iou)}); shapes [1, 1, 6] or [1, 2, 3]
DENSE_CASES = [
    ("binary_two_of_three", vol([[0, 1, 1, 1, 0, 0]]), vol([[0, 0, 1, 1, 1, 0]]), 2, {1: (2 * 2 / 6, 2 / 4)}),
    ("identical", vol([[0, 1, 2], [2, 1, 0]]), vol([[0, 1, 2], [2, 1, 0]]), 3, {1: (1.0, 1.0), 2: (1.0, 1.0)}),
    ("three_classes", vol([[1, 1, 0], [2, 0, 0]]), vol([[0, 1, 1], [2, 2, 0]]), 3, {1: (2 / 4, 1 / 3), 2: (2 / 3, 1 / 2)}),
    ("disjoint", vol([[1, 1, 0, 0]]), vol([[0, 0, 1, 1]]), 2, {1: (0.0, 0.0)}),
]


@pytest.mark.parametrize("name,pred,ref,k,expected", DENSE_CASES, ids=[c[0] for c in DENSE_CASES])
def test_dense_dice_and_iou_match_hand_values(name, pred, ref, k, expected):
    result = overlap_metrics(pred, ref, num_classes=k)
    assert not result.partial and result.annotated_voxels == ref.size
    assert set(result.dice) == set(expected)
    for c, (d, j) in expected.items():
        assert result.dice[c].value == pytest.approx(d)
        assert result.iou[c].value == pytest.approx(j)


def test_partial_reference_scores_annotated_voxels_only():
    # [1, 2, 3]; reference voxel (1, 2) is unannotated (3 = ignore); the prediction's 2 there must not count.
    ref = vol([[0, 1, 1], [2, 2, 3]])
    pred = vol([[1, 1, 0], [2, 0, 2]])
    result = overlap_metrics(pred, ref, num_classes=3, ignore_label=3, include_background=True)
    assert result.partial and result.annotated_voxels == 5 and result.total_voxels == 6
    assert result.dice[0].value == 0.0  # ref {0}, pred {2, 4}
    assert result.dice[1].value == pytest.approx(2 * 1 / 4)  # ref {1, 2}, pred {0, 1}
    assert result.dice[2].value == pytest.approx(2 * 1 / 3)  # ref {3, 4}, pred {3} (not 2*1/4 = 0.5 dense)
    assert result.iou[2].value == pytest.approx(1 / 2)


# (name, prediction, reference, ignore_label, expected dice/iou of class 1: value or reason); shape [1, 1, 4]
EMPTY_CASES = [
    ("both_empty", vol([[0, 0, 0, 0]]), vol([[0, 0, 0, 0]]), None, ABSENT),
    ("reference_empty", vol([[0, 1, 0, 0]]), vol([[0, 0, 0, 0]]), None, 0.0),
    ("prediction_empty", vol([[0, 0, 0, 0]]), vol([[0, 1, 1, 0]]), None, 0.0),
    ("partial_class_only_on_ignored", vol([[0, 0, 1, 1]]), vol([[0, 0, 2, 2]]), 2, ABSENT_ANNOTATED),
    ("partial_prediction_on_annotated", vol([[1, 0, 1, 1]]), vol([[0, 0, 2, 2]]), 2, 0.0),
    ("partial_nothing_annotated", vol([[1, 0, 1, 1]]), vol([[2, 2, 2, 2]]), 2, NOTHING_ANNOTATED),
]


@pytest.mark.parametrize("name,pred,ref,ignore,expected", EMPTY_CASES, ids=[c[0] for c in EMPTY_CASES])
def test_empty_cases_follow_documented_convention(name, pred, ref, ignore, expected):
    result = overlap_metrics(pred, ref, num_classes=2, ignore_label=ignore)
    for mv in (result.dice[1], result.iou[1]):
        if isinstance(expected, str):
            assert mv.value is None and mv.reason == expected
        else:
            assert mv.value == expected and mv.reason is None


@pytest.mark.parametrize("partial", [False, True])
def test_agrees_with_monai_dice_and_iou(partial):
    rng = np.random.default_rng(3)
    k = 4
    ref = rng.integers(0, k, (4, 5, 6))  # [X, Y, Z]
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, k, ref.shape))
    ignore = k if partial else None
    if partial:
        ref[rng.random(ref.shape) < 0.4] = k
    ours = overlap_metrics(pred, ref, num_classes=k, ignore_label=ignore, include_background=True)
    t_pred, t_ref = torch.as_tensor(pred)[None, None], torch.as_tensor(ref)[None, None]
    dice = compute_dice(t_pred, t_ref, include_background=True, ignore_empty=False, num_classes=k, ignore_index=ignore)[0]
    # one-hot reference: ignored voxels are all-zero, which MONAI's sentinel ignore_index masks out
    oh_ref = one_hot(t_ref.clamp(max=k), num_classes=k + 1)[:, :k]
    iou = compute_iou(one_hot(t_pred, num_classes=k), oh_ref, include_background=True, ignore_empty=False, ignore_index=ignore)[0]
    for c in range(k):
        assert ours.dice[c].value == pytest.approx(float(dice[c]), abs=1e-6)
        assert ours.iou[c].value == pytest.approx(float(iou[c]), abs=1e-6)


@pytest.mark.parametrize(
    "pred,ref,kwargs,match",
    [
        (np.zeros((2, 2, 2), int), np.zeros((2, 2, 3), int), {"num_classes": 2}, "same shape"),
        (np.zeros((2, 2, 2), float), np.zeros((2, 2, 2), int), {"num_classes": 2}, "integer class labels"),
        (np.zeros((2, 2), int), np.zeros((2, 2), int), {"num_classes": 2}, r"3D label volume \[X, Y, Z\]"),
        (np.zeros((2, 2, 2), int), np.full((2, 2, 2), 5), {"num_classes": 2}, "pass ignore_label"),
        (np.full((2, 2, 2), 2), np.zeros((2, 2, 2), int), {"num_classes": 2, "ignore_label": 2}, "prediction has 8 voxels"),
        (np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int), {"num_classes": 3, "ignore_label": 1}, "one of the classes"),
        (np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int), {"num_classes": 1}, "num_classes must be an integer >= 2"),
    ],
)
def test_invalid_inputs_raise_actionable_errors(pred, ref, kwargs, match):
    with pytest.raises(ValueError, match=match):
        overlap_metrics(pred, ref, **kwargs)
