"""The scribble-style registry (the contract every registered style keeps: test_contract.py)."""

import json

import numpy as np
import pytest

from experts.scribbles import (
    ScribbleStyle,
    SlicewiseScribbles,
    create_scribble_style,
    list_scribble_styles,
    register_scribble_style,
    simulate_scribbles,
)
from experts.scribbles.registry import SCRIBBLE_STYLES

IGNORE = 4


def toy_label(n=16):
    label = np.zeros((n, n, n), dtype=np.int64)
    label[3:13, 3:13, 2:14] = 1
    label[6:10, 6:10, 5:11] = 2
    return label


def test_slicewise_is_registered_and_created_by_name():
    assert "slicewise" in list_scribble_styles()
    style = create_scribble_style("slicewise", density=0.5, thickness=1)
    assert isinstance(style, SlicewiseScribbles) and style.name == "slicewise"
    assert style.get_params()["density"] == 0.5 and style.get_params()["thickness"] == 1


def test_get_params_round_trips_through_json_and_the_factory():
    style = create_scribble_style("slicewise", axis="auto", erosion_range=(1, 3))
    config = json.loads(json.dumps(style.get_params()))
    assert create_scribble_style("slicewise", **config).get_params() == style.get_params()


def test_unknown_name_error_lists_the_known_styles():
    with pytest.raises(ValueError, match=r"unknown scribble style 'scribblez'; known: .*slicewise"):
        create_scribble_style("scribblez")
    with pytest.raises(ValueError, match="unknown scribble style"):
        simulate_scribbles(toy_label(), ignore_label=IGNORE, style="scribblez")


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        register_scribble_style("slicewise")(SlicewiseScribbles)


class EveryVoxelOfOneSlice(ScribbleStyle):
    """A trivial style: the whole of one random Z slice is annotated."""

    def get_params(self):
        return {}

    def make_params(self, label, *, ignore_label, rng, spacing=(1.0, 1.0, 1.0)):
        return {"index": int(rng.integers(label.shape[2]))}

    def apply(self, label, params, *, ignore_label, spacing=(1.0, 1.0, 1.0), return_strokes=False):
        out = np.full(label.shape, ignore_label, dtype=np.uint8)
        out[..., params["index"]] = label[..., params["index"]]
        return out


@pytest.fixture
def custom_style():
    register_scribble_style("one_slice")(EveryVoxelOfOneSlice)
    yield "one_slice"
    SCRIBBLE_STYLES._factories.pop("one_slice")


def test_a_new_style_plugs_in_by_name_or_instance(custom_style):
    assert custom_style in list_scribble_styles()
    by_name = simulate_scribbles(toy_label(), ignore_label=IGNORE, style=custom_style, seed=1)
    by_instance = simulate_scribbles(toy_label(), ignore_label=IGNORE, style=EveryVoxelOfOneSlice(), seed=1)
    assert np.array_equal(by_name, by_instance)
    with pytest.raises(ValueError, match="style instance"):
        simulate_scribbles(toy_label(), ignore_label=IGNORE, style=EveryVoxelOfOneSlice(), density=0.5)
