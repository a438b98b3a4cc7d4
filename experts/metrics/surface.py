"""Spacing-aware surface metrics per foreground class: HD95, ASSD and normalised surface Dice.

All three come from MONAI 1.6.1 and use the same surface definition: the surface of a binary mask
is its voxels removed by one binary erosion (6-connectivity, ``mask XOR erode(mask)``); distances
are exact Euclidean distances between surface-voxel centres, each axis scaled by the voxel
spacing in mm (``spacing[i]`` belongs to array axis ``i`` of the ``[X, Y, Z]`` volume).

* HD95 (:func:`monai.metrics.compute_hausdorff_distance` with ``percentile=95``): MONAI takes the
  95th percentile of each directed set of distances (prediction -> reference and reference ->
  prediction) and returns the larger of the two. (Some tools, e.g. MedPy, take the 95th percentile
  of the pooled distances instead; the two can differ.)
* ASSD (:func:`monai.metrics.compute_average_surface_distance` with ``symmetric=True``): mean over
  the pooled distances of both directions, ``(sum d(P->R) + sum d(R->P)) / (|∂P| + |∂R|)``.
* NSD (:func:`monai.metrics.compute_surface_dice`; Nikolov et al. 2021, arXiv 2111.05408): the
  fraction of surface voxels of both masks lying within ``tolerance_mm`` of the other surface
  (counting surface voxels, MONAI's ``use_subvoxels=False``). With ``spacing`` given MONAI's
  thresholds are in mm, despite its docstring saying "pixels".

Surface metrics are only defined for dense references: a reference holding ``ignore_label`` raises
``ValueError`` (use :func:`experts.metrics.overlap_metrics`, which scores annotated voxels only).

Empty cases (see :mod:`experts.metrics.results`), per class: HD95/ASSD -> ``None`` with reason
``"empty prediction"``, ``"empty reference"`` or ``"class absent in reference and prediction"``;
NSD -> ``None`` (``"class absent in reference and prediction"``) when both are empty, ``0.0`` when
exactly one is. MONAI itself returns NaN (HD95), inf (ASSD) or NaN (both empty) there and warns;
empty classes never reach MONAI here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

from experts.metrics.overlap import check_classes, check_label_volume
from experts.metrics.results import ABSENT, EMPTY_PREDICTION, EMPTY_REFERENCE, MetricValue

__all__ = ["SurfaceResult", "surface_metrics", "check_spacing"]


def check_spacing(spacing) -> tuple[float, float, float]:
    """Validate a voxel spacing in mm and return it as three floats.

    MONAI rejects spacings mixing ints and floats (``(1, 1, 2.5)``), so they are converted here.

    Raises:
        ValueError: ``ValueError("spacing must have 3 positive values, got (1.0, 0)")``.
    """
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must have 3 positive values in mm, got {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must have 3 positive values in mm, got {tuple(spacing)!r}")
    return values


def _check_tolerance(tolerance_mm) -> float:
    try:
        tol = float(tolerance_mm)
    except (TypeError, ValueError):
        tol = float("nan")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0 (mm), got {tolerance_mm!r}")
    return tol


@dataclass(frozen=True)
class SurfaceResult:
    """Per-foreground-class surface metrics of one prediction against one dense reference.

    Attributes:
        hd95: class -> 95th-percentile Hausdorff distance in mm.
        assd: class -> average symmetric surface distance in mm.
        nsd: class -> normalised surface Dice at ``tolerance_mm`` (0..1).
        spacing: voxel spacing in mm used, per array axis.
        tolerance_mm: NSD tolerance in mm.
    """

    hd95: dict[int, MetricValue]
    assd: dict[int, MetricValue]
    nsd: dict[int, MetricValue]
    spacing: tuple[float, float, float]
    tolerance_mm: float

    def to_dict(self) -> dict:
        """JSON-ready dict; class keys become strings, values ``{"value", "reason"}``."""
        return {
            "spacing": list(self.spacing),
            "tolerance_mm": self.tolerance_mm,
            "hd95": {str(c): v.to_dict() for c, v in self.hd95.items()},
            "assd": {str(c): v.to_dict() for c, v in self.assd.items()},
            "nsd": {str(c): v.to_dict() for c, v in self.nsd.items()},
        }


def surface_metrics(
    prediction,
    reference,
    *,
    num_classes: int,
    spacing,
    tolerance_mm: float = 1.0,
    ignore_label: int | None = None,
) -> SurfaceResult:
    """HD95, ASSD and NSD per foreground class, in mm.

    Args:
        prediction: int array ``[X, Y, Z]``, values ``0..K-1``.
        reference: int array ``[X, Y, Z]``, values ``0..K-1``; must be dense.
        num_classes: K, background included (``>= 2``); classes ``1..K-1`` are reported.
        spacing: voxel size in mm per array axis, e.g. ``(1.0, 1.0, 2.5)``.
        tolerance_mm: NSD tolerance in mm (``>= 0``). Default 1.0.
        ignore_label: value marking unannotated voxels in the dataset, or ``None``. Only used to
            recognise a partial reference, which is refused.

    Returns:
        :class:`SurfaceResult`; empty classes follow the module's conventions.

    Raises:
        ValueError: a partial reference, mismatched shapes, a bad spacing or tolerance.
    """
    check_classes(num_classes, ignore_label)
    sp = check_spacing(spacing)
    tol = _check_tolerance(tolerance_mm)
    pred, _ = check_label_volume(prediction, name="prediction", num_classes=num_classes)
    ref, n_ignored = check_label_volume(
        reference, name="reference", num_classes=num_classes, ignore_label=ignore_label,
        hint="surface metrics need a dense reference (if these voxels are unannotated, use overlap_metrics)",
    )
    if n_ignored:
        raise ValueError(
            f"surface metrics (HD95, ASSD, NSD) need a dense reference, but the reference is partial: "
            f"{n_ignored} voxels are ignore_label={ignore_label}; use overlap_metrics for partial references"
        )
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference must have the same shape, got {pred.shape} and {ref.shape}")
    hd95: dict[int, MetricValue] = {}
    assd: dict[int, MetricValue] = {}
    nsd: dict[int, MetricValue] = {}
    for c in range(1, num_classes):
        p, r = pred == c, ref == c
        has_p, has_r = bool(p.any()), bool(r.any())
        if not (has_p and has_r):
            if not has_p and not has_r:
                hd95[c] = assd[c] = nsd[c] = MetricValue.undefined(ABSENT)
            else:
                hd95[c] = assd[c] = MetricValue.undefined(EMPTY_PREDICTION if not has_p else EMPTY_REFERENCE)
                nsd[c] = MetricValue(0.0)
            continue
        h, a, n = _monai_surface(p, r, spacing=sp, tolerance_mm=tol)
        hd95[c], assd[c], nsd[c] = MetricValue(h), MetricValue(a), MetricValue(n)
    return SurfaceResult(hd95=hd95, assd=assd, nsd=nsd, spacing=sp, tolerance_mm=tol)


def _monai_surface(p: np.ndarray, r: np.ndarray, *, spacing: tuple[float, float, float], tolerance_mm: float) -> tuple[float, float, float]:
    """MONAI's HD95, ASSD and NSD for two non-empty binary masks ``[X, Y, Z]``."""
    yp = torch.from_numpy(p)[None, None].float()
    yr = torch.from_numpy(r)[None, None].float()
    with warnings.catch_warnings():
        # MONAI 1.6.1 passes its own deprecated ``always_return_as_numpy`` argument on every call.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        h = compute_hausdorff_distance(yp, yr, include_background=True, percentile=95, spacing=spacing)
        a = compute_average_surface_distance(yp, yr, include_background=True, symmetric=True, spacing=spacing)
        n = compute_surface_dice(yp, yr, class_thresholds=[tolerance_mm], include_background=True, spacing=spacing)
    return float(h[0, 0]), float(a[0, 0]), float(n[0, 0])
