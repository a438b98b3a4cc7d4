"""Multi-rater distribution metrics: GED, QUBIQ soft Dice, Dmax and Dmatch.

These compare a *set* of predictions (samples, e.g. one per expert-conditioned model) with the
*set* of raters' labels of one case, for one class, as binary masks ``[N, X, Y, Z]`` and
``[M, X, Y, Z]`` (bool, or integers/floats equal to 0 or 1).

* GED (generalised energy distance; Kohl et al. 2018, "A Probabilistic U-Net", Eq. 4):
  ``GED^2 = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]`` with ``d = 1 - IoU``. We return
  ``GED^2`` as the paper's formula (and as PHiSeg and D-Persona report it under the name "GED").
  The expectations are means over *all ordered pairs, i = j included* (the V-statistic, as in
  the PHiSeg and D-Persona evaluation code), so identical sets give exactly 0. Convention:
  ``d(empty, empty) = 0`` (IoU of two empty masks is 1). GED^2 is linear in ``d``, so the mean of
  the per-class GED^2 equals GED^2 with ``d`` = mean over classes of ``1 - IoU``.
* Soft Dice (QUBIQ challenge, as in D-Persona): mean over thresholds 0.1/0.3/0.5/0.7/0.9 of
  ``Dice(probability > t, mean_of_raters > t)`` (strict ``>``).
* Dmax (D-Persona, Wu et al. CVPR 2024): mean over predictions of the Dice with the best-matching
  rater, ``mean_i max_j Dice(S_i, Y_j)``.
* Dmatch (D-Persona): one-to-one Hungarian matching of predictions to raters maximising the total
  Dice (:func:`scipy.optimize.linear_sum_assignment`), mean Dice over matched pairs. With
  ``N != M`` predictions and raters, ``min(N, M)`` pairs are matched and the unmatched
  predictions or raters are left out (not penalised).

Empty conventions: inside these set metrics a pair of empty masks agrees perfectly (IoU = Dice =
1, ``d = 0``), as in the PHiSeg/D-Persona code; a soft-Dice threshold at which both binarised
maps are empty counts as Dice 1. When *every* mask is empty (the class is absent everywhere),
Dmax, Dmatch and soft Dice are ``None`` with a reason; GED^2 is then 0 by the convention above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from experts.metrics.overlap import check_classes, check_label_volume
from experts.metrics.results import MetricValue

__all__ = [
    "QUBIQ_THRESHOLDS",
    "EnergyDistance",
    "pairwise_iou",
    "pairwise_dice",
    "generalized_energy_distance",
    "generalized_energy_distance_per_class",
    "soft_dice",
    "dice_max",
    "dice_match",
]

QUBIQ_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
ALL_EMPTY = "class absent in every prediction and every rater"


def _mask_stack(masks, *, name: str) -> np.ndarray:
    """``[N, X, Y, Z]`` binary masks (array or sequence of ``[X, Y, Z]``) -> bool array."""
    if isinstance(masks, Sequence) and not isinstance(masks, np.ndarray):
        if len(masks) == 0:
            raise ValueError(f"{name} must hold at least one mask, got an empty sequence")
        shapes = {np.shape(m) for m in masks}
        if len(shapes) != 1:
            raise ValueError(f"{name} masks must all have the same shape, got {sorted(shapes)}")
        masks = np.stack([np.asarray(m) for m in masks])
    arr = np.asarray(masks)
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be binary masks [N, X, Y, Z] with N >= 1, got shape {arr.shape}")
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{name} must be binary masks (bool or 0/1), got dtype {arr.dtype}")
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be binary masks (values 0 or 1); for label volumes pass labels == class")
        arr = arr.astype(bool)
    return arr


def _pair(predictions, raters) -> tuple[np.ndarray, np.ndarray]:
    s = _mask_stack(predictions, name="predictions")
    y = _mask_stack(raters, name="raters")
    if s.shape[1:] != y.shape[1:]:
        raise ValueError(f"predictions and raters must have the same volume shape, got {s.shape[1:]} and {y.shape[1:]}")
    return s, y


def _overlap_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sizes ``|a_i|``, ``|b_j|`` and intersections ``|a_i ∩ b_j|`` ``[N, M]`` of two mask stacks."""
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    inter = np.array([[np.count_nonzero(ai & bj) for bj in b2] for ai in a2], dtype=np.float64).reshape(len(a), len(b))
    return a2.sum(1).astype(np.float64), b2.sum(1).astype(np.float64), inter


