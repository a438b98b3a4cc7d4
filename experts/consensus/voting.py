"""Majority vote over raters' integer label volumes (SimpleITK ``LabelVoting``).

Each voxel gets the class most raters gave it. When the largest vote is shared by two or more
classes (common with an even number of raters, e.g. 1 vs 1 with two raters, or three raters
disagreeing three ways) the voxel gets ``tie_label``, which must not be a class: by choosing
``tie_label = K`` (= the dataset's ignore value) the consensus becomes a partial label whose
disputed voxels are unannotated; any other value >= K just marks them.

Axis order: ``sitk.GetImageFromArray`` reads a numpy array ``[X, Y, Z]`` as an image of size
``(Z, Y, X)`` (it reverses the axes) and ``sitk.GetArrayFromImage`` reverses them back, so the
round trip returns the input's axis order. Voting is voxel-wise, so the image geometry does not
matter; the output has the input's shape and axis order.

Raters must be dense: a rater containing ``ignore_label`` (partial) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from experts.metrics.overlap import check_classes, check_label_volume

__all__ = ["majority_vote", "check_raters", "to_sitk_labels"]


def check_raters(raters, *, num_classes: int, ignore_label: int | None = None, min_raters: int = 2) -> np.ndarray:
    """Validate dense rater label volumes and stack them.

    Args:
        raters: int array ``[M, X, Y, Z]`` or a sequence of M int arrays ``[X, Y, Z]``, values ``0..K-1``.
        num_classes: K, background included.
        ignore_label: the dataset's value for unannotated voxels, or ``None``; a rater holding it
            is partial and refused.
        min_raters: fewest raters accepted. Default 2.

    Returns:
        int array ``[M, X, Y, Z]``.

    Raises:
        ValueError: too few raters, a partial rater, mismatched shapes or values outside the classes.
    """
    check_classes(num_classes, ignore_label)
    if isinstance(raters, np.ndarray) and raters.ndim != 4:
        raise ValueError(f"raters must be label volumes [M, X, Y, Z] (or a list of [X, Y, Z]), got shape {raters.shape}")
    volumes = list(raters) if isinstance(raters, (Sequence, np.ndarray)) else None
    if volumes is None or len(volumes) < min_raters:
        got = "not a sequence" if volumes is None else f"{len(volumes)}"
        raise ValueError(f"consensus needs at least {min_raters} raters' label volumes [X, Y, Z], got {got}")
    arrays = []
    for i, v in enumerate(volumes):
        arr, n_ignored = check_label_volume(v, name=f"rater {i}", num_classes=num_classes, ignore_label=ignore_label)
        if n_ignored:
            raise ValueError(
                f"rater {i} is partial ({n_ignored} voxels are ignore_label={ignore_label}); majority vote and "
                "STAPLE need a dense label from every rater: leave partial raters out of the consensus"
            )
        if arrays and arr.shape != arrays[0].shape:
            raise ValueError(f"rater {i} has shape {arr.shape}, rater 0 has {arrays[0].shape}; all raters must match")
        arrays.append(arr)
    return np.stack(arrays)


def to_sitk_labels(volume: np.ndarray, *, max_value: int) -> sitk.Image:
    """An int array ``[X, Y, Z]`` as an unsigned SimpleITK image wide enough for ``max_value``.

    SimpleITK's label filters accept unsigned pixel types only (a signed ``int16`` is refused).
    The image's axes are the array's reversed; :func:`sitk.GetArrayFromImage` restores them.
    """
    dtype = np.uint8 if max_value <= np.iinfo(np.uint8).max else np.uint16 if max_value <= np.iinfo(np.uint16).max else np.uint32
    return sitk.GetImageFromArray(np.ascontiguousarray(volume.astype(dtype, copy=False)))


def _check_special_label(value, *, name: str, num_classes: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < num_classes or value > np.iinfo(np.uint32).max:
        raise ValueError(
            f"{name}={value} must not be one of the classes 0..{num_classes - 1} and must be a non-negative "
            f"integer; use e.g. {num_classes} (the ignore value) or a dedicated value such as 255"
        )
    return int(value)


def majority_vote(raters, *, num_classes: int, tie_label: int, ignore_label: int | None = None) -> np.ndarray:
    """Voxel-wise majority vote with an explicit tie label (``sitk.LabelVoting``).

    Args:
        raters: int array ``[M, X, Y, Z]`` or a sequence of M (>= 2) int arrays ``[X, Y, Z]``,
            values ``0..K-1``; dense.
        num_classes: K, background included.
        tie_label: label of voxels whose largest vote is shared by several classes; required,
            ``>= K`` (not a class). ``tie_label == ignore_label`` is allowed and makes ties unannotated.
        ignore_label: the dataset's value for unannotated voxels (used to refuse partial raters), or ``None``.

    Returns:
        int array ``[X, Y, Z]`` in the input's axis order; dtype of the raters, widened if needed
        to hold ``tie_label``.

    Raises:
        ValueError: partial raters, fewer than 2 raters, mismatched shapes, or ``tie_label`` a class.
    """
    stack = check_raters(raters, num_classes=num_classes, ignore_label=ignore_label)
    tie = _check_special_label(tie_label, name="tie_label", num_classes=num_classes)
    images = [to_sitk_labels(v, max_value=tie) for v in stack]
    voted = sitk.GetArrayFromImage(sitk.LabelVoting(images, tie))
    return voted.astype(np.result_type(stack.dtype, np.min_scalar_type(tie)))
