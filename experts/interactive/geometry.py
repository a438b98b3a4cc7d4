"""From the user's coordinates to the model's grid, and the crop an interaction runs on.

Prompts come in voxel indices of the input file or in world coordinates (mm, RAS+, what 3D Slicer
and ITK-SNAP show); the network works on the plan's grid (RAS, the plan's spacing). Both go through
the affines, so an oblique volume's prompts land on the voxel they name. A prompt outside the input
volume is refused with :class:`~experts.errors.ConfigError`.

A crop (:func:`crop_around`) is the region around the prompt and the object it touches, at least the
model's patch, each size a multiple of the network's divisor, shifted inside the volume at its edges;
:func:`grow` enlarges it along the axes where the prediction reached its border (nnInteractive's
AutoZoom at full resolution: zoom out by 1.5 per step, up to 4x).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from experts.errors import ConfigError, shorten

__all__ = ["to_model_voxels", "crop_around", "grow", "touching_axes", "COORDINATES"]

COORDINATES = ("voxel", "world")


def to_model_voxels(points, *, coordinates: str, input_affine: np.ndarray, input_shape: Sequence[int], model_affine: np.ndarray, model_shape: Sequence[int], what: str = "prompt") -> np.ndarray:
    """``points [N, 3]`` in the input's voxels or world mm -> int voxels ``[N, 3]`` of the model grid.

    Raises:
        ConfigError: an unknown coordinate system, points that are not N x 3 finite numbers, or a
            point outside the input volume.
    """
    if coordinates not in COORDINATES:
        raise ConfigError(f"{what}: coordinates must be 'voxel' or 'world' (mm, RAS), got {shorten(coordinates)}")
    try:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: points must be [x, y, z] triples of numbers, got {shorten(points)}") from None
    if not len(pts) or not np.isfinite(pts).all():
        raise ConfigError(f"{what}: points must be [x, y, z] triples of finite numbers, got {shorten(points)}")
    homog = np.c_[pts, np.ones(len(pts))]
    world = homog @ np.asarray(input_affine, float).T if coordinates == "voxel" else homog
    in_voxels = world @ np.linalg.inv(np.asarray(input_affine, float)).T
    shape = np.asarray(input_shape, float)
    outside = ((in_voxels[:, :3] < -0.5) | (in_voxels[:, :3] > shape - 0.5)).any(axis=1)
    if outside.any():
        bad = pts[int(np.argmax(outside))].tolist()
        raise ConfigError(f"{what}: point {shorten(bad)} ({coordinates}) lies outside the image ({' x '.join(str(int(s)) for s in input_shape)} voxels); give points inside it")
    model = world @ np.linalg.inv(np.asarray(model_affine, float)).T
    return np.clip(np.rint(model[:, :3]), 0, np.asarray(model_shape) - 1).astype(np.int64)


def _fit(lo: np.ndarray, size: np.ndarray, shape: np.ndarray) -> tuple[slice, ...]:
    lo = np.clip(lo, 0, np.maximum(shape - size, 0))
    hi = np.minimum(lo + size, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def crop_around(lower, upper, *, shape: Sequence[int], patch: Sequence[int], divisor: int, margin: int = 4) -> tuple[slice, ...]:
    """A region holding voxels ``lower..upper`` (inclusive) plus ``margin``, at least ``patch`` big
    and a multiple of ``divisor`` per axis where the volume allows, inside ``shape``."""
    shape, lo, hi = np.asarray(shape), np.asarray(lower) - margin, np.asarray(upper) + margin + 1
    size = np.maximum(hi - lo, np.asarray(patch))
    size = np.minimum(-(-size // divisor) * divisor, shape)
    centre = (lo + hi) // 2
    return _fit(centre - size // 2, size, shape)


def touching_axes(mask: np.ndarray, region: Sequence[slice], shape: Sequence[int]) -> list[int]:
    """Axes along which ``mask`` (the crop's prediction) reaches a face of ``region`` that is not
    the volume's border."""
    axes = []
    for axis, s in enumerate(region):
        first, last = np.take(mask, 0, axis=axis), np.take(mask, -1, axis=axis)
        if (s.start > 0 and first.any()) or (s.stop < shape[axis] and last.any()):
            axes.append(axis)
    return axes


def grow(region: Sequence[slice], axes: Sequence[int], *, shape: Sequence[int], divisor: int, factor: float = 1.5) -> tuple[slice, ...]:
    """``region`` enlarged by ``factor`` along ``axes`` about its centre, inside ``shape``."""
    lo = np.asarray([s.start for s in region])
    size = np.asarray([s.stop - s.start for s in region])
    new = size.copy()
    for a in axes:
        new[a] = min(-(-int(np.ceil(size[a] * factor)) // divisor) * divisor, int(shape[a]))
    return _fit(lo + size // 2 - new // 2, new, np.asarray(shape))