def pairwise_iou(a, b) -> np.ndarray:
    """IoU of every pair of masks, ``1.0`` for two empty masks.

    Args:
        a: binary masks ``[N, X, Y, Z]``.
        b: binary masks ``[M, X, Y, Z]``.

    Returns:
        float array ``[N, M]``.
    """
    a, b = _pair(a, b)
    na, nb, inter = _overlap_counts(a, b)
    union = na[:, None] + nb[None, :] - inter
    return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)


def pairwise_dice(predictions, raters) -> np.ndarray:
    """Dice of every prediction with every rater, ``1.0`` for two empty masks.

    Args:
        predictions: binary masks ``[N, X, Y, Z]``.
        raters: binary masks ``[M, X, Y, Z]``.

    Returns:
        float array ``[N, M]``; entry ``[i, j]`` is ``Dice(predictions[i], raters[j])``.
    """
    s, y = _pair(predictions, raters)
    ns, ny, inter = _overlap_counts(s, y)
    total = ns[:, None] + ny[None, :]
    return np.divide(2.0 * inter, total, out=np.ones_like(inter), where=total > 0)


@dataclass(frozen=True)
class EnergyDistance:
    """Generalised energy distance and its three terms (``d = 1 - IoU``).

    Attributes:
        squared: ``GED^2 = 2 * cross - within_predictions - within_raters`` (the paper's formula).
        cross: ``E[d(S, Y)]``, mean over prediction-rater pairs.
        within_predictions: ``E[d(S, S')]``, the predictions' diversity (all ordered pairs, i = j included).
        within_raters: ``E[d(Y, Y')]``, the raters' diversity (all ordered pairs, i = j included).
    """

    squared: float
    cross: float
    within_predictions: float
    within_raters: float

    @property
    def distance(self) -> float:
        """``sqrt(GED^2)`` (clamped at 0 against round-off)."""
        return float(np.sqrt(max(self.squared, 0.0)))

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict of the four numbers (always finite)."""
        return {"squared": self.squared, "cross": self.cross, "within_predictions": self.within_predictions, "within_raters": self.within_raters}


def generalized_energy_distance(predictions, raters) -> EnergyDistance:
    """GED^2 of a set of predictions against a set of raters, for one class (Kohl et al. 2018).

    Args:
        predictions: binary masks ``[N, X, Y, Z]`` (N >= 1 samples).
        raters: binary masks ``[M, X, Y, Z]`` (M >= 1 raters), dense.

    Returns:
        :class:`EnergyDistance`; ``.squared`` is ``GED^2`` (0 for identical sets; 2 for one
        prediction disjoint from one rater). ``d(empty, empty) = 0``.
    """
    s, y = _pair(predictions, raters)
    cross = 1.0 - pairwise_iou(s, y)
    ss = 1.0 - pairwise_iou(s, s)
    yy = 1.0 - pairwise_iou(y, y)
    c, ws, wy = float(cross.mean()), float(ss.mean()), float(yy.mean())
    return EnergyDistance(squared=2.0 * c - ws - wy, cross=c, within_predictions=ws, within_raters=wy)


def generalized_energy_distance_per_class(predictions, raters, *, num_classes: int) -> dict[int, EnergyDistance]:
    """GED^2 per foreground class of integer label volumes.

    Args:
        predictions: int arrays ``[N, X, Y, Z]`` (or a sequence of ``[X, Y, Z]``), values ``0..K-1``.
        raters: int arrays ``[M, X, Y, Z]``, values ``0..K-1`` (dense; partial labels are refused).
        num_classes: K, background included.

    Returns:
        class (1..K-1) -> :class:`EnergyDistance` of the masks ``== class``.
    """
    check_classes(num_classes)
    hint = "distribution metrics need dense labels: leave partial raters out"
    preds = [check_label_volume(v, name=f"prediction {i}", num_classes=num_classes, hint=hint)[0] for i, v in enumerate(predictions)]
    rats = [check_label_volume(v, name=f"rater {i}", num_classes=num_classes, hint=hint)[0] for i, v in enumerate(raters)]
    if not preds or not rats:
        raise ValueError(f"need at least one prediction and one rater, got {len(preds)} and {len(rats)}")
    return {
        c: generalized_energy_distance(np.stack([p == c for p in preds]), np.stack([r == c for r in rats]))
        for c in range(1, num_classes)
    }


def soft_dice(probability, raters, *, thresholds: Sequence[float] = QUBIQ_THRESHOLDS) -> MetricValue:
    """QUBIQ soft Dice: mean over thresholds t of ``Dice(probability > t, mean(raters) > t)``.

    Args:
        probability: float array ``[X, Y, Z]`` in ``[0, 1]`` for one class (e.g. the mean of the
            predictions' masks, or a predicted probability map).
        raters: binary masks ``[M, X, Y, Z]``; their voxel-wise mean is the soft reference.
        thresholds: binarisation thresholds in ``(0, 1)``. Default ``(0.1, 0.3, 0.5, 0.7, 0.9)``.

    Returns:
        The mean Dice; a threshold at which both maps are empty counts as 1.0; ``None`` with a
        reason when they are empty at every threshold.
    """
    prob = np.asarray(probability, dtype=np.float64)
    y = _mask_stack(raters, name="raters")
    if prob.shape != y.shape[1:]:
        raise ValueError(f"probability must have the raters' volume shape {y.shape[1:]}, got {prob.shape}")
    if not np.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise ValueError("probability must hold finite values in [0, 1]")
    ts = [float(t) for t in thresholds]
    if not ts or not all(0 < t < 1 for t in ts):
        raise ValueError(f"thresholds must be a non-empty list of values in (0, 1), got {list(thresholds)!r}")
    soft_ref = y.mean(axis=0)
    scores, informative = [], False
    for t in ts:
        p, r = prob > t, soft_ref > t
        total = np.count_nonzero(p) + np.count_nonzero(r)
        informative |= total > 0
        scores.append(2.0 * np.count_nonzero(p & r) / total if total else 1.0)
    if not informative:
        return MetricValue.undefined(f"{ALL_EMPTY} at every threshold")
    return MetricValue(float(np.mean(scores)))


def dice_max(predictions, raters) -> MetricValue:
    """Dmax (D-Persona): mean over predictions of the Dice with their best-matching rater.

    Args:
        predictions: binary masks ``[N, X, Y, Z]``.
        raters: binary masks ``[M, X, Y, Z]``.

    Returns:
        ``mean_i max_j Dice(predictions[i], raters[j])``; ``None`` when every mask is empty.
    """
    s, y = _pair(predictions, raters)
    if not s.any() and not y.any():
        return MetricValue.undefined(ALL_EMPTY)
    return MetricValue(float(pairwise_dice(s, y).max(axis=1).mean()))


def dice_match(predictions, raters) -> MetricValue:
    """Dmatch (D-Persona): mean Dice of the one-to-one matching of predictions to raters maximising total Dice.

    The matching is the Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment` with
    ``maximize=True``) on :func:`pairwise_dice`. With ``N != M``, ``min(N, M)`` pairs are matched
    and the rest left out. Unlike a greedy assignment (best pair first), it maximises the sum.

    Args:
        predictions: binary masks ``[N, X, Y, Z]``.
        raters: binary masks ``[M, X, Y, Z]``.

    Returns:
        Mean Dice over the matched pairs; ``None`` when every mask is empty.
    """
    s, y = _pair(predictions, raters)
    if not s.any() and not y.any():
        return MetricValue.undefined(ALL_EMPTY)
    dice = pairwise_dice(s, y)
    rows, cols = linear_sum_assignment(dice, maximize=True)
    return MetricValue(float(dice[rows, cols].mean()))
