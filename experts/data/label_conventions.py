"""How outside annotation tools mark unlabelled voxels, mapped onto the dataset's ``ignore`` value.

Scribble tools store partial labels in one of two ways:

* ``"zero-shifted"``: 0 means unlabelled and every class is shifted by one (1 = background,
  2 = class 1, ...), as ITK-SNAP's and many web tools' scribble layers do;
* an integer ``VALUE``: that value means unlabelled, every other value is a class as it is (e.g.
  255 = unlabelled, 0 = background, 1 = class 1).

:func:`to_partial_label` turns either into the dataset's layout (DATASET_SPEC rule 2): classes
``0..K-1`` and the ``ignore`` value where nothing is annotated.

Example:
    >>> to_partial_label(np.array([[[0, 1, 2, 3]]]), unlabelled="zero-shifted", class_names=["background", "a", "b"], ignore_label=3)
    array([[[3, 0, 1, 2]]], dtype=uint8)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from experts.errors import ConfigError, DatasetError

__all__ = ["ZERO_SHIFTED", "parse_unlabelled", "to_partial_label"]

ZERO_SHIFTED = "zero-shifted"


def parse_unlabelled(value: str | int) -> str | int:
    """``"zero-shifted"`` or an integer (given as int or text such as ``"255"``, ``"-1"``).

    Raises:
        ConfigError: anything else.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text == ZERO_SHIFTED:
        return ZERO_SHIFTED
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"--unlabelled {value!r}: expected 'zero-shifted' (0 = unlabelled, classes shifted by one) "
            "or the integer that marks unlabelled voxels, e.g. --unlabelled 255"
        ) from None


def to_partial_label(array, *, unlabelled: str | int, class_names: Sequence[str], ignore_label: int, where: str = "label") -> np.ndarray:
    """Map a tool's label ``[X, Y, Z]`` to the dataset's classes and ignore value.

    Args:
        array: the stored values, integers or floats holding whole numbers.
        unlabelled: :data:`ZERO_SHIFTED` or the integer marking unlabelled voxels (:func:`parse_unlabelled`).
        class_names: the dataset's classes in value order, background first (``DatasetSpec.class_names``).
        ignore_label: the dataset's ignore value (``K = len(class_names)`` in a valid dataset).
        where: the file, named in error messages.

    Returns:
        ``[X, Y, Z]`` uint8 (uint16 when ``ignore_label`` > 255): ``0..K-1`` annotated, ``ignore_label`` elsewhere.

    Raises:
        DatasetError: non-finite or fractional values, or a value that is neither unlabelled nor a
            class under the convention (the message names the file, the value and the fix).
    """
    unlabelled = parse_unlabelled(unlabelled)
    arr = np.asarray(array)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DatasetError(f"{where}: NaN or infinite label values; labels must be whole numbers")
        if (arr != np.round(arr)).any():
            sample = float(arr[arr != np.round(arr)].flat[0])
            raise DatasetError(f"{where}: fractional label value {sample:g}; labels must be whole numbers (threshold or round it in your tool, deliberately)")
    elif arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"{where}: label data type {arr.dtype} is not numeric; export the scribbles as an integer label map")
    values = np.asarray(arr, dtype=np.int64)
    k = len(class_names)
    shifted = unlabelled == ZERO_SHIFTED
    unlabelled_value = 0 if shifted else int(unlabelled)
    classes = values - 1 if shifted else values
    annotated = values != unlabelled_value
    bad = annotated & ((classes < 0) | (classes >= k))
    if bad.any():
        raise DatasetError(_out_of_range(where, int(values[bad].flat[0]), unlabelled, class_names))
    out = np.full(values.shape, ignore_label, dtype=np.uint8 if ignore_label <= 255 else np.uint16)
    out[annotated] = classes[annotated]
    return out


def _out_of_range(where: str, value: int, unlabelled: str | int, class_names: Sequence[str]) -> str:
    k = len(class_names)
    if unlabelled == ZERO_SHIFTED:
        meaning = ", ".join(f"{i + 1}={n}" for i, n in enumerate(class_names))
        return (f"{where}: value {value} is out of range for --unlabelled zero-shifted (0 = unlabelled, {meaning}); "
                "relabel the file, or pass --unlabelled VALUE if the classes are stored unshifted")
    meaning = ", ".join(f"{i}={n}" for i, n in enumerate(class_names))
    return (f"{where}: value {value} is neither the unlabelled value {unlabelled} nor a class 0..{k - 1} ({meaning}); "
            "relabel the file, or pass the --unlabelled value the tool uses (zero-shifted if 0 is unlabelled and classes start at 1)")
