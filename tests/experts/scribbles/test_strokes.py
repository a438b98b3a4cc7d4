"""The pipeline the stroke styles share (break, thicken in mm, deform, per-class budget) and ``line``.

Volumes are [X, Y, Z]; slice-mode params address a slice along ``axis`` and points in its plane.
"""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from experts.scribbles import LineScribbles, create_scribble_style, simulate_scribbles
from experts.scribbles.base import ellipsoid_footprint
from experts.scribbles.fields import break_mask, warp_mask
from experts.scribbles.strokes import thicken_mm, trim_to_budget

IGNORE = 5
STROKE_STYLES = ["line", "centreline", "contour"]


def nested_blobs(n=20):
    x, y, z = np.mgrid[:n, :n, :n] - (n - 1) / 2
    label = np.zeros((n, n, n), dtype=np.int64)
    label[(x / 0.9) ** 2 + y ** 2 + (z * 1.2) ** 2 < (0.4 * n) ** 2] = 1
    label[(x - 2) ** 2 + (y + 1) ** 2 + (z * 1.2) ** 2 < (0.18 * n) ** 2] = 2
    return label


def line_params(shape, units, **overrides):
    """Hand-written params of the line style: slice mode along Z, 1 mm strokes, no breaking or warp."""
    params = {"style": "line", "shape": list(shape), "spacing": [1.0, 1.0, 1.0], "mode": "slice", "axis": 2,
              "thickness_mm": 1.0, "break_mm": 6.0, "deform_mm": 0.0, "deform_smoothness_mm": 8.0,
              "max_voxels": None, "seed": 0, "units": units}
    return {**params, **overrides}


def c_shape():
    """A 'C' of class 1 on slice z=1 of [12, 12, 3], open towards +Y: arms at x=2..3 and x=8..9."""
    label = np.zeros((12, 12, 3), dtype=np.int64)
    label[2:4, 2:10, 1] = 1
    label[8:10, 2:10, 1] = 1
    label[2:10, 2:4, 1] = 1
    return label


def test_a_line_across_a_concave_structure_is_clipped_into_pieces():
    label = c_shape()
    params = line_params(label.shape, [{"slice": 1, "class": 1, "keep": 1.0, "points": [[2, 7], [9, 7]]}])
    partial = LineScribbles().apply(label, params, ignore_label=IGNORE)
    expected = np.full(label.shape, IGNORE)
    expected[[2, 3, 8, 9], 7, 1] = 1  # the segment x=2..9 at y=7, minus the gap x=4..7
    assert np.array_equal(partial, expected)


def test_line_passes_through_its_points_inside_the_structure():
    label = nested_blobs()
    style = LineScribbles(mode="3d", n_points=3)
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(3))
    partial = style.apply(label, params, ignore_label=IGNORE)
    for unit in params["units"]:
        assert len(unit["points"]) == 3 and unit["slice"] is None
        for point in unit["points"]:
            assert label[tuple(point)] == unit["class"] == partial[tuple(point)]


def test_thickness_in_mm_gives_fewer_voxels_across_a_coarse_axis():
    assert ellipsoid_footprint(2.0, (1.0, 1.0, 1.0)).shape == (5, 5, 5)
    assert ellipsoid_footprint(2.0, (1.0, 1.0, 3.0)).shape == (5, 5, 1)
    assert ellipsoid_footprint(0.4, (1.0, 1.0)).sum() == 1  # below a voxel: the stroke itself
    centre = np.zeros((16, 11, 11), dtype=bool)
    centre[2:14, 5, 5] = True
    region = np.ones_like(centre)
    iso = thicken_mm(centre, region, 4.0, (1.0, 1.0, 1.0))
    aniso = thicken_mm(centre, region, 4.0, (1.0, 1.0, 3.0))
    z_extent = [np.flatnonzero(m.any(axis=(0, 1))).size for m in (iso, aniso)]
    assert z_extent == [5, 1] and aniso.sum() < iso.sum()


def test_thick_strokes_stay_within_their_class():
    label = c_shape()
    params = line_params(label.shape, [{"slice": 1, "class": 1, "keep": 1.0, "points": [[2, 3], [2, 9]]}],
                         thickness_mm=5.0)
    partial = LineScribbles().apply(label, params, ignore_label=IGNORE)
    annotated = partial != IGNORE
    assert annotated.sum() > 8 and np.all(label[annotated] == 1)


def test_breaking_keeps_about_the_kept_fraction_in_pieces():
    centre = np.zeros((80, 9), dtype=bool)
    centre[5:75, 4] = True  # 70 px
    kept = break_mask(centre, 0.5, 4.0, (1.0, 1.0), np.random.default_rng(0))
    assert np.all(kept <= centre) and 33 <= kept.sum() <= 37
    assert ndi.label(kept)[1] >= 2
    assert np.array_equal(break_mask(centre, 1.0, 4.0, (1.0, 1.0), np.random.default_rng(0)), centre)


def test_warp_moves_a_stroke_by_at_most_its_magnitude():
    stroke = np.zeros((40, 40), dtype=bool)
    stroke[5:35, 20] = True
    moved = warp_mask(stroke, 3.0, 6.0, (1.0, 1.0), np.random.default_rng(1))
    distance = ndi.distance_transform_edt(~stroke)
    assert not np.array_equal(moved, stroke)
    assert distance[moved].max() <= 3.0 + np.sqrt(2) / 2  # before the caller's clip: grid rounding
    assert abs(int(moved.sum()) - 30) <= 6  # a smooth warp neither smears nor erases the stroke


