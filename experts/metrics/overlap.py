"""Per-class Dice and IoU of an integer prediction against an integer reference, dense or partial.

Volumes are integer label arrays ``[X, Y, Z]`` with classes ``0..K-1`` (``0`` = background). A
*partial* reference (scribbles, sparse slices) marks unannotated voxels with ``ignore_label``
(by the dataset convention ``K``); Dice and IoU are then computed on annotated voxels only
(``reference != ignore_label``): prediction voxels on unannotated voxels are neither false nor
true positives.

Dice and IoU are computed from voxel counts in numpy (float64, exact). We checked MONAI 1.6.1 and
the tests check agreement: :func:`monai.metrics.compute_dice` (the functional form of
``DiceMetric``) with ``ignore_index=ignore_label`` on label-encoded (single-channel) inputs applies
the *spatial* mask ``y != ignore_index`` to both prediction and reference, which is exactly the
annotated-voxels-only rule above, and :func:`monai.metrics.compute_iou` does the same with one-hot
inputs. We do not return MONAI's numbers because (a) its empty handling differs from ours:
``ignore_empty=True`` gives NaN whenever the reference is empty, even for a non-empty prediction,
and ``ignore_empty=False`` gives 1.0 when both are empty; (b) it returns float32
(2/3 -> 0.6666666865); (c) one-hot IoU needs K float copies of the volume.

Empty cases (see :mod:`experts.metrics.results`): both empty -> ``None`` with reason
``"class absent in reference and prediction"``; exactly one empty -> ``0.0``; partial reference
with the class absent from annotated reference voxels and from the prediction on them -> ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experts.metrics.results import ABSENT, ABSENT_ANNOTATED, NOTHING_ANNOTATED, MetricValue

__all__ = ["OverlapResult", "overlap_metrics", "check_label_volume", "check_classes"]


def check_classes(num_classes: int, ignore_label: int | None = None) -> None:
    """Validate ``num_classes`` (K >= 2, background included) and ``ignore_label`` (not in 0..K-1).

    Raises:
        ValueError: with the offending value.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (background included), got {num_classes!r}")
    if ignore_label is not None:
        if isinstance(ignore_label, bool) or not isinstance(ignore_label, (int, np.integer)):
            raise ValueError(f"ignore_label must be an integer or None, got {ignore_label!r}")
        if 0 <= ignore_label < num_classes:
            raise ValueError(
                f"ignore_label={ignore_label} is one of the classes 0..{num_classes - 1}; "
                f"use a value outside them (by convention num_classes={num_classes})"
            )


def check_label_volume(
    volume, *, name: str, num_classes: int, ignore_label: int | None = None, hint: str | None = None
) -> tuple[np.ndarray, int]:
    """Validate an integer label volume and count its ignore voxels.

    Args:
        volume: int (or bool) array ``[X, Y, Z]`` with values in ``0..num_classes-1`` or ``ignore_label``.
        name: how to call the volume in error messages (``"prediction"``, ``"rater 2"``).
        num_classes: K, background included.
        ignore_label: value of unannotated voxels, or ``None`` (every voxel must be a class).
        hint: advice appended to the out-of-range error; default suggests passing ``ignore_label``.

    Returns:
        ``(array, n_ignored)``: the volume as a numpy array and its number of ``ignore_label`` voxels.

    Raises:
        ValueError: wrong dimensionality, non-integer dtype, or values outside the classes.
    """
    arr = np.asarray(volume)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D label volume [X, Y, Z], got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}; take the argmax of probabilities first")
    outside = (arr < 0) | (arr >= num_classes)
    n_ignored = 0
    if ignore_label is not None:
        is_ignore = arr == ignore_label
        n_ignored = int(np.count_nonzero(is_ignore))
        outside &= ~is_ignore
    n_bad = int(np.count_nonzero(outside))
    if n_bad:
        example = int(arr[outside].flat[0])
        allowed = f"0..{num_classes - 1}" + ("" if ignore_label is None else f" or ignore_label={ignore_label}")
        if hint is None:
            hint = "" if ignore_label is not None else "if it marks unannotated voxels, pass ignore_label"
        raise ValueError(f"{name} has {n_bad} voxels with values outside {allowed} (e.g. {example})" + (f"; {hint}" if hint else ""))
    return arr, n_ignored


