"""Evaluation metrics: per-rater overlap and surface metrics, multi-rater distribution metrics.

* :mod:`~experts.metrics.overlap`: per-class Dice / IoU, on annotated voxels only for partial references.
* :mod:`~experts.metrics.surface`: spacing-aware HD95, ASSD and NSD (dense references only).
* :mod:`~experts.metrics.distribution`: GED^2, QUBIQ soft Dice, Dmax and Dmatch over sets of
  predictions and raters.
* :mod:`~experts.metrics.results`: :class:`MetricValue`, a value that may be undefined (``None``
  with a reason), and the documented empty-case conventions. Output never holds NaN or inf.
"""

from experts.metrics.distribution import (
    QUBIQ_THRESHOLDS,
    EnergyDistance,
    dice_match,
    dice_max,
    generalized_energy_distance,
    generalized_energy_distance_per_class,
    pairwise_dice,
    pairwise_iou,
    soft_dice,
)
from experts.metrics.overlap import OverlapResult, check_classes, check_label_volume, overlap_metrics
from experts.metrics.results import MetricValue, to_jsonable
from experts.metrics.surface import SurfaceResult, check_spacing, surface_metrics

__all__ = [
    "MetricValue",
    "to_jsonable",
    "OverlapResult",
    "overlap_metrics",
    "check_classes",
    "check_label_volume",
    "SurfaceResult",
    "surface_metrics",
    "check_spacing",
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
