"""STAPLE (SimpleITK): noisy raters get lower sensitivity, probabilities per class, degenerate classes, refusals."""

import numpy as np
import pytest

from experts.consensus import multi_label_staple, staple


def truth_volume():
    """[8, 9, 10] label volume, K = 3: a box of class 1 with a class-2 core."""
    t = np.zeros((8, 9, 10), np.int64)
    t[1:7, 2:8, 2:9] = 1
    t[3:5, 4:6, 4:7] = 2
    return t


def noisy(t, fraction, seed):
    rng = np.random.default_rng(seed)
    out = t.copy()
    flip = rng.random(t.shape) < fraction
    out[flip] = rng.integers(0, 3, int(flip.sum()))
    return out


def test_noisy_rater_gets_lower_sensitivity():
    t = truth_volume()
    result = staple([t, t, noisy(t, 0.3, seed=1)], num_classes=3)
    assert result.probabilities.shape == (3,) + t.shape
    assert result.labels.shape == t.shape
    np.testing.assert_array_equal(result.labels, t)  # two agreeing raters outvote the noisy one
    for c in (1, 2):
        clean = [result.profile[r][c]["sensitivity"].value for r in (0, 1)]
        bad = result.profile[2][c]["sensitivity"].value
        assert bad < min(clean) - 0.05
        assert result.profile[2][c]["specificity"].value < result.profile[0][c]["specificity"].value
    assert set(result.profile) == {0, 1, 2} and set(result.profile[0]) == {0, 1, 2}


def test_unanimous_raters_give_certain_probabilities():
    t = truth_volume()
    result = staple([t, t], num_classes=3)
    for c in range(3):
        np.testing.assert_allclose(result.probabilities[c], (t == c).astype(float))
        assert result.profile[0][c]["sensitivity"].value == pytest.approx(1.0)


def test_class_absent_in_every_rater_has_defined_output_without_nan():
    # [8, 9, 10], K = 4: class 3 is used by no rater; SimpleITK alone would return NaN
    t = truth_volume()
    result = staple([t, noisy(t, 0.1, seed=2), t], num_classes=4)
    assert not np.isnan(result.probabilities).any()
    np.testing.assert_array_equal(result.probabilities[3], 0.0)
    sens, spec = result.profile[0][3]["sensitivity"], result.profile[0][3]["specificity"]
    assert sens.value is None and "absent in every rater" in sens.reason
    assert spec.value == 1.0


def test_partial_rater_is_refused():
    t = truth_volume()
    partial = t.copy()
    partial[0] = 3
    with pytest.raises(ValueError, match="rater 1 is partial.*leave partial raters out"):
        staple([t, partial, t], num_classes=3, ignore_label=3)


def test_multi_label_staple_recovers_truth_and_keeps_axis_order():
    t = truth_volume()
    out = multi_label_staple([t, t, noisy(t, 0.3, seed=3)], num_classes=3, undecided_label=3)
    assert out.shape == t.shape
    np.testing.assert_array_equal(out, t)
