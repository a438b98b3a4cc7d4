"""What the hand-drawn stroke styles (``line``, ``centreline``, ``contour``) share.

A stroke style draws, per *unit* (one class on one slice, or one class across slices in 3D), a thin
centre stroke (the style's own part), then the same pipeline:

1. **break**: the centre stroke is broken into pieces by thresholded smooth noise, keeping a fraction
   drawn from ``keep_range`` (pieces ~``break_mm`` long);
2. **thicken**: dilated by a ball of diameter ``thickness_mm`` (an ellipse on a slice), within the
   class, so with anisotropic spacing a stroke has fewer voxels across the coarse axis;
3. **deform** (optional, ``deform_mm`` > 0): moved by a smooth random displacement field of largest
   length ``deform_mm`` and smoothness ``deform_smoothness_mm``, then clipped to the voxels within
   ``deform_mm`` of the class: a stroke wobbles and may stray outside its structure, by at most
   ``deform_mm``. On a slice the field is in-plane, so the stroke stays on its slice;
4. **budget** (optional ``max_voxels``): the annotated voxels *of each class* (over the whole volume)
   are capped at ``max_voxels``: whole pieces are kept in random order while they fit, then the part
   of the next piece nearest a random voxel of it.

Classes are painted in increasing order, so where deformed strokes of two classes overlap the higher
class wins (without deformation strokes stay within their class and never overlap). Every class,
background included, gets strokes. In ``"slice"`` mode the annotated slices are, as in ScribbleBench,
a fraction ``density`` of the slices holding foreground and of the pure-background slices (at least one
slice). Params hold every random choice; the smooth fields as the seed of their own generator
(:mod:`experts.scribbles.fields`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar, Sequence

import numpy as np
from scipy import ndimage as ndi

from experts.scribbles.base import (
    DEFAULT_SPACING,
    ScribbleStyle,
    StrokeRecord,
    check_axis,
    check_int,
    check_label,
    check_pair,
    check_params_fit,
    check_positive,
    check_rng,
    check_spacing,
    ellipsoid_footprint,
    output_dtype,
    plane_spacing,
    resolve_axis,
)
from experts.scribbles.fields import BREAK, BUDGET, DEFORM, break_mask, distance_to, field_rng, warp_mask

__all__ = ["StrokeStyle", "choose_slices", "thicken_mm", "trim_to_budget", "principal_order"]


class StrokeStyle(ScribbleStyle):
    """Base of the stroke styles: configuration, slice choice and the break/thicken/deform/budget pipeline.

    Subclasses call :meth:`_init_strokes` from their constructor and implement :meth:`_unit_params`
    (random choices of one unit) and :meth:`_centre` (its thin stroke, deterministic).
    """

    modes: ClassVar[tuple[str, ...]] = ("slice", "3d")
    kind: ClassVar[str] = ""

    def _init_strokes(self, *, mode: str, axis, density: float, thickness_mm: float, keep_range,
                      break_mm: float, deform_mm: float, deform_smoothness_mm: float, max_voxels) -> None:
        if mode not in self.modes:
            raise ValueError(f"mode must be one of {', '.join(map(repr, self.modes))}, got {mode!r}")
        axis = check_axis(axis)
        if not 0 < density <= 1:
            raise ValueError(f"density must be in (0, 1], got {density}")
        check_positive("thickness_mm", thickness_mm)
        lo, hi = check_pair("keep_range", keep_range)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"keep_range must satisfy 0 < min <= max <= 1 (1 keeps whole strokes), got {keep_range}")
        check_positive("break_mm", break_mm)
        if isinstance(deform_mm, bool) or not 0 <= deform_mm < np.inf:
            raise ValueError(f"deform_mm must be >= 0 (0 disables the deformation), got {deform_mm}")
        check_positive("deform_smoothness_mm", deform_smoothness_mm)
        if max_voxels is not None:
            check_int("max_voxels", max_voxels, 1)
        self.mode, self.axis, self.density = mode, axis, float(density)
        self.thickness_mm, self.keep_range, self.break_mm = float(thickness_mm), (float(lo), float(hi)), float(break_mm)
        self.deform_mm, self.deform_smoothness_mm = float(deform_mm), float(deform_smoothness_mm)
        self.max_voxels = None if max_voxels is None else int(max_voxels)

    def get_params(self) -> dict:
        params = {"mode": self.mode} if len(self.modes) > 1 else {}
        params.update({"axis": self.axis, "density": self.density, "thickness_mm": self.thickness_mm,
                       "keep_range": list(self.keep_range), "break_mm": self.break_mm, "deform_mm": self.deform_mm,
                       "deform_smoothness_mm": self.deform_smoothness_mm, "max_voxels": self.max_voxels})
        return params

    @abstractmethod
    def _unit_params(self, region: np.ndarray, spacing: tuple[float, ...], rng: np.random.Generator) -> list[dict]:
        """Random choices for the strokes of one class ``region`` (bool [A, B] or [X, Y, Z]), one dict per stroke."""

    @abstractmethod
    def _centre(self, region: np.ndarray, unit: dict, params: dict, spacing: tuple[float, ...]) -> np.ndarray:
        """The thin stroke of ``unit`` in ``region`` (same shape, bool), before breaking and thickening."""

    def _drawing_params(self) -> dict:
        """Configuration ``_centre`` needs, copied into the params (so ``apply`` uses only the params)."""
        return {}

    def make_params(self, label, *, ignore_label: int, rng: np.random.Generator, spacing=DEFAULT_SPACING) -> dict:
        """Draw the slices, the strokes' random choices, their kept fractions and the fields' seed.

        Args:
            label: int array [X, Y, Z], classes 0..K-1 (0 is background).
            ignore_label: value of unannotated voxels; must not occur in ``label``.
            rng: the only source of randomness.
            spacing: voxel size in mm along X, Y, Z.

        Returns:
            JSON-serialisable dict: ``style``, ``shape``, ``spacing``, ``mode``, ``axis`` (resolved; None
            in 3D), the drawing configuration, ``seed`` (of the smooth fields) and ``units``, a list of
            ``{"slice" (None in 3D), "class", "keep", ...}`` with the style's own choices.
        """
        lab = check_label(label, ignore_label)
        check_rng(rng)
        spacing = check_spacing(spacing)
        seed = int(rng.integers(2 ** 31))
        units = []
        if self.mode == "slice":
            axis = resolve_axis(self.axis, lab.shape)
            vol, in_plane = np.moveaxis(lab, axis, 0), plane_spacing(spacing, axis)
            for index in choose_slices(vol, self.density, rng):
                for k in np.unique(vol[index]).tolist():
                    units += [self._unit(index, k, u, rng) for u in self._unit_params(vol[index] == k, in_plane, rng)]
        else:
            axis = None
            for k in np.unique(lab).tolist():
                units += [self._unit(None, k, u, rng) for u in self._unit_params(lab == k, spacing, rng)]
        return {"style": self.name, "shape": list(lab.shape), "spacing": list(spacing), "mode": self.mode,
                "axis": axis, "thickness_mm": self.thickness_mm, "break_mm": self.break_mm,
                "deform_mm": self.deform_mm, "deform_smoothness_mm": self.deform_smoothness_mm,
                "max_voxels": self.max_voxels, **self._drawing_params(), "seed": seed, "units": units}

    def _unit(self, index, k: int, choices: dict, rng: np.random.Generator) -> dict:
        lo, hi = self.keep_range
        return {"slice": index, "class": k, "keep": float(rng.uniform(lo, hi)) if hi > lo else lo, **choices}

    def apply(self, label, params: dict, *, ignore_label: int, spacing=DEFAULT_SPACING, return_strokes: bool = False):
        """Draw the strokes of ``params`` (from :meth:`make_params`) on ``label``; deterministic.

        Args:
            label: the int array [X, Y, Z] given to :meth:`make_params`.
            params: the parameters; only they (not this instance's configuration) are used.
            ignore_label: value of unannotated voxels.
            spacing: the voxel size (mm) given to :meth:`make_params`.
            return_strokes: also return one :class:`StrokeRecord` per stroke (after the budget).

        Returns:
            partial label [X, Y, Z] (uint8, uint16 if values exceed 255): stroke classes on strokes,
            ``ignore_label`` elsewhere; with ``return_strokes``, ``(partial, records)``.
        """
        lab = check_label(label, ignore_label)
        spacing = check_spacing(spacing)
        check_params_fit(params, self.name, lab.shape, spacing)
        axis = None if params["axis"] is None else int(params["axis"])
        vol = lab if axis is None else np.moveaxis(lab, axis, 0)
        unit_spacing = spacing if axis is None else plane_spacing(spacing, axis)
        deform_mm, seed = float(params["deform_mm"]), int(params["seed"])
        classes: dict[int, np.ndarray] = {}
        drawn = []
        for i, unit in enumerate(params["units"]):
            k, index = int(unit["class"]), unit["slice"]
            region = vol == k if index is None else vol[int(index)] == k
            if not region.any():
                raise ValueError(f"params do not fit this label: class {k} is absent from "
                                 f"{'the volume' if index is None else f'slice {index}'}")
            centre = self._centre(region, unit, params, unit_spacing)
            centre = break_mask(centre, float(unit["keep"]), float(params["break_mm"]), unit_spacing,
                                field_rng(seed, BREAK, i))
            stroke = thicken_mm(centre, region, float(params["thickness_mm"]), unit_spacing)
            if deform_mm > 0:
                stroke = warp_mask(stroke, deform_mm, float(params["deform_smoothness_mm"]), unit_spacing,
                                   field_rng(seed, DEFORM, i))
                stroke &= distance_to(region, unit_spacing) <= deform_mm + 1e-9
            union = classes.setdefault(k, np.zeros(vol.shape, dtype=bool))
            if index is None:
                union |= stroke
            else:
                union[int(index)] |= stroke
            drawn.append((index, k, stroke))
        vol_spacing = spacing if axis is None else (spacing[axis], *unit_spacing)
        for k in classes:
            classes[k] = trim_to_budget(classes[k], params["max_voxels"], vol_spacing, field_rng(seed, BUDGET, k))
        out = np.full(lab.shape, ignore_label, dtype=output_dtype(lab, ignore_label))
        out_vol = out if axis is None else np.moveaxis(out, axis, 0)
        for k in sorted(classes):
            out_vol[classes[k]] = k
        if not return_strokes:
            return out
        records = []
        for index, k, stroke in drawn:
            kept = stroke & (classes[k] if index is None else classes[k][int(index)])
            if kept.any():
                records.append(StrokeRecord(axis, None if index is None else int(index), k, self.kind, kept))
        return out, records

    def max_stray_mm(self, params: dict) -> float:
        return float(params.get("deform_mm", 0.0))


def choose_slices(vol: np.ndarray, density: float, rng: np.random.Generator) -> list[int]:
    """A fraction ``density`` of the foreground slices and of the background slices of ``vol`` [S, A, B].

    At least one foreground slice if there is foreground, else at least one slice; sorted.
    """
    has_fg = (vol > 0).reshape(vol.shape[0], -1).any(axis=1)
    fg, bg = np.flatnonzero(has_fg), np.flatnonzero(~has_fg)
    chosen = []
    for group, at_least_one in ((fg, len(fg) > 0), (bg, len(fg) == 0)):
        count = min(len(group), max(int(at_least_one), math.floor(density * len(group) + 0.5)))
        if count:
            chosen += rng.choice(group, size=count, replace=False).tolist()
    return sorted(int(i) for i in chosen)


def thicken_mm(centre: np.ndarray, region: np.ndarray, thickness_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Dilate ``centre`` by a ball of diameter ``thickness_mm`` (mm, on a grid of ``spacing``) within ``region``."""
    footprint = ellipsoid_footprint(thickness_mm / 2, spacing)
    if footprint.sum() <= 1 or not centre.any():
        return centre & region
    return ndi.binary_dilation(centre, structure=footprint) & region


def trim_to_budget(mask: np.ndarray, max_voxels: int | None, spacing: Sequence[float],
                   rng: np.random.Generator) -> np.ndarray:
    """``mask`` cut down to at most ``max_voxels`` voxels (None: no cap) in whole pieces where possible.

    Pieces (fully connected components) are kept in random order while they fit; then the
    ``remaining`` voxels of the next piece nearest (mm) a random voxel of it, and no more.
    """
    if max_voxels is None or int(mask.sum()) <= max_voxels:
        return mask
    pieces, n = ndi.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    sizes, boxes = np.bincount(pieces.ravel()), ndi.find_objects(pieces)
    whole, left, out = [], int(max_voxels), None
    for piece in (rng.permutation(n) + 1).tolist():
        if sizes[piece] <= left:
            whole.append(piece)
            left -= int(sizes[piece])
            continue
        box = boxes[piece - 1]
        voxels = np.argwhere(pieces[box] == piece) + [s.start for s in box]
        start = voxels[rng.integers(len(voxels))]
        near = np.argsort((((voxels - start) * np.asarray(spacing)) ** 2).sum(axis=1), kind="stable")[:left]
        out = np.zeros_like(mask)
        out[tuple(voxels[near].T)] = True
        break
    kept = np.isin(pieces, whole)
    return kept if out is None else kept | out


def principal_order(points: np.ndarray, region: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``points`` (int [N, D]) sorted along the principal axis (in mm) of ``region``'s voxels."""
    coords = np.argwhere(region) * np.asarray(spacing)
    if len(coords) <= coords.shape[1]:
        return points
    direction = np.linalg.eigh(np.cov(coords.T))[1][:, -1]
    return points[np.argsort((points * np.asarray(spacing)) @ direction, kind="stable")]
