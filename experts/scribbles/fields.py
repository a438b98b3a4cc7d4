"""Smooth random fields for hand-drawn strokes: breaking noise and displacement warps (2D or 3D).

A smooth field over a whole volume is too large to log, so a style's params hold the seed of the
field's own generator (:func:`field_rng`) and the field is regenerated from it: replaying the params
regenerates the same field. All lengths are in mm; ``spacing`` gives mm per axis of the grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["BREAK", "DEFORM", "BUDGET", "field_rng", "smooth_noise", "break_mask", "warp_mask", "distance_to"]

BREAK, DEFORM, BUDGET = 1, 2, 3
"""Purposes that keep the generators of one params' fields independent of one another."""


def field_rng(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    """The generator of one field: a function of the params' ``seed``, a purpose and integer keys."""
    return np.random.default_rng([int(seed), int(purpose), *(int(k) for k in keys)])


def smooth_noise(shape: tuple[int, ...], sigma_mm: float, spacing: Sequence[float],
                 rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise [shape], standardised (mean 0, std 1); ``sigma_mm`` its length scale."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape), [sigma_mm / s for s in spacing], mode="reflect")
    spread = noise.std()
    return (noise - noise.mean()) / spread if spread > 0 else noise


def break_mask(centre: np.ndarray, keep: float, sigma_mm: float, spacing: Sequence[float],
               rng: np.random.Generator) -> np.ndarray:
    """Break a thin stroke ``centre`` (bool, 2D or 3D) into pieces with thresholded smooth noise.

    The stroke voxels where the noise is in its top ``keep`` fraction (over the stroke) are kept, so
    about ``keep`` of the stroke survives, in pieces ~``sigma_mm`` long. ``keep >= 1`` keeps all; at
    least one voxel is kept.
    """
    if keep >= 1 or not centre.any():
        return centre
    box = _bounding_box(centre, margin=0)
    noise = smooth_noise(centre[box].shape, sigma_mm, spacing, rng)
    values = noise[centre[box]]
    threshold = np.quantile(values, 1.0 - keep)
    kept = np.zeros_like(centre)
    kept[box] = centre[box] & (noise >= min(threshold, values.max()))
    return kept


def warp_mask(mask: np.ndarray, magnitude_mm: float, smoothness_mm: float, spacing: Sequence[float],
              rng: np.random.Generator) -> np.ndarray:
    """Move ``mask`` (bool, 2D or 3D) by a smooth random displacement field of largest length ``magnitude_mm``.

    The field is Gaussian-filtered noise (``smoothness_mm`` its sigma), one component per axis,
    scaled so its longest displacement vector is ``magnitude_mm``; the mask is resampled through it
    (nearest neighbour, backward mapping, so a stroke keeps no holes). Rounding to the grid can add
    up to half a voxel per axis: callers clip the result to the allowed band (:func:`distance_to`).
    """
    if magnitude_mm <= 0 or not mask.any():
        return mask
    margin = [int(np.ceil(magnitude_mm / s)) + 1 for s in spacing]
    box = _bounding_box(mask, margin=margin)
    crop = mask[box]
    field = np.stack([ndi.gaussian_filter(rng.standard_normal(crop.shape), [smoothness_mm / s for s in spacing],
                                          mode="reflect") for _ in spacing])
    longest = np.sqrt((field ** 2).sum(axis=0)).max()
    if longest == 0:
        return mask
    field *= magnitude_mm / longest
    grid = np.indices(crop.shape, dtype=float)
    coords = grid - field / np.asarray(spacing, dtype=float).reshape((-1,) + (1,) * crop.ndim)
    moved = ndi.map_coordinates(crop.astype(np.float32), coords, order=0, mode="constant", cval=0.0) > 0.5
    out = np.zeros_like(mask)
    out[box] = moved
    return out


def distance_to(region: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest voxel of ``region`` (0 inside; inf if empty)."""
    if not region.any():
        return np.full(region.shape, np.inf)
    return ndi.distance_transform_edt(~region, sampling=spacing)


def _bounding_box(mask: np.ndarray, margin) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels per axis (clipped)."""
    margins = [margin] * mask.ndim if np.isscalar(margin) else list(margin)
    box = []
    for axis, m in enumerate(margins):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(present[0]) - m, 0), min(int(present[-1]) + m + 1, mask.shape[axis])))
    return tuple(box)
