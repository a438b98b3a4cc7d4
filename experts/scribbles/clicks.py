"""The ``"clicks"`` prompt style: small balls at clicked voxels, positive per class, negatives recorded.

Positive clicks are placed per class in one of three modes (ScribblePrompt's click modes, in 3D):

* ``"random"``: uniformly among the class's voxels;
* ``"centre"``: at the maximum of the distance transform (mm, the image border counting as an edge)
  of each connected component, largest component first, one click per component; with more clicks
  than components the round starts again on the class minus the balls already clicked (the rule of
  the CVPR 2025 interactive 3D challenge and VISTA3D, applied to the structure). Deterministic;
* ``"border"``: uniformly among the class's voxels within ``border_mm`` of its edge (the image border
  is no edge; its outermost layer if the band is thinner than a voxel).

As a partial label (``DATASET_SPEC.md`` rule 10) a positive click labels its class on a ball of
``radius_mm`` around it, clipped to the class; everything else is ignore. Negative clicks (per
foreground class, uniformly among the voxels outside the class within ``negative_band_mm`` of it,
where a user clicks to push a boundary back) label nothing: they stay in the params as prompts, in
voxel indices, for interactive use. The background is clicked too unless ``background=False``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from experts.scribbles.base import (
    DEFAULT_SPACING,
    ScribbleStyle,
    StrokeRecord,
    check_int,
    check_label,
    check_params_fit,
    check_positive,
    check_rng,
    check_spacing,
    ellipsoid_footprint,
    output_dtype,
)
from experts.scribbles.fields import distance_to
from experts.scribbles.registry import register_scribble_style

__all__ = ["ClickPrompts", "ball_mask"]

MODES = ("random", "centre", "border")


@register_scribble_style("clicks")
class ClickPrompts(ScribbleStyle):
    """Positive clicks per class (labelled as small balls) and negative clicks (kept as prompts).

    Args:
        mode: ``"random"``, ``"centre"`` or ``"border"`` (see the module docstring). Default ``"random"``.
        n_positive: positive clicks per class, >= 1 (fewer if the class has fewer voxels). Default 1.
        n_negative: negative clicks per foreground class, >= 0. Default 1.
        radius_mm: radius (mm) of the ball a positive click labels; below the voxel size a click
            labels one voxel. Default 2.0.
        border_mm: width (mm) of the band inside the edge used by ``"border"`` clicks. Default 3.0.
        negative_band_mm: how far (mm) outside a class its negative clicks may lie. Default 5.0.
        background: whether the background (class 0) gets positive clicks. Default True.
    """

    def __init__(self, *, mode: str = "random", n_positive: int = 1, n_negative: int = 1, radius_mm: float = 2.0,
                 border_mm: float = 3.0, negative_band_mm: float = 5.0, background: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        check_int("n_positive", n_positive, 1)
        check_int("n_negative", n_negative, 0)
        if not isinstance(background, bool):
            raise ValueError(f"background must be True or False, got {background!r}")
        self.mode, self.n_positive, self.n_negative = mode, int(n_positive), int(n_negative)
        self.radius_mm = check_positive("radius_mm", radius_mm)
        self.border_mm = check_positive("border_mm", border_mm)
        self.negative_band_mm = check_positive("negative_band_mm", negative_band_mm)
        self.background = background

    def get_params(self) -> dict:
        return {"mode": self.mode, "n_positive": self.n_positive, "n_negative": self.n_negative,
                "radius_mm": self.radius_mm, "border_mm": self.border_mm,
                "negative_band_mm": self.negative_band_mm, "background": self.background}

    def make_params(self, label, *, ignore_label: int, rng: np.random.Generator, spacing=DEFAULT_SPACING) -> dict:
        """Place the positive and negative clicks.

        Args:
            label: int array [X, Y, Z], classes 0..K-1 (0 is background).
            ignore_label: value of unannotated voxels; must not occur in ``label``.
            rng: the only source of randomness.
            spacing: voxel size in mm along X, Y, Z.

        Returns:
            JSON-serialisable dict: ``style``, ``shape``, ``spacing``, ``mode``, ``radius_mm``,
            ``positive`` and ``negative``, lists of ``{"class", "voxel": [x, y, z]}`` in click order.
        """
        lab = check_label(label, ignore_label)
        check_rng(rng)
        spacing = check_spacing(spacing)
        positive, negative = [], []
        for k in np.unique(lab).tolist():
            mask = lab == k
            if k > 0 or self.background:
                positive += [{"class": k, "voxel": v} for v in self._positive(mask, spacing, rng)]
            if k > 0 and self.n_negative:
                band = ~mask & (distance_to(mask, spacing) <= self.negative_band_mm)
                negative += [{"class": k, "voxel": v} for v in _uniform(band, self.n_negative, rng)]
        return {"style": self.name, "shape": list(lab.shape), "spacing": list(spacing), "mode": self.mode,
                "radius_mm": self.radius_mm, "positive": positive, "negative": negative}

    def _positive(self, mask: np.ndarray, spacing, rng) -> list[list[int]]:
        if self.mode == "random":
            return _uniform(mask, self.n_positive, rng)
        if self.mode == "border":
            if mask.all():
                return _uniform(mask, self.n_positive, rng)
            depth = ndi.distance_transform_edt(mask, sampling=spacing)
            return _uniform(mask & (depth <= max(self.border_mm, depth[mask].min())), self.n_positive, rng)
        return centre_clicks(mask, self.n_positive, self.radius_mm, spacing)

    def apply(self, label, params: dict, *, ignore_label: int, spacing=DEFAULT_SPACING, return_strokes: bool = False):
        """Label a ball of ``radius_mm`` (clipped to its class) at each positive click of ``params``.

        Args:
            label: the int array [X, Y, Z] given to :meth:`make_params`.
            params: the parameters; only they are used. Negative clicks label nothing.
            ignore_label: value of unannotated voxels.
            spacing: the voxel size (mm) given to :meth:`make_params`.
            return_strokes: also return one :class:`StrokeRecord` (kind ``"click"``, 3D mask) per click.

        Returns:
            partial label [X, Y, Z]; with ``return_strokes``, ``(partial, records)``.
        """
        lab = check_label(label, ignore_label)
        spacing = check_spacing(spacing)
        check_params_fit(params, self.name, lab.shape, spacing)
        footprint = ellipsoid_footprint(float(params["radius_mm"]), spacing)
        out = np.full(lab.shape, ignore_label, dtype=output_dtype(lab, ignore_label))
        records = []
        for click in params["positive"]:
            k, voxel = int(click["class"]), tuple(int(v) for v in click["voxel"])
            if lab[voxel] != k:
                raise ValueError(f"params do not fit this label: click {list(voxel)} is not in class {k}")
            ball = ball_mask(lab.shape, voxel, footprint) & (lab == k)
            out[ball] = k
            if return_strokes:
                records.append(StrokeRecord(None, None, k, "click", ball))
        return (out, records) if return_strokes else out


def ball_mask(shape: tuple[int, ...], centre: tuple[int, ...], footprint: np.ndarray) -> np.ndarray:
    """Bool [shape]: ``footprint`` (odd-sized, centred) placed at ``centre``, cut at the borders."""
    mask = np.zeros(shape, dtype=bool)
    half = [s // 2 for s in footprint.shape]
    target = tuple(slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(centre, half, shape))
    source = tuple(slice(t.start - (c - h), t.stop - (c - h)) for t, c, h in zip(target, centre, half))
    mask[target] = footprint[source]
    return mask


def centre_clicks(mask: np.ndarray, n: int, radius_mm: float, spacing) -> list[list[int]]:
    """``n`` clicks at distance-transform maxima, largest component first (see the module docstring)."""
    footprint = ellipsoid_footprint(radius_mm, spacing)
    remaining, clicks = mask.copy(), []
    while len(clicks) < n and remaining.any():
        comps, _ = ndi.label(remaining, structure=np.ones((3,) * mask.ndim, dtype=bool))
        boxes = ndi.find_objects(comps)
        sizes = np.bincount(comps.ravel())[1:]
        placed = []
        for piece in np.argsort(-sizes, kind="stable")[: n - len(clicks)]:
            box = boxes[piece]
            depth = ndi.distance_transform_edt(np.pad(comps[box] == piece + 1, 1), sampling=spacing)
            depth = depth[(slice(1, -1),) * mask.ndim]
            local = np.unravel_index(int(np.argmax(depth)), depth.shape)
            placed.append([int(s.start + i) for s, i in zip(box, local)])
        for voxel in placed:
            remaining &= ~ball_mask(mask.shape, tuple(voxel), footprint)
        clicks += placed
    return clicks


def _uniform(region: np.ndarray, n: int, rng: np.random.Generator) -> list[list[int]]:
    """Up to ``n`` distinct voxels of ``region`` drawn uniformly, as index lists."""
    voxels = np.flatnonzero(region)
    if len(voxels) == 0:
        return []
    pick = rng.choice(voxels, size=min(n, len(voxels)), replace=False)
    return [list(map(int, np.unravel_index(int(i), region.shape))) for i in pick]
