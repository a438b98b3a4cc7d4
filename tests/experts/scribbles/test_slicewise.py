"""The slicewise scribble style (ScribbleBench) on small synthetic dense labels.

Connectivity checks use 2D 8-connectivity, as the simulator does.
"""

import functools
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from experts.scribbles import SlicewiseScribbles, simulate_scribbles

IGNORE = 9
EIGHT = np.ones((3, 3), dtype=bool)


def nested_spheres(n=24):
    """Classes 0 (background), 1 (shell), 2 (core); the spheres miss the first and last slices."""
    x, y, z = np.mgrid[:n, :n, :n] - (n - 1) / 2
    r = np.sqrt(x**2 + y**2 + (z * 1.3) ** 2)
    label = np.zeros((n, n, n), dtype=np.int16)
    label[r < n * 0.4] = 1
    label[r < n * 0.2] = 2
    return label


def two_blobs(n=24):
    """Two separate balls of class 1 and a box of class 2, as float (whole values)."""
    x, y, z = np.mgrid[:n, :n, :n]
    label = np.zeros((n, n, n), dtype=np.float32)
    label[(x - 6) ** 2 + (y - 6) ** 2 + (z - 12) ** 2 < 25] = 1
    label[(x - 17) ** 2 + (y - 16) ** 2 + (z - 12) ** 2 < 36] = 1
    label[3:9, 14:21, 2:20] = 2
    return label


def thin_structures(n=20):
    """A 1-px tube (class 1), a 2-px plate (class 2) and single voxels (class 3)."""
    label = np.zeros((n, n, n), dtype=np.uint8)
    label[10, 10, :] = 1
    label[3:17, 2:4, 4:16] = 2
    label[15, 15, ::3] = 3
    return label


def thin_ring_and_zigzag(n=24):
    """A 2-px ring (class 1) and a 1-px zigzag (class 2): smoothing must not break strokes apart."""
    x, y = np.mgrid[:n, :n] - (n - 1) / 2
    r = np.hypot(x, y)
    plane = np.zeros((n, n), dtype=np.int64)
    plane[(r >= 7) & (r < 9)] = 1
    rows = np.arange(3, n - 3)
    plane[rows, 3 + np.abs((rows % 8) - 4)] = 2
    return np.repeat(plane[:, :, None], 8, axis=2)


LABELS = {"nested_spheres": nested_spheres, "two_blobs": two_blobs, "thin_structures": thin_structures,
          "thin_ring_and_zigzag": thin_ring_and_zigzag}
CONFIGS = {
    "defaults": {},
    "thin_strokes": {"thickness": 1},
    "half_density_axis0": {"density": 0.5, "axis": 0},
    "thick_auto_axis": {"thickness": 5, "axis": "auto", "erosion_range": (1, 3)},
}
CASES = [(lab, cfg) for lab in LABELS for cfg in CONFIGS]


@functools.lru_cache(maxsize=None)
def simulate(label_name, config_name, seed=0):
    """(label, style, params, partial, strokes), cached: tests only read them."""
    label = LABELS[label_name]()
    style = SlicewiseScribbles(**CONFIGS[config_name])
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(seed))
    partial, strokes = style.apply(label, params, ignore_label=IGNORE, return_strokes=True)
    return label, style, params, partial, strokes


def component_of(plane, stroke):
    """The 8-connected component of the stroke's class that contains the whole stroke."""
    comps, _ = ndi.label(plane == stroke.class_id, structure=EIGHT)
    ids = np.unique(comps[stroke.mask])
    assert len(ids) == 1 and ids[0] > 0, "a stroke spans several components or leaves its class"
    return comps == ids[0]


@pytest.mark.parametrize("label_name, config_name", CASES)
def test_every_annotated_voxel_carries_its_true_class(label_name, config_name):
    label, _, _, partial, _ = simulate(label_name, config_name)
    annotated = partial != IGNORE
    assert annotated.any()
    assert np.array_equal(partial[annotated], label[annotated])
    assert partial.dtype == np.uint8 and partial.shape == label.shape


@pytest.mark.parametrize("label_name, config_name", CASES)
def test_each_stroke_is_one_8_connected_piece_inside_one_component(label_name, config_name):
    label, _, params, _, strokes = simulate(label_name, config_name)
    for stroke in strokes:
        plane = np.take(label, stroke.slice_index, axis=params["axis"])
        assert ndi.label(stroke.mask, structure=EIGHT)[1] == 1, stroke
        component_of(plane, stroke)


@pytest.mark.parametrize("label_name, config_name", CASES)
def test_boundary_strokes_lie_in_the_band_of_the_eroded_contour(label_name, config_name):
    label, style, params, _, strokes = simulate(label_name, config_name)
    for stroke in (s for s in strokes if s.kind == "boundary"):
        assert 1 <= stroke.erosion <= style.erosion_range[1]
        component = component_of(np.take(label, stroke.slice_index, axis=params["axis"]), stroke)
        eroded = ndi.distance_transform_edt(component) > stroke.erosion
        contour = eroded & ~ndi.binary_erosion(eroded, border_value=1)  # image border is no contour
        distance = ndi.distance_transform_edt(~contour)[stroke.mask]
        assert distance.max() <= style.thickness / 2 + 1e-6


def test_boundary_stroke_sits_at_a_corner_of_a_box():
    label = np.zeros((32, 32, 6), dtype=np.uint8)
    label[4:28, 4:28] = 1
    for seed in range(3):
        _, strokes = SlicewiseScribbles().apply(
            label, SlicewiseScribbles().make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(seed)),
            ignore_label=IGNORE, return_strokes=True)
        for stroke in (s for s in strokes if s.kind == "boundary" and s.class_id == 1):
            lo, hi = 4 + stroke.erosion, 27 - stroke.erosion
            corners = np.array([[lo, lo], [lo, hi], [hi, lo], [hi, hi]])
            pixels = np.argwhere(stroke.mask)
            assert np.abs(pixels[:, None] - corners[None]).max(-1).min() <= 1


