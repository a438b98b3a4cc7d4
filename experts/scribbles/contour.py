"""The ``"contour"`` scribble style: an outline just inside each structure (ScribblePrompt's *contour*).

On each annotated slice, the class mask is blurred (Gaussian, ``blur_mm``) and thresholded at a level
drawn from ``level_range``; the 1-pixel edge of what remains inside the class is the outline. A level
above 0.5 pulls the outline inside the structure and rounds its corners, so it runs just inside the
boundary the way a hand-drawn outline does; the optional deformation adds the hand's wobble. The
outline is broken into pieces, thickened and capped as every stroke style
(:mod:`experts.scribbles.strokes`). The image border is not an edge, and a class that fills its slice
has no outline (a pure-background slice gets no stroke). Contours are drawn per slice only: in 3D
the edge of a structure is a surface, not a stroke.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from experts.scribbles.base import check_pair, check_positive
from experts.scribbles.registry import register_scribble_style
from experts.scribbles.strokes import StrokeStyle

__all__ = ["ContourScribbles"]


@register_scribble_style("contour")
class ContourScribbles(StrokeStyle):
    """A broken outline just inside each structure, on slices along one axis.

    Args:
        axis: axis of [X, Y, Z] to slice along (-3..2) or ``"auto"``. Default -1 (Z).
        density: fraction in (0, 1] of the foreground and of the background slices annotated.
            Default 0.25.
        blur_mm: Gaussian sigma (mm) of the blur before thresholding. Default 2.0.
        level_range: (min, max) threshold of the blurred mask, in (0, 1); above 0.5 moves the outline
            inwards. Default (0.5, 0.8).
        thickness_mm: stroke width in mm. Default 2.0.
        keep_range: (min, max) fraction of the outline kept when breaking it. Default (0.3, 0.7).
        break_mm: length scale (mm) of the breaking noise. Default 6.0.
        deform_mm: largest displacement (mm) of the smooth random warp; 0 disables it. Default 0.0.
        deform_smoothness_mm: smoothness (Gaussian sigma, mm) of the warp. Default 8.0.
        max_voxels: most annotated voxels per class over the volume; None for no cap. Default None.
    """

    modes = ("slice",)
    kind = "contour"

    def __init__(self, *, axis: int | str = -1, density: float = 0.25, blur_mm: float = 2.0,
                 level_range: tuple[float, float] = (0.5, 0.8), thickness_mm: float = 2.0,
                 keep_range: tuple[float, float] = (0.3, 0.7), break_mm: float = 6.0, deform_mm: float = 0.0,
                 deform_smoothness_mm: float = 8.0, max_voxels: int | None = None):
        check_positive("blur_mm", blur_mm)
        lo, hi = check_pair("level_range", level_range)
        if not 0 < lo <= hi < 1:
            raise ValueError(f"level_range must satisfy 0 < min <= max < 1, got {level_range}")
        self._init_strokes(mode="slice", axis=axis, density=density, thickness_mm=thickness_mm, keep_range=keep_range,
                           break_mm=break_mm, deform_mm=deform_mm, deform_smoothness_mm=deform_smoothness_mm,
                           max_voxels=max_voxels)
        self.blur_mm, self.level_range = float(blur_mm), (float(lo), float(hi))

    def get_params(self) -> dict:
        return {**super().get_params(), "blur_mm": self.blur_mm, "level_range": list(self.level_range)}

    def _drawing_params(self) -> dict:
        return {"blur_mm": self.blur_mm}

    def _unit_params(self, region, spacing, rng) -> list[dict]:
        if region.all():
            return []
        lo, hi = self.level_range
        return [{"level": float(rng.uniform(lo, hi)) if hi > lo else lo}]

    def _centre(self, region, unit, params, spacing) -> np.ndarray:
        blurred = ndi.gaussian_filter(region.astype(float), [float(params["blur_mm"]) / s for s in spacing],
                                      mode="nearest")
        inner = (blurred > float(unit["level"])) & region
        if not inner.any():  # a structure thinner than the blur: its own edge
            inner = region
        cross = ndi.generate_binary_structure(region.ndim, 1)
        return inner & ~ndi.binary_erosion(inner, structure=cross, border_value=1)
