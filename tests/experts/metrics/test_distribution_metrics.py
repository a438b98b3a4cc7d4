"""GED^2, QUBIQ soft Dice, Dmax and Dmatch on tiny hand-computed sets of masks."""

import numpy as np
import pytest

from experts.metrics import dice_match, dice_max, generalized_energy_distance, generalized_energy_distance_per_class, pairwise_dice, soft_dice


def masks(*rows):
    """Each row (a list of 0/1) -> a mask [1, 1, L]; returns [N, 1, 1, L]."""
    return np.array(rows, dtype=bool)[:, None, None, :]


# (name, predictions, raters, GED^2, cross, within_predictions, within_raters); masks [N, 1, 1, 4]
GED_CASES = [
    ("identical_sets", masks([1, 1, 0, 0], [0, 1, 1, 0]), masks([1, 1, 0, 0], [0, 1, 1, 0]), 0.0, 2 / 3 / 2, 2 / 3 / 2, 2 / 3 / 2),
    ("one_disjoint_pair", masks([1, 1, 0, 0]), masks([0, 0, 1, 1]), 2.0, 1.0, 0.0, 0.0),
    # prediction = rater 1; raters disjoint: cross = (0 + 1) / 2, within raters = (0 + 1 + 1 + 0) / 4
    ("prediction_equals_one_of_two_disjoint_raters", masks([1, 1, 0, 0]), masks([1, 1, 0, 0], [0, 0, 1, 1]), 0.5, 0.5, 0.0, 0.5),
    ("all_empty_is_zero", masks([0, 0, 0, 0]), masks([0, 0, 0, 0], [0, 0, 0, 0]), 0.0, 0.0, 0.0, 0.0),
    ("empty_prediction_vs_rater", masks([0, 0, 0, 0]), masks([1, 0, 0, 0]), 2.0, 1.0, 0.0, 0.0),
    # half overlap: IoU([1,1,0,0], [0,1,1,0]) = 1/3 -> d = 2/3
    ("half_overlap", masks([1, 1, 0, 0]), masks([0, 1, 1, 0]), 4 / 3, 2 / 3, 0.0, 0.0),
]


@pytest.mark.parametrize("name,preds,raters,ged2,cross,ws,wy", GED_CASES, ids=[c[0] for c in GED_CASES])
def test_ged_squared_matches_hand_values(name, preds, raters, ged2, cross, ws, wy):
    result = generalized_energy_distance(preds, raters)
    assert result.squared == pytest.approx(ged2)
    assert (result.cross, result.within_predictions, result.within_raters) == pytest.approx((cross, ws, wy))
    assert result.distance == pytest.approx(np.sqrt(ged2))


def test_ged_per_class_splits_label_volumes():
    # [N, 1, 1, 4] label volumes, K = 3: class 1 identical across sets, class 2 disjoint
    preds = np.array([[1, 1, 2, 0]])[:, None, None, :]
    raters = np.array([[1, 1, 0, 2]])[:, None, None, :]
    result = generalized_energy_distance_per_class(preds, raters, num_classes=3)
    assert result[1].squared == pytest.approx(0.0)
    assert result[2].squared == pytest.approx(2.0)


# (name, probability [1, 1, 4], raters [M, 1, 1, 4], expected soft Dice or None)
SOFT_DICE_CASES = [
    # mean of raters [1, .5, 0, 0]; t=.1: Dice([1,1,1,0],[1,1,0,0]) = .8; t=.3: 1; t=.5: Dice([1,1,0,0],[1,0,0,0]) = 2/3; t=.7, .9: 1
    ("two_raters", [0.95, 0.6, 0.2, 0.0], masks([1, 1, 0, 0], [1, 0, 0, 0]), (0.8 + 1 + 2 / 3 + 1 + 1) / 5),
    # t=.1, .3: 1; t=.5, .7, .9: prediction empty (0.5 is not > 0.5), reference not -> 0
    ("strict_threshold", [0.5, 0.5, 0.0, 0.0], masks([1, 1, 0, 0]), 2 / 5),
    # t=.1: prediction [1,0,0,0] vs empty -> 0; other thresholds both empty -> 1
    ("empty_raters_faint_prediction", [0.2, 0.0, 0.0, 0.0], masks([0, 0, 0, 0], [0, 0, 0, 0]), 4 / 5),
    ("everything_empty", [0.05, 0.0, 0.0, 0.0], masks([0, 0, 0, 0]), None),
]


@pytest.mark.parametrize("name,prob,raters,expected", SOFT_DICE_CASES, ids=[c[0] for c in SOFT_DICE_CASES])
def test_soft_dice_averages_qubiq_thresholds(name, prob, raters, expected):
    result = soft_dice(np.array(prob)[None, None, :], raters)
    if expected is None:
        assert result.value is None and "every threshold" in result.reason
    else:
        assert result.value == pytest.approx(expected)


def test_hungarian_matching_beats_greedy_and_dmax_uses_best_rater():
    # [N, 1, 1, 8]: A = voxels 0-3, B = voxels 4-7; raters R1 = A+B, R2 = A; predictions P1 = A+B, P2 = B
    a_b, a, b = [1] * 8, [1] * 4 + [0] * 4, [0] * 4 + [1] * 4
    preds, raters = masks(a_b, b), masks(a_b, a)
    dice = pairwise_dice(preds, raters)
    np.testing.assert_allclose(dice, [[1.0, 2 / 3], [2 / 3, 0.0]])
    greedy = (dice[0, 0] + dice[1, 1]) / 2  # best pair first (P1-R1), then P2-R2 = 0.5
    assert greedy == pytest.approx(0.5)
    assert dice_match(preds, raters).value == pytest.approx(2 / 3)  # P1-R2 + P2-R1
    assert dice_max(preds, raters).value == pytest.approx((1.0 + 2 / 3) / 2)


def test_unequal_counts_match_min_pairs():
    # 3 predictions, 2 raters [N, 1, 1, 4]: the best 2 one-to-one pairs are exact, the third prediction is left out
    preds = masks([1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0])
    raters = masks([0, 0, 1, 1], [1, 1, 0, 0])
    assert dice_match(preds, raters).value == pytest.approx(1.0)
    assert dice_max(preds, raters).value == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_all_empty_sets_are_undefined_for_dice_family():
    empty = masks([0, 0, 0, 0], [0, 0, 0, 0])
    for mv in (dice_max(empty, empty), dice_match(empty, empty)):
        assert mv.value is None and "absent in every prediction and every rater" in mv.reason


@pytest.mark.parametrize(
    "preds,raters,match",
    [
        (np.array([[[[0, 2]]]]), masks([0, 1]), "binary masks"),
        (masks([0, 1]), masks([0, 1, 1]), "same volume shape"),
        (np.zeros((1, 2)), masks([0, 1]), r"\[N, X, Y, Z\]"),
        ([], masks([0, 1]), "at least one mask"),
    ],
)
def test_bad_mask_sets_are_refused(preds, raters, match):
    with pytest.raises(ValueError, match=match):
        generalized_energy_distance(preds, raters)


def test_partial_rater_labels_are_refused_per_class():
    # [1, 1, 1, 3] label volumes, K = 2; the rater holds 2 (an ignore value)
    with pytest.raises(ValueError, match="rater 0 has 1 voxels.*need dense labels"):
        generalized_energy_distance_per_class(np.array([[[[0, 1, 1]]]]), np.array([[[[0, 1, 2]]]]), num_classes=2)