@pytest.mark.parametrize("label_name, config_name", CASES)
def test_every_class_on_an_annotated_slice_gets_a_stroke_and_other_slices_are_ignore(label_name, config_name):
    label, _, params, partial, _ = simulate(label_name, config_name)
    axis = params["axis"]
    annotated = {s["index"] for s in params["slices"]}
    for index in range(label.shape[axis]):
        plane, out = np.take(label, index, axis=axis), np.take(partial, index, axis=axis)
        if index in annotated:
            assert set(np.unique(out)) - {IGNORE} == set(np.unique(plane).tolist())
        else:
            assert np.all(out == IGNORE)


@pytest.mark.parametrize("label_name", list(LABELS))
def test_background_gets_interior_and_boundary_strokes(label_name):
    _, _, _, partial, strokes = simulate(label_name, "defaults")
    assert (partial == 0).any()
    assert {s.kind for s in strokes if s.class_id == 0} == {"interior", "boundary"}


def test_tiny_components_get_one_pixel_interior_strokes_and_no_boundary():
    label, _, params, partial, strokes = simulate("thin_structures", "defaults")
    dots = [s for s in strokes if s.class_id == 3]
    assert dots and all(s.kind == "interior" and s.mask.sum() == 1 for s in dots)
    assert np.all(partial[label == 3] == 3)  # each single voxel is annotated on its slice


def test_same_seed_same_output_and_different_seed_different_output():
    label = nested_spheres()
    first = simulate_scribbles(label, ignore_label=IGNORE, seed=3)
    assert np.array_equal(first, simulate_scribbles(label, ignore_label=IGNORE, seed=3))
    assert not np.array_equal(first, simulate_scribbles(label, ignore_label=IGNORE, seed=4))


@pytest.mark.parametrize("label_name", list(LABELS))
def test_params_are_json_and_apply_reproduces_the_output(label_name):
    label, style, params, partial, strokes = simulate(label_name, "half_density_axis0", seed=7)
    restored = json.loads(json.dumps(params))
    assert np.array_equal(style.apply(label, restored, ignore_label=IGNORE), partial)
    assert np.array_equal(simulate_scribbles(label, ignore_label=IGNORE, seed=7, density=0.5, axis=0), partial)
    union = np.zeros(label.shape, dtype=bool)
    for s in strokes:
        np.moveaxis(union, s.axis, 0)[s.slice_index] |= s.mask
    assert np.array_equal(union, partial != IGNORE)


def test_density_sets_the_number_of_annotated_slices_and_defaults_annotate_little():
    label = nested_spheres(32)
    counts = []
    for density in (0.1, 0.5, 1.0):
        style = SlicewiseScribbles(density=density)
        counts.append(len(style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0))["slices"]))
    assert counts[0] < counts[1] < counts[2] == 32
    assert (simulate_scribbles(label, ignore_label=IGNORE) != IGNORE).mean() < 0.3


def test_axis_auto_picks_the_axis_with_most_slices_and_thinner_strokes_annotate_less():
    label = nested_spheres(24)[:, :20, :16]
    params = SlicewiseScribbles(axis="auto").make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0))
    assert params["axis"] == 0 and {s["index"] for s in params["slices"]} == set(range(24))
    thin = simulate_scribbles(label, ignore_label=IGNORE, thickness=1)
    thick = simulate_scribbles(label, ignore_label=IGNORE, thickness=3)
    assert (thin != IGNORE).sum() < (thick != IGNORE).sum()


def test_large_ignore_label_gives_uint16():
    out = simulate_scribbles(nested_spheres(16), ignore_label=300)
    assert out.dtype == np.uint16 and set(np.unique(out)) == {0, 1, 2, 300}


@pytest.mark.parametrize("label, kwargs, message", [
    (np.zeros((8, 8), int), {}, "must be a 3D array"),
    (np.zeros((2, 8, 8, 8), int), {}, "must be a 3D array"),
    (np.full((8, 8, 8), IGNORE), {}, "already contains the ignore value"),
    (np.full((8, 8, 8), 0.5), {}, "whole numbers"),
    (np.full((8, 8, 8), -1), {}, ">= 0"),
    (np.zeros((8, 8, 8), int), {"density": 0}, "density must be in (0, 1], got 0"),
    (np.zeros((8, 8, 8), int), {"density": 1.5}, "density must be in (0, 1]"),
    (np.zeros((8, 8, 8), int), {"thickness": 0}, "thickness must be an int >= 1"),
    (np.zeros((8, 8, 8), int), {"axis": 3}, "axis must be"),
    (np.zeros((8, 8, 8), int), {"erosion_range": (5, 2)}, "erosion_range[1] must be an int >= 5"),
    (np.zeros((8, 8, 8), int), {"arc_fraction_range": (0.2, 0.1)}, "arc_fraction_range must satisfy"),
])
def test_invalid_input_is_rejected_with_a_clear_message(label, kwargs, message):
    with pytest.raises(ValueError) as info:
        simulate_scribbles(label, ignore_label=IGNORE, **kwargs)
    assert message in str(info.value)


def test_apply_rejects_params_made_for_another_shape_and_make_params_wants_a_generator():
    style = SlicewiseScribbles()
    params = style.make_params(nested_spheres(16), ignore_label=IGNORE, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="made for a label of shape"):
        style.apply(nested_spheres(18), params, ignore_label=IGNORE)
    with pytest.raises(TypeError, match="Generator"):
        style.make_params(nested_spheres(16), ignore_label=IGNORE, rng=0)