@pytest.mark.parametrize("name", STROKE_STYLES)
def test_deformed_strokes_leave_the_structure_by_at_most_deform_mm(name):
    label, spacing = nested_blobs(), (1.0, 1.0, 2.0)
    plain = simulate_scribbles(label, ignore_label=IGNORE, style=name, seed=4, spacing=spacing)
    warped = simulate_scribbles(label, ignore_label=IGNORE, style=name, seed=4, spacing=spacing, deform_mm=2.5)
    annotated = warped != IGNORE
    assert not np.array_equal(plain, warped)
    assert (warped[annotated] != label[annotated]).any()  # strayed: the hand is not perfect
    for k in (0, 1, 2):
        assert ndi.distance_transform_edt(label != k, sampling=spacing)[warped == k].max() <= 2.5 + 1e-6


@pytest.mark.parametrize("name", ["line", "centreline", "contour"])
def test_slice_mode_strokes_stay_on_the_slices_of_their_params(name):
    label = nested_blobs()
    style = create_scribble_style(name, axis=0, deform_mm=2.0)
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0))
    partial = style.apply(label, params, ignore_label=IGNORE)
    slices = {u["slice"] for u in params["units"]}
    assert params["axis"] == 0
    assert set(np.flatnonzero((partial != IGNORE).any(axis=(1, 2)))) <= slices


@pytest.mark.parametrize("name", STROKE_STYLES)
def test_background_gets_strokes_as_well_as_every_structure(name):
    partial = simulate_scribbles(nested_blobs(), ignore_label=IGNORE, style=name, seed=0, density=0.5)
    assert set(np.unique(partial).tolist()) == {0, 1, 2, IGNORE}


def test_budget_caps_voxels_per_class_with_whole_pieces_first():
    mask = np.zeros((30, 5), dtype=bool)
    mask[0:3, 0] = True  # pieces of 3, 4 and 12 px
    mask[6:10, 0] = True
    mask[14:26, 2] = True
    for seed in range(5):
        trimmed = trim_to_budget(mask, 7, (1.0, 1.0), np.random.default_rng(seed))
        assert trimmed.sum() == 7 and np.all(trimmed <= mask)
        assert ndi.label(trimmed, structure=np.ones((3, 3)))[1] <= 2  # whole pieces and one cut piece
    assert trim_to_budget(mask, 19, (1.0, 1.0), np.random.default_rng(0)) is mask
    assert trim_to_budget(mask, None, (1.0, 1.0), np.random.default_rng(0)) is mask


def test_apply_rejects_params_made_for_another_spacing_or_shape():
    label = nested_blobs(16)
    style = LineScribbles()
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0), spacing=(1, 1, 3))
    with pytest.raises(ValueError, match="made for spacing"):
        style.apply(label, params, ignore_label=IGNORE)
    with pytest.raises(ValueError, match="made for a label of shape"):
        style.apply(nested_blobs(18), params, ignore_label=IGNORE, spacing=(1, 1, 3))
    with pytest.raises(ValueError, match="made by style 'line', not 'centreline'"):
        create_scribble_style("centreline").apply(label, params, ignore_label=IGNORE, spacing=(1, 1, 3))


def test_params_are_small_even_for_a_large_volume():
    label = np.zeros((96, 96, 48), dtype=np.int64)
    label[20:70, 30:60, 10:40] = 1
    params = LineScribbles(deform_mm=2.0).make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0))
    assert len(json.dumps(params)) < 4000  # fields are logged as seeds, not arrays


@pytest.mark.parametrize("name, kwargs, message", [
    ("line", {"thickness_mm": 0}, "thickness_mm must be a positive number of mm"),
    ("line", {"mode": "4d"}, "mode must be one of 'slice', '3d'"),
    ("line", {"n_points": 0}, "n_points must be an int >= 1"),
    ("line", {"keep_range": (0.8, 0.2)}, "keep_range must satisfy"),
    ("line", {"deform_mm": -1.0}, "deform_mm must be >= 0"),
    ("line", {"max_voxels": 0}, "max_voxels must be an int >= 1"),
    ("centreline", {"density": 0}, "density must be in (0, 1]"),
    ("centreline", {"axis": 3}, "axis must be an int in [-3, 2] or 'auto'"),
    ("centreline", {"break_mm": 0}, "break_mm must be a positive number of mm"),
    ("contour", {"mode": "3d"}, "unexpected keyword"),
    ("contour", {"level_range": (0.5, 1.0)}, "level_range must satisfy 0 < min <= max < 1"),
    ("contour", {"blur_mm": -2}, "blur_mm must be a positive number of mm"),
])
def test_invalid_configuration_is_rejected_with_a_clear_message(name, kwargs, message):
    with pytest.raises((ValueError, TypeError)) as info:
        create_scribble_style(name, **kwargs)
    assert message in str(info.value)


def test_invalid_spacing_is_rejected():
    with pytest.raises(ValueError, match="spacing must be three positive voxel sizes in mm"):
        simulate_scribbles(nested_blobs(16), ignore_label=IGNORE, style="line", spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing must be three"):
        simulate_scribbles(nested_blobs(16), ignore_label=IGNORE, style="line", spacing=(1.0, 1.0))
