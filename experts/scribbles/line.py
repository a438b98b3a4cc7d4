"""The ``"line"`` scribble style: straight strokes between random interior points (ScribblePrompt's *line*).

Per unit (a class on an annotated slice, or a class in 3D), ``n_strokes`` strokes; each is drawn in
one connected component of the class chosen with probability proportional to its size, through
``n_points`` random points of the component (at least ``thickness_mm / 2`` from its edge where it has
such points), ordered along the component's principal axis. The polyline is clipped to the class, so
a line across a concave structure comes out in pieces, as in ScribblePrompt (Wong et al., 2024).
Breaking, thickening, deformation and the voxel budget are shared with the other stroke styles
(:mod:`experts.scribbles.strokes`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line_nd

from experts.scribbles.base import check_int
from experts.scribbles.registry import register_scribble_style
from experts.scribbles.strokes import StrokeStyle, principal_order

__all__ = ["LineScribbles"]


@register_scribble_style("line")
class LineScribbles(StrokeStyle):
    """Straight strokes between random points inside each structure, per slice or across slices.

    Args:
        mode: ``"slice"`` (strokes on slices along ``axis``) or ``"3d"`` (strokes across slices).
            Default ``"slice"``.
        axis: axis of [X, Y, Z] to slice along (-3..2) or ``"auto"`` (the axis with the most slices);
            ``"slice"`` mode only. Default -1 (Z).
        density: fraction in (0, 1] of the foreground and of the background slices annotated
            (``"slice"`` mode). Default 0.25.
        n_strokes: strokes per class per unit, >= 1. Default 1.
        n_points: points each stroke passes through, >= 1 (2: one straight segment). Default 3.
        thickness_mm: stroke width in mm. Default 2.0.
        keep_range: (min, max) fraction of each stroke kept when breaking it; (1, 1) keeps whole
            strokes. Default (1.0, 1.0).
        break_mm: length scale (mm) of the noise breaking the strokes. Default 6.0.
        deform_mm: largest displacement (mm) of the smooth random warp; 0 disables it. Default 0.0.
        deform_smoothness_mm: smoothness (Gaussian sigma, mm) of the warp. Default 8.0.
        max_voxels: most annotated voxels per class over the volume; None for no cap. Default None.
    """

    kind = "line"

    def __init__(self, *, mode: str = "slice", axis: int | str = -1, density: float = 0.25, n_strokes: int = 1,
                 n_points: int = 3, thickness_mm: float = 2.0, keep_range: tuple[float, float] = (1.0, 1.0),
                 break_mm: float = 6.0, deform_mm: float = 0.0, deform_smoothness_mm: float = 8.0,
                 max_voxels: int | None = None):
        check_int("n_strokes", n_strokes, 1)
        check_int("n_points", n_points, 1)
        self._init_strokes(mode=mode, axis=axis, density=density, thickness_mm=thickness_mm, keep_range=keep_range,
                           break_mm=break_mm, deform_mm=deform_mm, deform_smoothness_mm=deform_smoothness_mm,
                           max_voxels=max_voxels)
        self.n_strokes, self.n_points = int(n_strokes), int(n_points)

    def get_params(self) -> dict:
        return {**super().get_params(), "n_strokes": self.n_strokes, "n_points": self.n_points}

    def _unit_params(self, region, spacing, rng) -> list[dict]:
        comps, n = ndi.label(region, structure=np.ones((3,) * region.ndim, dtype=bool))
        sizes = np.bincount(comps.ravel())[1:]
        units = []
        for _ in range(self.n_strokes):
            component = comps == 1 + int(rng.choice(n, p=sizes / sizes.sum()))
            depth = np.inf if component.all() else ndi.distance_transform_edt(component, sampling=spacing)
            deep = component & (depth >= self.thickness_mm / 2)
            voxels = np.argwhere(deep if deep.any() else component)
            pick = rng.choice(len(voxels), size=min(self.n_points, len(voxels)), replace=False)
            units.append({"points": principal_order(voxels[np.sort(pick)], component, spacing).tolist()})
        return units

    def _centre(self, region, unit, params, spacing) -> np.ndarray:
        points = np.asarray(unit["points"], dtype=int).reshape(-1, region.ndim)
        centre = np.zeros(region.shape, dtype=bool)
        centre[tuple(points.T)] = True
        for start, stop in zip(points[:-1], points[1:]):
            centre[line_nd(start, stop, endpoint=True)] = True
        if not (centre & region).any():
            raise ValueError("params do not fit this label: a line's points lie outside its class")
        return centre & region
