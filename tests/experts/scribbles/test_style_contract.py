"""The contract every registered scribble / prompt style keeps, checked over the whole registry.

Each style runs with its defaults, with a deformation and a voxel budget where it has them, and with
the variants below, on four tiny labels [X, Y, Z] (nested blobs, a class absent, one-voxel
structures, background only) at isotropic and anisotropic spacing. A style registered later is
covered by its defaults without touching this file.
"""

import functools
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from experts.scribbles import create_scribble_style, list_habits, list_scribble_styles

IGNORE = 7
SPACINGS = {"iso": (1.0, 1.0, 1.0), "aniso": (1.0, 1.0, 3.0)}
VARIANTS = {  # configurations besides the defaults, for the registered styles that have modes
    "line": [{"mode": "3d"}],
    "centreline": [{"mode": "3d"}],
    "clicks": [{"mode": "centre", "n_positive": 2}, {"mode": "border", "background": False}],
    "box": [{"mode": "2d"}],
    "slices": [{"placement": "even"}],
}
DEFORM_MM, BUDGET = 2.0, 15


def nested_blobs(n=20):
    """Classes 0, 1 (an ellipsoidal shell) and 2 (its off-centre core); [n, n, n]."""
    x, y, z = np.mgrid[:n, :n, :n] - (n - 1) / 2
    label = np.zeros((n, n, n), dtype=np.int64)
    label[(x / 0.9) ** 2 + y ** 2 + (z * 1.2) ** 2 < (0.4 * n) ** 2] = 1
    label[(x - 2) ** 2 + (y + 1) ** 2 + (z * 1.2) ** 2 < (0.18 * n) ** 2] = 2
    return label


def class_absent():
    """Classes 0 and 2 only: class 1 is empty."""
    label = nested_blobs(16)
    label[label == 1] = 0
    return label


def one_voxel_structures():
    """A single voxel of class 1 and one of class 2 (on the border) in background."""
    label = np.zeros((16, 16, 16), dtype=np.int64)
    label[8, 8, 8] = 1
    label[0, 12, 5] = 2
    return label


def background_only():
    return np.zeros((16, 16, 12), dtype=np.int64)


LABELS = {"nested_blobs": nested_blobs, "class_absent": class_absent, "one_voxel": one_voxel_structures,
          "background_only": background_only}


def configs(name):
    """The configurations the contract runs for style ``name``."""
    if name == "habit":
        return [{"habit": habit} for habit in list_habits()]
    keys = create_scribble_style(name).get_params()
    extra = [{"deform_mm": DEFORM_MM}] if "deform_mm" in keys else []
    extra += [{"max_voxels": BUDGET}] if "max_voxels" in keys else []
    return [{}] + VARIANTS.get(name, []) + extra


STYLE_CONFIGS = [(name, json.dumps(cfg)) for name in list_scribble_styles() for cfg in configs(name)]
CASES = [pytest.param(name, cfg, lab, sp, id=f"{name}{cfg}-{lab}-{sp}")
         for name, cfg in STYLE_CONFIGS for lab in LABELS for sp in SPACINGS]


@functools.lru_cache(maxsize=None)
def simulate(name, config, label_name, spacing_name, seed=0):
    """(label, style, params, partial, records), cached: tests only read them."""
    label, spacing = LABELS[label_name](), SPACINGS[spacing_name]
    style = create_scribble_style(name, **json.loads(config))
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(seed), spacing=spacing)
    partial, records = style.apply(label, params, ignore_label=IGNORE, spacing=spacing, return_strokes=True)
    return label, style, params, partial, records


def test_every_registered_style_is_covered():
    covered = {name for name, _ in STYLE_CONFIGS}
    assert covered == set(list_scribble_styles())
    assert {"slicewise", "line", "centreline", "contour", "clicks", "box", "slices", "habit"} <= covered


@pytest.mark.parametrize("name, config, label_name, spacing_name", CASES)
def test_annotations_stay_in_their_structure_up_to_the_deformation_budget(name, config, label_name, spacing_name):
    label, style, params, partial, _ = simulate(name, config, label_name, spacing_name)
    assert partial.shape == label.shape and partial.dtype == np.uint8
    stray = style.max_stray_mm(params)
    if "deform_mm" in config:
        assert stray == DEFORM_MM
    annotated = partial != IGNORE
    if stray == 0:  # truthful: every annotated voxel carries its class; a box never cuts a structure
        assert np.array_equal(partial[annotated], label[annotated])
        return
    for k in np.unique(partial[annotated]).tolist():
        distance = ndi.distance_transform_edt(label != k, sampling=SPACINGS[spacing_name])
        assert (label == k).any() and distance[partial == k].max() <= stray + 1e-6


@pytest.mark.parametrize("name, config, label_name, spacing_name", CASES)
def test_same_seed_same_params_and_params_replay_through_json(name, config, label_name, spacing_name):
    label, style, params, partial, _ = simulate(name, config, label_name, spacing_name)
    spacing = SPACINGS[spacing_name]
    again = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0), spacing=spacing)
    assert again == params
    restored = json.loads(json.dumps(again))
    assert np.array_equal(style.apply(label, restored, ignore_label=IGNORE, spacing=spacing), partial)


@pytest.mark.parametrize("name, config", STYLE_CONFIGS)
def test_another_seed_draws_other_params(name, config):
    _, _, params, _, _ = simulate(name, config, "nested_blobs", "iso", seed=0)
    assert any(simulate(name, config, "nested_blobs", "iso", seed=s)[2] != params for s in (1, 2))


@pytest.mark.parametrize("name, config, label_name, spacing_name", CASES)
def test_stroke_records_cover_exactly_the_annotated_voxels(name, config, label_name, spacing_name):
    label, _, _, partial, records = simulate(name, config, label_name, spacing_name)
    union = np.zeros(label.shape, dtype=bool)
    for record in records:
        if record.axis is None:
            union |= record.mask
        else:
            np.moveaxis(union, record.axis, 0)[record.slice_index] |= record.mask
    assert np.array_equal(union, partial != IGNORE)


@pytest.mark.parametrize("name, config, label_name, spacing_name",
                         [case for case in CASES if "max_voxels" in case.values[1]])
def test_voxel_budget_caps_every_class(name, config, label_name, spacing_name):
    label, _, _, partial, _ = simulate(name, config, label_name, spacing_name)
    counts = np.bincount(partial[partial != IGNORE], minlength=3)
    assert counts.max() <= BUDGET
    unlimited = simulate(name, "{}", label_name, spacing_name)[3]  # same random draws, no cap
    assert np.all((partial != IGNORE) <= (unlimited != IGNORE))


@pytest.mark.parametrize("name, config", STYLE_CONFIGS)
def test_structures_get_annotated_and_empty_classes_do_not(name, config):
    label, _, _, partial, _ = simulate(name, config, "class_absent", "iso")
    assert not (partial == 1).any()  # class 1 is absent
    assert (partial != IGNORE).any()
