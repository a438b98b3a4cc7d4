"""The ``box`` prompt style (background outside all boxes) and the ``slices`` style (k dense slices)."""

import numpy as np
import pytest

from experts.scribbles import BoxPrompts, SlicePrompts, create_scribble_style

IGNORE = 5


def two_classes():
    """Class 1 at [2:6, 3:8, 4:9], class 2 at [10:14, 9:12, 2:5]; [16, 16, 12]."""
    label = np.zeros((16, 16, 12), dtype=np.int64)
    label[2:6, 3:8, 4:9] = 1
    label[10:14, 9:12, 2:5] = 2
    return label


def draw(style, label, seed=0, spacing=(1.0, 1.0, 1.0)):
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(seed), spacing=spacing)
    return params, style.apply(label, params, ignore_label=IGNORE, spacing=spacing)


def test_a_tight_box_annotates_background_outside_all_boxes_and_ignore_inside():
    label = two_classes()
    params, partial = draw(BoxPrompts(jitter_mm=0.0), label)
    assert params["boxes"] == [{"class": 1, "lower": [2, 3, 4], "upper": [5, 7, 8]},
                               {"class": 2, "lower": [10, 9, 2], "upper": [13, 11, 4]}]
    expected = np.zeros(label.shape, dtype=np.int64)
    expected[2:6, 3:8, 4:9] = IGNORE
    expected[10:14, 9:12, 2:5] = IGNORE
    assert np.array_equal(partial, expected)  # 16*16*12 - 100 - 36 background voxels


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 3.0)])
def test_jitter_only_grows_a_box_by_at_most_jitter_mm(spacing):
    label, jitter = two_classes(), 5.0
    tight = {b["class"]: b for b in draw(BoxPrompts(jitter_mm=0.0), label)[0]["boxes"]}
    grown = np.zeros(3, dtype=int)
    for seed in range(6):
        params, partial = draw(BoxPrompts(jitter_mm=jitter), label, seed, spacing)
        assert not ((label > 0) & (partial == 0)).any()  # a box never cuts its structure
        for box in params["boxes"]:
            below = np.subtract(tight[box["class"]]["lower"], box["lower"])
            above = np.subtract(box["upper"], tight[box["class"]]["upper"])
            limit = np.floor(jitter / np.asarray(spacing)).astype(int)
            assert np.all(below >= 0) and np.all(above >= 0)
            assert np.all(below <= limit) and np.all(above <= limit)
            grown = np.maximum(grown, np.maximum(below, above))
    assert grown[0] >= 2 and grown[2] <= (1 if spacing[2] == 3.0 else 5)


def test_a_2d_box_annotates_only_its_slice_which_holds_foreground():
    label = two_classes()
    params, partial = draw(BoxPrompts(mode="2d", axis=-1, jitter_mm=0.0), label, seed=2)
    index = params["slice"]
    assert params["axis"] == 2 and (label[:, :, index] > 0).any()
    assert np.all(np.delete(partial, index, axis=2) == IGNORE)
    plane = partial[:, :, index]
    assert np.array_equal(plane == IGNORE, label[:, :, index] > 0)  # a box per class on the slice, tight


def test_without_foreground_the_box_style_annotates_all_background():
    label = np.zeros((8, 8, 8), dtype=np.int64)
    params, partial = draw(BoxPrompts(), label)
    assert params["boxes"] == [] and np.all(partial == 0)


def test_apply_rejects_a_box_that_misses_its_structure():
    label = two_classes()
    params, _ = draw(BoxPrompts(jitter_mm=0.0), label)
    params["boxes"][0]["upper"] = [4, 7, 8]
    with pytest.raises(ValueError, match="reaches outside its box"):
        BoxPrompts().apply(label, params, ignore_label=IGNORE)


def test_k_slices_are_fully_labelled_and_the_rest_is_ignore():
    label = two_classes()
    params, partial = draw(SlicePrompts(n_slices=3, axis=0), label)
    assert len(params["slices"]) == 3
    for index in range(label.shape[0]):
        if index in params["slices"]:
            assert (label[index] > 0).any() and np.array_equal(partial[index], label[index])
        else:
            assert np.all(partial[index] == IGNORE)


def test_even_placement_spreads_the_slices_over_the_foreground():
    label = np.zeros((8, 8, 30), dtype=np.int64)
    label[2:6, 2:6, 3:27] = 1  # 24 foreground slices
    for seed in range(4):
        params, _ = draw(SlicePrompts(n_slices=4, placement="even"), label, seed)
        gaps = np.diff(params["slices"])
        assert len(gaps) == 3 and np.all(gaps == 6)


def test_fewer_foreground_slices_than_k_labels_them_all():
    label = np.zeros((8, 8, 10), dtype=np.int64)
    label[3, 3, [2, 7]] = 1
    params, _ = draw(SlicePrompts(n_slices=5), label)
    assert params["slices"] == [2, 7]


@pytest.mark.parametrize("name, kwargs, message", [
    ("box", {"mode": "1d"}, "mode must be '3d' or '2d'"),
    ("box", {"jitter_mm": -1}, "jitter_mm must be a number of mm >= 0"),
    ("slices", {"n_slices": 0}, "n_slices must be an int >= 1"),
    ("slices", {"placement": "middle"}, "placement must be 'random' or 'even'"),
    ("slices", {"axis": 5}, "axis must be an int in [-3, 2] or 'auto'"),
])
def test_invalid_configuration_is_rejected(name, kwargs, message):
    with pytest.raises(ValueError) as info:
        create_scribble_style(name, **kwargs)
    assert message in str(info.value)
