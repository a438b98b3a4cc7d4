"""The ``"centreline"`` scribble style: the structure's skeleton, broken into pieces (ScribblePrompt's *centreline*).

Per unit, the skeleton of the class (``skimage.morphology.skeletonize``: Zhang's thinning on a slice,
Lee's in 3D) is broken by thresholded smooth noise into pieces, then thickened, optionally deformed
and capped as every stroke style (:mod:`experts.scribbles.strokes`).

Lee's 3D thinning keeps a curve through an elongated or branching structure (tubes, trees, tori),
but reduces a blob without holes to a point, at some sizes to nothing (scikit-image issue #3757), and a
structure with a cavity (a shell around another class, the background around the structures) to a
medial *surface*, which no one would draw. A 3D component whose skeleton is shorter than a third of
its longest extent, or is a surface (its voxels have more than 3 of 26 neighbours on average; about 2
on a curve, 8 on a surface), gets instead its *medial path*: the cheapest path between its two extreme
voxels along its principal axis, through the cost ``1 + 2 * min(spacing) / depth`` (depth: distance to
the edge, mm), which keeps to the middle. An empty 2D skeleton (never seen; kept
as a guard) falls back to the deepest pixel. Skeletons are computed on the voxel grid; the spacing
enters the medial path, the thickening and the noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.graph import MCP_Geometric
from skimage.morphology import skeletonize

from experts.scribbles.registry import register_scribble_style
from experts.scribbles.strokes import StrokeStyle

__all__ = ["CentrelineScribbles", "medial_path"]

_CURVE_NEIGHBOURS = 3.0  # a skeleton whose voxels have more 26-neighbours on average is a surface


@register_scribble_style("centreline")
class CentrelineScribbles(StrokeStyle):
    """The skeleton of each structure, broken into pieces, per slice or in 3D.

    Args:
        mode: ``"slice"`` (2D skeletons on slices along ``axis``) or ``"3d"`` (the 3D skeleton).
            Default ``"slice"``.
        axis: axis of [X, Y, Z] to slice along (-3..2) or ``"auto"``; ``"slice"`` mode only. Default -1.
        density: fraction in (0, 1] of the foreground and of the background slices annotated
            (``"slice"`` mode). Default 0.25.
        thickness_mm: stroke width in mm. Default 2.0.
        keep_range: (min, max) fraction of the skeleton kept when breaking it. Default (0.4, 0.8).
        break_mm: length scale (mm) of the breaking noise, about the length of a piece. Default 6.0.
        deform_mm: largest displacement (mm) of the smooth random warp; 0 disables it. Default 0.0.
        deform_smoothness_mm: smoothness (Gaussian sigma, mm) of the warp. Default 8.0.
        max_voxels: most annotated voxels per class over the volume; None for no cap. Default None.
    """

    kind = "centreline"

    def __init__(self, *, mode: str = "slice", axis: int | str = -1, density: float = 0.25, thickness_mm: float = 2.0,
                 keep_range: tuple[float, float] = (0.4, 0.8), break_mm: float = 6.0, deform_mm: float = 0.0,
                 deform_smoothness_mm: float = 8.0, max_voxels: int | None = None):
        self._init_strokes(mode=mode, axis=axis, density=density, thickness_mm=thickness_mm, keep_range=keep_range,
                           break_mm=break_mm, deform_mm=deform_mm, deform_smoothness_mm=deform_smoothness_mm,
                           max_voxels=max_voxels)

    def _unit_params(self, region, spacing, rng) -> list[dict]:
        return [{}]

    def _centre(self, region, unit, params, spacing) -> np.ndarray:
        if region.ndim == 2:
            skeleton = skeletonize(region)
            if not skeleton.any():
                skeleton = np.zeros_like(region)
                skeleton[np.unravel_index(np.argmax(ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]),
                                          region.shape)] = True
            return skeleton
        comps, _ = ndi.label(region, structure=np.ones((3, 3, 3), dtype=bool))
        skeleton = skeletonize(region)
        for piece, box in enumerate(ndi.find_objects(comps), start=1):
            component = comps[box] == piece
            own = skeleton[box] & component
            if own.sum() * 3 < max(s.stop - s.start for s in box) or _mean_neighbours(own) > _CURVE_NEIGHBOURS:
                skeleton[box] &= ~component
                skeleton[box] |= medial_path(component, spacing)
        return skeleton & region


def _mean_neighbours(mask: np.ndarray) -> float:
    """Mean count of 26-neighbours of a voxel of ``mask`` within ``mask`` (about 2 on a curve, 8 on a surface)."""
    if not mask.any():
        return 0.0
    counts = ndi.convolve(mask.astype(np.int16), np.ones((3, 3, 3), dtype=np.int16), mode="constant") - 1
    return float(counts[mask].mean())


def medial_path(component: np.ndarray, spacing) -> np.ndarray:
    """The cheapest path (bool mask) between the extreme voxels of ``component`` along its principal axis.

    The cost ``1 + 2 * min(spacing) / depth`` (depth: distance in mm to the edge of the padded
    component) keeps the path in the middle; ``skimage.graph.MCP_Geometric`` with the spacing.
    """
    voxels = np.argwhere(component)
    path = np.zeros(component.shape, dtype=bool)
    if len(voxels) <= component.ndim:
        path[tuple(voxels.T)] = True
        return path
    coords = voxels * np.asarray(spacing)
    projection = (coords - coords.mean(axis=0)) @ np.linalg.eigh(np.cov(coords.T))[1][:, -1]
    start, end = voxels[np.argmin(projection)], voxels[np.argmax(projection)]
    depth = ndi.distance_transform_edt(np.pad(component, 1), sampling=spacing)[(slice(1, -1),) * component.ndim]
    cost = np.full(component.shape, np.inf)
    cost[component] = 1.0 + 2.0 * min(spacing) / depth[component]
    mcp = MCP_Geometric(cost, fully_connected=True, sampling=tuple(spacing))
    mcp.find_costs([tuple(start)], [tuple(end)])
    path[tuple(np.asarray(mcp.traceback(tuple(end))).T)] = True
    return path
