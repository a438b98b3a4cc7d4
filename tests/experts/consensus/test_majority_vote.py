"""Majority vote (sitk.LabelVoting): hand-checked votes, explicit tie label, numpy mode, axis order."""

import numpy as np
import pytest

from experts.consensus import majority_vote


def vol(rows):
    """Nested rows -> int volume [1, Y, Z] (X = 1)."""
    return np.array(rows, dtype=np.int64)[None]


# (name, raters [X, Y, Z] each, tie label, expected); K = 3, shapes [1, 2, 3]
CASES = [
    (
        "three_raters",
        [vol([[0, 1, 1], [2, 0, 2]]), vol([[0, 1, 2], [2, 1, 1]]), vol([[1, 1, 2], [0, 0, 2]])],
        3,
        vol([[0, 1, 2], [2, 0, 2]]),
    ),
    # voxel (0, 2): 0/1/2 three-way tie
    ("three_way_tie", [vol([[0, 1, 0]]), vol([[0, 1, 1]]), vol([[1, 1, 2]])], 3, vol([[0, 1, 3]])),
    ("two_raters_disagree", [vol([[0, 1, 2]]), vol([[0, 2, 1]])], 3, vol([[0, 3, 3]])),
    ("dedicated_tie_value", [vol([[0, 1, 2]]), vol([[0, 2, 2]])], 255, vol([[0, 255, 2]])),
    ("wide_tie_value", [vol([[0, 1]]), vol([[0, 2]])], 1000, vol([[0, 1000]])),
]


@pytest.mark.parametrize("name,raters,tie,expected", CASES, ids=[c[0] for c in CASES])
def test_majority_vote_matches_hand_votes(name, raters, tie, expected):
    out = majority_vote(raters, num_classes=3, tie_label=tie)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int64


def test_matches_numpy_mode_where_no_ties_and_tie_label_elsewhere():
    rng = np.random.default_rng(0)
    raters = rng.integers(0, 3, (4, 5, 6, 7))  # [M, X, Y, Z], K = 3, 4 raters: ties happen
    counts = np.stack([(raters == c).sum(0) for c in range(3)])  # [K, X, Y, Z]
    mode = counts.argmax(0)
    tied = (counts == counts.max(0)).sum(0) > 1
    out = majority_vote(raters, num_classes=3, tie_label=3)
    assert tied.any() and (~tied).any()
    np.testing.assert_array_equal(out[~tied], mode[~tied])
    assert (out[tied] == 3).all()


def test_output_keeps_input_axis_order_on_non_cubic_volume():
    # [2, 3, 4]: a single foreground voxel at (1, 2, 3) for two of three raters
    a = np.zeros((2, 3, 4), np.uint8)
    a[1, 2, 3] = 1
    b = np.zeros_like(a)
    out = majority_vote([a, a, b], num_classes=2, tie_label=2)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize(
    "raters,kwargs,match",
    [
        ([vol([[0, 1, 2]]), vol([[0, 1, 3]])], {"ignore_label": 3}, r"rater 1 is partial \(1 voxels are ignore_label=3\)"),
        ([vol([[0, 1, 2]])], {}, "at least 2 raters"),
        ([vol([[0, 1, 2]]), vol([[0, 1, 2]])], {"tie_label": 2}, "must not be one of the classes 0..2"),
        ([vol([[0, 1, 2]]), vol([[0, 1]])], {}, "all raters must match"),
        (np.zeros((2, 3)), {}, r"\[M, X, Y, Z\]"),
    ],
)
def test_invalid_raters_are_refused(raters, kwargs, match):
    kwargs = {"num_classes": 3, "tie_label": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        majority_vote(raters, **kwargs)


def test_tie_label_may_equal_ignore_label_to_leave_ties_unannotated():
    out = majority_vote([vol([[0, 1]]), vol([[0, 2]])], num_classes=3, tie_label=3, ignore_label=3)
    np.testing.assert_array_equal(out, vol([[0, 3]]))
