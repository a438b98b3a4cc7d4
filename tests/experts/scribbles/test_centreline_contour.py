"""The ``centreline`` (skeleton) and ``contour`` (outline inside the boundary) stroke styles."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from experts.scribbles import CentrelineScribbles, ContourScribbles

IGNORE = 5
EXACT = {"keep_range": (1.0, 1.0), "thickness_mm": 1.0}  # whole, 1-voxel strokes


def params_for(style_name, label, units, **overrides):
    """Hand-written slice-mode params along Z at 1 mm, no breaking, warp or budget."""
    params = {"style": style_name, "shape": list(label.shape), "spacing": [1.0, 1.0, 1.0], "mode": "slice",
              "axis": 2, "thickness_mm": 1.0, "break_mm": 6.0, "deform_mm": 0.0, "deform_smoothness_mm": 8.0,
              "max_voxels": None, "seed": 0, "units": units}
    return {**params, **overrides}


def test_centreline_of_a_bar_runs_along_its_middle_row():
    label = np.zeros((13, 16, 3), dtype=np.int64)
    label[4:9, 2:14, 1] = 1  # 5 x 12 bar, middle row x=6
    params = params_for("centreline", label, [{"slice": 1, "class": 1, "keep": 1.0}])
    partial = CentrelineScribbles().apply(label, params, ignore_label=IGNORE)
    xs, _ = np.nonzero(partial[:, :, 1] == 1)
    assert np.abs(xs - 6).max() <= 1 and (xs == 6).sum() >= 6  # thinning may bend at an end


def tube(n=24):
    """A tube of radius 2.5 along Z (class 1), [n, n, n]."""
    x, y, _ = np.mgrid[:n, :n, :n]
    label = np.zeros((n, n, n), dtype=np.int64)
    label[(x - 11) ** 2 + (y - 12) ** 2 <= 6.25] = 1
    label[:, :, :2] = label[:, :, -2:] = 0
    return label


def test_3d_centreline_of_a_tube_follows_its_axis():
    label = tube()
    style = CentrelineScribbles(mode="3d", **EXACT)
    partial = style.apply(label, style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0)),
                          ignore_label=IGNORE)
    x, y, z = np.nonzero(partial == 1)
    assert np.hypot(x - 11, y - 12).max() <= 1.5
    assert z.max() - z.min() >= 12  # runs along most of the tube, across slices


def test_a_blob_gets_a_medial_path_where_3d_thinning_collapses_it_to_a_point():
    n = 20
    x, y, z = np.mgrid[:n, :n, :n] - 9.5
    label = ((x / 1.6) ** 2 + y ** 2 + z ** 2 < 25).astype(np.int64)  # an ellipsoid, long along X
    style = CentrelineScribbles(mode="3d", **EXACT)
    partial = style.apply(label, style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0)),
                          ignore_label=IGNORE)
    xs = np.nonzero(partial == 1)[0]
    assert xs.max() - xs.min() >= 12 and (partial == 1).sum() < 30  # a curve along the long axis


def test_a_shell_gets_a_curve_not_its_medial_surface():
    n = 20
    x, y, z = np.mgrid[:n, :n, :n] - 9.5
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    label = np.zeros((n, n, n), dtype=np.int64)
    label[r < 8] = 1
    label[r < 4] = 2
    style = CentrelineScribbles(mode="3d", **EXACT)
    partial = style.apply(label, style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0)),
                          ignore_label=IGNORE)
    shell = partial == 1
    assert 6 <= shell.sum() <= 40  # the medial surface of this shell has hundreds of voxels
    assert (partial == 0).sum() <= 60  # so does the background's, around the shell


def test_centreline_is_broken_into_pieces():
    n = 32
    x, y = np.mgrid[:n, :n] - 15.5
    ring = (np.hypot(x, y) >= 9) & (np.hypot(x, y) < 13)
    label = np.repeat(ring[:, :, None], 3, axis=2).astype(np.int64)
    params = params_for("centreline", label, [{"slice": 1, "class": 1, "keep": 0.5}], break_mm=3.0)
    whole = params_for("centreline", label, [{"slice": 1, "class": 1, "keep": 1.0}])
    broken = CentrelineScribbles().apply(label, params, ignore_label=IGNORE)[:, :, 1] == 1
    full = CentrelineScribbles().apply(label, whole, ignore_label=IGNORE)[:, :, 1] == 1
    assert np.all(broken <= full) and 0.4 <= broken.sum() / full.sum() <= 0.6
    assert ndi.label(broken, structure=np.ones((3, 3)))[1] >= 2


def square(n=20):
    label = np.zeros((n, n, 3), dtype=np.int64)
    label[4:16, 4:16, 1] = 1
    return label


def test_contour_is_a_closed_outline_just_inside_the_boundary():
    label = square()
    params = params_for("contour", label, [{"slice": 1, "class": 1, "keep": 1.0, "level": 0.6}], blur_mm=1.0)
    outline = ContourScribbles().apply(label, params, ignore_label=IGNORE)[:, :, 1] == 1
    depth = ndi.distance_transform_edt(label[:, :, 1] == 1)
    assert outline.any() and depth[outline].max() <= 3  # near the edge, inside
    assert not outline[8:12, 8:12].any()  # not in the middle
    enclosed = ndi.binary_fill_holes(outline)
    assert enclosed[10, 10]  # closed: it surrounds the middle


def test_a_higher_level_moves_the_contour_inwards():
    label = square()
    depths = []
    for level in (0.55, 0.95):
        params = params_for("contour", label, [{"slice": 1, "class": 1, "keep": 1.0, "level": level}], blur_mm=2.0)
        outline = ContourScribbles().apply(label, params, ignore_label=IGNORE)[:, :, 1] == 1
        depths.append(ndi.distance_transform_edt(label[:, :, 1] == 1)[outline].mean())
    assert depths[0] < depths[1]


def test_the_image_border_is_no_contour_and_full_slices_get_none():
    label = np.zeros((16, 16, 4), dtype=np.int64)
    label[:8, :, 1:3] = 1  # the left half of slices 1-2; slices 0 and 3 are pure background
    style = ContourScribbles(density=1.0, **EXACT)
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0))
    assert {u["slice"] for u in params["units"]} == {1, 2}  # a class filling its slice has no outline
    partial = style.apply(label, params, ignore_label=IGNORE)
    xs = np.nonzero(partial[:, :, 1] == 1)[0]
    assert xs.min() >= 5  # only along the inner edge x=7, not along the image border


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 2.0, 1.0)])
def test_contour_blur_is_in_mm(spacing):
    label = square(24)
    style = ContourScribbles(density=1.0, blur_mm=2.0, **EXACT)
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0), spacing=spacing)
    partial = style.apply(label, params, ignore_label=IGNORE, spacing=spacing)
    assert np.array_equal(partial[partial != IGNORE], label[partial != IGNORE])
    assert (partial == 1).any()
