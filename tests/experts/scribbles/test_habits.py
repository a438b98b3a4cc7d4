"""Annotator habits: registry, the union rule, per-case component draws and the ``habit`` style."""

import json

import numpy as np
import pytest

from experts.scribbles import create_scribble_style, list_habits, register_habit, simulate_habit, simulate_scribbles
from experts.scribbles.habits import HABITS, HabitComponent, get_habit

IGNORE = 5


def nested_blobs(n=20):
    x, y, z = np.mgrid[:n, :n, :n] - (n - 1) / 2
    label = np.zeros((n, n, n), dtype=np.int64)
    label[(x / 0.9) ** 2 + y ** 2 + (z * 1.2) ** 2 < (0.4 * n) ** 2] = 1
    label[(x - 2) ** 2 + (y + 1) ** 2 + (z * 1.2) ** 2 < (0.18 * n) ** 2] = 2
    return label


@pytest.fixture
def habit():
    """Registers habits for one test and removes them afterwards."""
    names = []

    def make(name, components):
        register_habit(name, components)
        names.append(name)
        return name

    yield make
    for name in names:
        HABITS._factories.pop(name)


def test_the_documented_habits_are_registered():
    assert {"sparse-centreline", "contour-tracer", "box-then-clicks", "quick-lines"} <= set(list_habits())
    assert get_habit("box-then-clicks").components[0] == HabitComponent("box", {"jitter_mm": 3.0}, 1.0)


def test_a_habit_is_a_style_by_name_and_simulate_habit_is_its_shortcut():
    label = nested_blobs()
    by_style = simulate_scribbles(label, ignore_label=IGNORE, style="habit", habit="contour-tracer", seed=3,
                                  spacing=(1, 1, 2))
    assert np.array_equal(by_style, simulate_habit(label, habit="contour-tracer", ignore_label=IGNORE, seed=3,
                                                   spacing=(1, 1, 2)))
    assert create_scribble_style("habit", habit="quick-lines").get_params() == {"habit": "quick-lines"}


def test_stroke_classes_win_over_box_background_whatever_the_order(habit):
    label = np.zeros((20, 20, 20), dtype=np.int64)
    label[5:15, 5:15, 5:15] = 1  # its tight box is itself: a stroke straying out of it meets box background
    name = habit("wobbly-lines-in-boxes", [("line", {"mode": "3d", "n_strokes": 3, "deform_mm": 3.0}, 1.0),
                                           ("box", {"jitter_mm": 0.0}, 1.0)])
    style = create_scribble_style("habit", habit=name)
    params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(0))
    partial = style.apply(label, params, ignore_label=IGNORE)
    lines_params, box_params = (c["params"] for c in params["components"])
    lines = create_scribble_style("line").apply(label, lines_params, ignore_label=IGNORE)
    box = create_scribble_style("box").apply(label, box_params, ignore_label=IGNORE)
    stroked = lines != IGNORE
    assert ((lines == 1) & (box == 0)).any()  # a class-1 stroke strayed into box background ...
    assert np.array_equal(partial[stroked], lines[stroked])  # ... and keeps its class
    assert np.array_equal(partial[~stroked], box[~stroked])
    assert style.max_stray_mm(params) == 3.0


def test_each_case_draws_its_components_by_weight(habit):
    label = nested_blobs(16)
    name = habit("slices-sometimes-clicks", [("slices", {"n_slices": 1}, 1.0), ("clicks", {}, 0.5)])
    style = create_scribble_style("habit", habit=name)
    used = []
    for seed in range(12):
        params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(seed))
        slices, clicks = params["components"]
        assert slices["params"] is not None
        used.append(clicks["params"] is not None)
        partial = style.apply(label, json.loads(json.dumps(params)), ignore_label=IGNORE)
        assert np.array_equal(partial[partial != IGNORE], label[partial != IGNORE])
    assert 0 < sum(used) < 12


def test_a_habit_whose_weights_all_miss_still_uses_its_heaviest_component(habit):
    name = habit("rarely-anything", [("clicks", {}, 0.01), ("slices", {}, 0.02)])
    params = create_scribble_style("habit", habit=name).make_params(nested_blobs(16), ignore_label=IGNORE,
                                                                     rng=np.random.default_rng(0))
    assert [c["params"] is not None for c in params["components"]] == [False, True]


@pytest.mark.parametrize("components, message", [
    ([], "has no components"),
    ([("habit", {}, 1.0)], "may not be a habit"),
    ([("lasso", {}, 1.0)], "unknown scribble style 'lasso'"),
    ([("clicks", {}, 0.0)], "weight of 'clicks' must be in (0, 1]"),
    ([("clicks", {"radius_mm": np.float32(2)}, 1.0)], "must be JSON-serialisable"),
    ([("line", {"thickness_mm": -1}, 1.0)], "thickness_mm must be a positive number of mm"),
])
def test_invalid_habits_are_rejected_with_a_clear_message(components, message):
    with pytest.raises(ValueError) as info:
        register_habit("broken", components)
    assert message in str(info.value)
    assert "broken" not in list_habits()


def test_unknown_habit_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown annotator habit 'doodler'; known: .*box-then-clicks"):
        simulate_habit(nested_blobs(16), habit="doodler", ignore_label=IGNORE)