@dataclass(frozen=True)
class OverlapResult:
    """Per-class overlap of one prediction against one reference.

    Attributes:
        dice: class -> Dice (foreground classes; background too with ``include_background``).
        iou: class -> IoU (Jaccard), same classes.
        partial: ``True`` when the reference contained ``ignore_label`` (scored on annotated voxels only).
        annotated_voxels: number of reference voxels that are not ``ignore_label``.
        total_voxels: number of voxels in the volume.
    """

    dice: dict[int, MetricValue]
    iou: dict[int, MetricValue]
    partial: bool
    annotated_voxels: int
    total_voxels: int

    def to_dict(self) -> dict:
        """JSON-ready dict; class keys become strings, values ``{"value", "reason"}``."""
        return {
            "partial": self.partial,
            "annotated_voxels": self.annotated_voxels,
            "total_voxels": self.total_voxels,
            "dice": {str(c): v.to_dict() for c, v in self.dice.items()},
            "iou": {str(c): v.to_dict() for c, v in self.iou.items()},
        }


def overlap_metrics(
    prediction,
    reference,
    *,
    num_classes: int,
    ignore_label: int | None = None,
    include_background: bool = False,
) -> OverlapResult:
    """Per-class Dice and IoU, on annotated voxels only when the reference is partial.

    Dice = 2|P∩R| / (|P| + |R|), IoU = |P∩R| / |P∪R| (Jaccard), per class c on the binary masks
    ``prediction == c`` and ``reference == c``, restricted to ``reference != ignore_label``.

    Args:
        prediction: int array ``[X, Y, Z]``, values ``0..K-1``.
        reference: int array ``[X, Y, Z]``, values ``0..K-1`` or ``ignore_label`` (partial reference).
        num_classes: K, background included (``>= 2``).
        ignore_label: value of unannotated reference voxels, or ``None`` (dense reference). Default ``None``.
        include_background: also report class 0. Default ``False`` (foreground classes 1..K-1).

    Returns:
        :class:`OverlapResult`. Both-empty classes -> ``None`` with reason
        ``"class absent in reference and prediction"`` (dense) or
        ``"class absent in annotated reference voxels and in the prediction on them"`` (partial);
        exactly one empty -> ``0.0``.

    Raises:
        ValueError: mismatched shapes, non-integer volumes or values outside the classes.
    """
    check_classes(num_classes, ignore_label)
    pred, _ = check_label_volume(prediction, name="prediction", num_classes=num_classes)
    ref, n_ignored = check_label_volume(reference, name="reference", num_classes=num_classes, ignore_label=ignore_label)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference must have the same shape, got {pred.shape} and {ref.shape}")
    partial = n_ignored > 0
    annotated = ref != ignore_label if partial else None
    n_annotated = int(ref.size - n_ignored)
    absent = ABSENT if not partial else (NOTHING_ANNOTATED if n_annotated == 0 else ABSENT_ANNOTATED)
    dice: dict[int, MetricValue] = {}
    iou: dict[int, MetricValue] = {}
    for c in range(0 if include_background else 1, num_classes):
        p, r = pred == c, ref == c
        if annotated is not None:
            p &= annotated
        n_p, n_r = np.count_nonzero(p), np.count_nonzero(r)
        if n_p + n_r == 0:
            dice[c] = iou[c] = MetricValue.undefined(absent)
            continue
        tp = np.count_nonzero(p & r)
        dice[c] = MetricValue(2.0 * tp / (n_p + n_r))
        iou[c] = MetricValue(tp / (n_p + n_r - tp))
    return OverlapResult(dice=dice, iou=iou, partial=partial, annotated_voxels=n_annotated, total_voxels=int(ref.size))
