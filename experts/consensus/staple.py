"""STAPLE consensus with a per-rater annotator profile (SimpleITK).

STAPLE (Warfield et al. 2004, "Simultaneous Truth and Performance Level Estimation") estimates,
by expectation-maximisation, a probabilistic true segmentation and each rater's sensitivity and
specificity. :func:`staple` runs the binary ``sitk.STAPLEImageFilter`` (``SetForegroundValue(1)``)
on the masks ``rater == c`` of every class c = 0..K-1 (background included) and returns

* ``probabilities``: float array ``[K, X, Y, Z]``, the per-class STAPLE probability maps (estimated
  independently per class, so they need not sum to 1 across classes);
* ``labels``: the multi-class label, argmax over the K maps (ties -> the lower class);
* ``profile``: ``{rater_index: {class: {"sensitivity": MetricValue, "specificity": MetricValue}}}``.

Degenerate classes: when every rater's mask of a class is empty (or every rater's mask covers the
whole volume) SimpleITK returns NaN everywhere. We return the unanimous mask as the probability
instead, sensitivity ``None`` ("class absent in every rater") and specificity 1.0 (resp.
sensitivity 1.0 and specificity ``None``). Should SimpleITK return NaN for any other input, the
probability falls back to the raters' mean and the NaN entries become ``None`` with a reason.

:func:`multi_label_staple` runs ``sitk.MultiLabelSTAPLEImageFilter`` (Rohlfing et al. 2004) for a
joint multi-class estimate. Axis order is kept as in :mod:`experts.consensus.voting`. Raters must
be dense: partial raters (containing ``ignore_label``) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from experts.consensus.voting import _check_special_label, check_raters, to_sitk_labels
from experts.metrics.results import MetricValue

__all__ = ["StapleResult", "staple", "multi_label_staple"]

ABSENT_IN_RATERS = "class absent in every rater: sensitivity undefined"
EVERYWHERE_IN_RATERS = "class covers every voxel for every rater: specificity undefined"
STAPLE_NAN = "STAPLE returned NaN for this class (degenerate input); probability is the raters' mean"


@dataclass(frozen=True)
class StapleResult:
    """Per-class STAPLE estimate and annotator profile.

    Attributes:
        probabilities: float64 array ``[K, X, Y, Z]``, STAPLE probability of each class.
        labels: int array ``[X, Y, Z]``, argmax over classes (background included).
        profile: ``{rater: {class: {"sensitivity": MetricValue, "specificity": MetricValue}}}``.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    profile: dict[int, dict[int, dict[str, MetricValue]]]

    def profile_to_dict(self) -> dict:
        """The profile, JSON-ready: string keys, values ``{"value", "reason"}``."""
        return {
            str(r): {str(c): {k: v.to_dict() for k, v in perf.items()} for c, perf in per_class.items()}
            for r, per_class in self.profile.items()
        }


def _binary_staple(masks: np.ndarray) -> tuple[np.ndarray, list[MetricValue], list[MetricValue]]:
    """STAPLE of binary masks ``[M, X, Y, Z]`` -> probability ``[X, Y, Z]``, sensitivities, specificities."""
    n = len(masks)
    counts = masks.reshape(n, -1).sum(axis=1)
    if (counts == 0).all():
        return np.zeros(masks.shape[1:]), [MetricValue.undefined(ABSENT_IN_RATERS)] * n, [MetricValue(1.0)] * n
    if (counts == masks[0].size).all():
        return np.ones(masks.shape[1:]), [MetricValue(1.0)] * n, [MetricValue.undefined(EVERYWHERE_IN_RATERS)] * n
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    prob = sitk.GetArrayFromImage(f.Execute([to_sitk_labels(m, max_value=1) for m in masks])).astype(np.float64)
    sens, spec = f.GetSensitivity(), f.GetSpecificity()
    if np.isnan(prob).any():
        prob = masks.mean(axis=0, dtype=np.float64)

    def wrap(values):
        return [MetricValue.undefined(STAPLE_NAN) if np.isnan(v) else MetricValue(float(v)) for v in values]

    return prob, wrap(sens), wrap(spec)


def staple(raters, *, num_classes: int, ignore_label: int | None = None) -> StapleResult:
    """Per-class binary STAPLE, a multi-class argmax label, and each rater's sensitivity/specificity.

    Args:
        raters: int array ``[M, X, Y, Z]`` or a sequence of M (>= 2) int arrays ``[X, Y, Z]``,
            values ``0..K-1``; dense.
        num_classes: K, background included.
        ignore_label: the dataset's value for unannotated voxels (used to refuse partial raters), or ``None``.

    Returns:
        :class:`StapleResult` with ``probabilities`` ``[K, X, Y, Z]`` (float64), ``labels``
        ``[X, Y, Z]`` (the raters' dtype) and ``profile`` for raters ``0..M-1`` and classes ``0..K-1``.

    Raises:
        ValueError: partial raters, fewer than 2 raters, mismatched shapes or values outside the classes.
    """
    stack = check_raters(raters, num_classes=num_classes, ignore_label=ignore_label)
    probabilities = np.empty((num_classes,) + stack.shape[1:], dtype=np.float64)
    profile: dict[int, dict[int, dict[str, MetricValue]]] = {r: {} for r in range(len(stack))}
    for c in range(num_classes):
        probabilities[c], sens, spec = _binary_staple(stack == c)
        for r in range(len(stack)):
            profile[r][c] = {"sensitivity": sens[r], "specificity": spec[r]}
    labels = probabilities.argmax(axis=0).astype(stack.dtype)
    return StapleResult(probabilities=probabilities, labels=labels, profile=profile)


def multi_label_staple(raters, *, num_classes: int, undecided_label: int, ignore_label: int | None = None) -> np.ndarray:
    """Joint multi-class STAPLE estimate (``sitk.MultiLabelSTAPLEImageFilter``).

    Args:
        raters: int array ``[M, X, Y, Z]`` or a sequence of M (>= 2) int arrays ``[X, Y, Z]``; dense.
        num_classes: K, background included.
        undecided_label: label of voxels whose posterior is tied; ``>= K`` (not a class).
        ignore_label: the dataset's value for unannotated voxels (used to refuse partial raters), or ``None``.

    Returns:
        int array ``[X, Y, Z]`` in the input's axis order (the raters' dtype, widened for ``undecided_label``).
    """
    stack = check_raters(raters, num_classes=num_classes, ignore_label=ignore_label)
    undecided = _check_special_label(undecided_label, name="undecided_label", num_classes=num_classes)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(undecided)
    out = sitk.GetArrayFromImage(f.Execute([to_sitk_labels(v, max_value=undecided) for v in stack]))
    return out.astype(np.result_type(stack.dtype, np.min_scalar_type(undecided)))
