"""The ``clicks`` prompt style: positive balls per class, negative clicks kept as prompts."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from experts.scribbles import ClickPrompts, create_scribble_style

IGNORE = 5


def two_cubes():
    """Class 1 as two cubes, 7^3 centred at (5, 5, 5) and 5^3 centred at (14, 14, 14); [20, 20, 20]."""
    label = np.zeros((20, 20, 20), dtype=np.int64)
    label[2:9, 2:9, 2:9] = 1
    label[12:17, 12:17, 12:17] = 1
    return label


def clicked(style, label, seed=0, spacing=(1.0, 1.0, 1.0)):
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(seed), spacing=spacing)
    return params, style.apply(label, params, ignore_label=IGNORE, spacing=spacing)


def test_centre_clicks_go_to_distance_maxima_largest_component_first():
    style = ClickPrompts(mode="centre", n_positive=3, n_negative=0, background=False)
    params, _ = clicked(style, two_cubes())
    voxels = [c["voxel"] for c in params["positive"]]
    assert voxels[:2] == [[5, 5, 5], [14, 14, 14]]
    assert two_cubes()[tuple(voxels[2])] == 1 and voxels[2] != [5, 5, 5]  # the next round: the big cube again


@pytest.mark.parametrize("spacing, extent, count", [((1.0, 1.0, 1.0), (5, 5, 5), 33), ((1.0, 1.0, 3.0), (5, 5, 1), 13)])
def test_a_click_labels_a_ball_in_mm_with_fewer_voxels_along_a_coarse_axis(spacing, extent, count):
    label = np.ones((12, 12, 12), dtype=np.int64)
    style = ClickPrompts(mode="centre", radius_mm=2.0, n_negative=0, background=False)
    _, partial = clicked(style, label, spacing=spacing)
    ball = partial == 1
    assert ball.sum() == count  # 33 voxels within 2 mm on a 1 mm grid; a 13-voxel disk at 3 mm slices
    assert tuple(int(np.flatnonzero(ball.any(axis=tuple(a for a in range(3) if a != axis))).size)
                 for axis in range(3)) == extent


def test_positive_balls_are_clipped_to_their_class_and_stay_within_the_budget():
    label = two_cubes()
    style = ClickPrompts(mode="border", n_positive=4, radius_mm=3.0)
    footprint = ClickPrompts(mode="centre", radius_mm=3.0, n_negative=0)
    _, one = clicked(footprint, np.ones((9, 9, 9), dtype=np.int64))
    for seed in range(3):
        _, partial = clicked(style, label, seed)
        annotated = partial != IGNORE
        assert np.array_equal(partial[annotated], label[annotated])
        assert (partial == 1).sum() <= 4 * (one == 1).sum()


def test_border_clicks_lie_within_border_mm_of_the_edge():
    label = two_cubes()
    style = ClickPrompts(mode="border", n_positive=5, border_mm=1.5, n_negative=0)
    depth = ndi.distance_transform_edt(label == 1)
    for seed in range(3):
        params, _ = clicked(style, label, seed)
        for click in (c for c in params["positive"] if c["class"] == 1):
            assert depth[tuple(click["voxel"])] <= 1.5


def test_negative_clicks_are_recorded_near_their_class_and_label_nothing():
    label = two_cubes()
    style = ClickPrompts(n_positive=1, n_negative=3, negative_band_mm=2.0, background=False)
    params, partial = clicked(style, label)
    distance = ndi.distance_transform_edt(label != 1)
    assert len(params["negative"]) == 3
    for click in params["negative"]:
        voxel = tuple(click["voxel"])
        assert click["class"] == 1 and label[voxel] == 0 and 0 < distance[voxel] <= 2.0
        assert partial[voxel] == IGNORE
    assert set(np.unique(partial).tolist()) == {1, IGNORE}  # background=False: no background clicks


def test_a_one_voxel_class_gets_one_click_on_it():
    label = np.zeros((10, 10, 10), dtype=np.int64)
    label[4, 5, 6] = 1
    for mode in ("random", "centre", "border"):
        params, partial = clicked(ClickPrompts(mode=mode, n_positive=3), label)
        assert [c["voxel"] for c in params["positive"] if c["class"] == 1] == [[4, 5, 6]]
        assert (partial == 1).sum() == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "lasso"}, "mode must be one of 'random', 'centre', 'border'"),
    ({"n_positive": 0}, "n_positive must be an int >= 1"),
    ({"n_negative": -1}, "n_negative must be an int >= 0"),
    ({"radius_mm": 0}, "radius_mm must be a positive number of mm"),
    ({"background": "yes"}, "background must be True or False"),
])
def test_invalid_click_configuration_is_rejected(kwargs, message):
    with pytest.raises(ValueError) as info:
        create_scribble_style("clicks", **kwargs)
    assert message in str(info.value)
