"""A scribble tool's unlabelled convention mapped onto the dataset's classes and ignore value."""

import numpy as np
import pytest

from experts.data.label_conventions import ZERO_SHIFTED, parse_unlabelled, to_partial_label
from experts.errors import ConfigError, DatasetError

CLASSES = ["background", "core", "rim"]  # ignore = 3


@pytest.mark.parametrize(
    "stored, unlabelled, expected",
    [
        # [1, 1, 5]: zero-shifted, 0 = unlabelled, 1 = background, 2 = core, 3 = rim
        ([0, 1, 2, 3, 0], ZERO_SHIFTED, [3, 0, 1, 2, 3]),
        # 255 = unlabelled, classes as stored
        ([255, 0, 1, 2, 255], 255, [3, 0, 1, 2, 3]),
        # the dataset's own ignore value as the tool's unlabelled value: unchanged
        ([3, 0, 1, 2, 3], 3, [3, 0, 1, 2, 3]),
        # a negative marker, floats holding whole numbers
        ([-1.0, 0.0, 2.0, -1.0, 1.0], -1, [3, 0, 2, 3, 1]),
        # 0 = unlabelled without shift: foreground-only scribbles
        ([0, 1, 2, 0, 0], 0, [3, 1, 2, 3, 3]),
    ],
)
def test_each_convention_maps_unlabelled_to_ignore_and_classes_to_their_values(stored, unlabelled, expected):
    out = to_partial_label(np.array(stored).reshape(1, 1, -1), unlabelled=unlabelled, class_names=CLASSES, ignore_label=3)
    assert out.dtype == np.uint8
    assert out.ravel().tolist() == expected


@pytest.mark.parametrize(
    "stored, unlabelled, value, hint",
    [
        ([0, 1, 4], ZERO_SHIFTED, 4, "out of range for --unlabelled zero-shifted (0 = unlabelled, 1=background, 2=core, 3=rim)"),
        ([255, 0, 3], 255, 3, "neither the unlabelled value 255 nor a class 0..2 (0=background, 1=core, 2=rim)"),
        ([0, -2, 1], ZERO_SHIFTED, -2, "out of range"),
    ],
)
def test_a_value_out_of_range_names_the_file_the_value_and_the_fix(stored, unlabelled, value, hint):
    with pytest.raises(DatasetError) as err:
        to_partial_label(np.array(stored).reshape(1, 1, -1), unlabelled=unlabelled, class_names=CLASSES, ignore_label=3, where="scrib/case01.nii.gz")
    (line,) = err.value.problems
    assert line.startswith(f"scrib/case01.nii.gz: value {value} ") and hint in line and "--unlabelled" in line.split(";")[-1]


def test_fractional_values_are_refused_not_rounded():
    with pytest.raises(DatasetError, match="fractional label value 1.5"):
        to_partial_label(np.array([[[0.0, 1.5]]]), unlabelled=ZERO_SHIFTED, class_names=CLASSES, ignore_label=3)


def test_an_ignore_value_above_255_is_stored_as_uint16():
    out = to_partial_label(np.array([[[0, 1]]]), unlabelled=ZERO_SHIFTED, class_names=CLASSES, ignore_label=300)
    assert out.dtype == np.uint16 and out.ravel().tolist() == [300, 0]


@pytest.mark.parametrize("text, expected", [("zero-shifted", ZERO_SHIFTED), ("255", 255), (" -1 ", -1), (7, 7)])
def test_unlabelled_is_zero_shifted_or_an_integer(text, expected):
    assert parse_unlabelled(text) == expected


@pytest.mark.parametrize("text", ["zero", "2.5", "", True])
def test_any_other_unlabelled_is_refused_with_the_choices(text):
    with pytest.raises(ConfigError, match="expected 'zero-shifted'"):
        parse_unlabelled(text)
