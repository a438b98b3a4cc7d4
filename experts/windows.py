"""Local windows on 3D grids: neighbour offsets and the slices that pair each voxel with a neighbour.

A pairwise term over a local window (a CRF's Potts energy, local self-attention) is a loop over the
window's offsets, never over voxels: for an offset ``o`` the voxels ``i`` whose neighbour ``i + o``
lies inside the grid form one box, and ``x[src]`` / ``x[dst]`` are the two boxes as views (no copy,
no padding, out-of-grid neighbours simply absent).
"""

from __future__ import annotations

import itertools
from typing import Sequence

__all__ = ["window_offsets", "pair_slices", "window_size"]


def window_offsets(radius: Sequence[int], *, dilation: int = 1, centre: bool = False, half: bool = False) -> list[tuple[int, int, int]]:
    """Offsets ``(dz, dy, dx)`` of a box window, in voxels.

    Args:
        radius: half-width per axis ``(rd, rh, rw)``; the window is ``prod(2 r + 1)`` voxels.
        dilation: step between neighbours (a strided window: the same count over a wider area).
        centre: include ``(0, 0, 0)``.
        half: only one of each pair ``o`` / ``-o`` (the lexicographically positive one), for
            symmetric pairwise terms.

    Returns:
        Offsets in row-major order of the window (so index ``w`` of a window axis is offset
        ``w - r`` times the dilation).
    """
    r = tuple(int(v) for v in radius)
    if len(r) != 3 or min(r) < 0:
        raise ValueError(f"radius must be 3 non-negative integers (D, H, W), got {tuple(radius)}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    out = []
    for o in itertools.product(*(range(-v, v + 1) for v in r)):
        if o == (0, 0, 0) and not centre:
            continue
        if half and o <= (0, 0, 0):
            continue
        out.append(tuple(dilation * v for v in o))
    return out


def window_size(radius: Sequence[int]) -> int:
    """Voxels in the window of ``radius`` (centre included)."""
    n = 1
    for v in radius:
        n *= 2 * int(v) + 1
    return n


def pair_slices(spatial: Sequence[int], offset: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """``(src, dst)``: slices over ``[..., D, H, W]`` such that ``x[src]`` holds voxels ``i`` and
    ``x[dst]`` their neighbours ``i + offset`` (both boxes of the same shape, possibly empty)."""
    src, dst = [], []
    for n, o in zip(spatial, offset):
        src.append(slice(max(0, -o), max(0, n - max(0, o))))
        dst.append(slice(max(0, o), max(0, n + min(0, o))))
    return (Ellipsis, *src), (Ellipsis, *dst)
