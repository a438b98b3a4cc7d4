"""The ``"box"`` prompt style: a bounding box per structure, jittered outwards (in mm).

Each foreground class present gets the tight bounding box of its voxels, grown on each side by an
independent random margin in [0, ``jitter_mm``] (fewer voxels along a coarse axis) and clipped to the
volume. The jitter only ever grows a box (ScribblePrompt also shrinks and shifts it): a box then never
cuts its structure, and the partial label stays truthful. In ``"2d"`` mode one slice holding
foreground is drawn along ``axis`` and each class on it gets a rectangle on that slice only.
"""

from __future__ import annotations

import numpy as np

from experts.scribbles.base import (
    DEFAULT_SPACING,
    ScribbleStyle,
    StrokeRecord,
    check_axis,
    check_label,
    check_params_fit,
    check_rng,
    check_spacing,
    output_dtype,
    plane_spacing,
    resolve_axis,
)
from experts.scribbles.registry import register_scribble_style

__all__ = ["BoxPrompts"]


@register_scribble_style("box")
class BoxPrompts(ScribbleStyle):
    """A 3D bounding box per structure (or a 2D box on one slice), jittered outwards.

    As a partial label (``DATASET_SPEC.md`` rule 10) a box says only where a structure is not: the
    voxels outside the union of all classes' boxes are annotated background (class 0), and every
    voxel inside any box is ignore. In ``"2d"`` mode that holds on the box slice; every other slice is
    ignore. A case without foreground has no box: all of it (its slice in ``"2d"`` mode) is
    background. The boxes themselves stay in the params, as prompts.

    Args:
        mode: ``"3d"`` (a box per class around all its voxels) or ``"2d"`` (rectangles on one slice).
            Default ``"3d"``.
        axis: axis of [X, Y, Z] the ``"2d"`` slice is taken along (-3..2) or ``"auto"``. Default -1.
        jitter_mm: largest margin (mm) added on each side of a tight box; 0 gives tight boxes.
            Default 3.0.
    """

    label_priority = 0

    def __init__(self, *, mode: str = "3d", axis: int | str = -1, jitter_mm: float = 3.0):
        if mode not in ("3d", "2d"):
            raise ValueError(f"mode must be '3d' or '2d', got {mode!r}")
        if isinstance(jitter_mm, bool) or not isinstance(jitter_mm, (int, float)) or not 0 <= jitter_mm < np.inf:
            raise ValueError(f"jitter_mm must be a number of mm >= 0, got {jitter_mm!r}")
        self.mode, self.axis, self.jitter_mm = mode, check_axis(axis), float(jitter_mm)

    def get_params(self) -> dict:
        return {"mode": self.mode, "axis": self.axis, "jitter_mm": self.jitter_mm}

    def make_params(self, label, *, ignore_label: int, rng: np.random.Generator, spacing=DEFAULT_SPACING) -> dict:
        """Draw the margins (and in ``"2d"`` mode the slice) and record the boxes.

        Args:
            label: int array [X, Y, Z], classes 0..K-1 (0 is background).
            ignore_label: value of unannotated voxels; must not occur in ``label``.
            rng: the only source of randomness.
            spacing: voxel size in mm along X, Y, Z.

        Returns:
            JSON-serialisable dict: ``style``, ``shape``, ``spacing``, ``mode``, ``axis`` and ``slice``
            (None in 3D) and ``boxes``, a list of ``{"class", "lower": [x, y, z], "upper": [x, y, z]}``
            with inclusive voxel bounds (``lower[axis] == upper[axis] == slice`` in 2D).
        """
        lab = check_label(label, ignore_label)
        check_rng(rng)
        spacing = check_spacing(spacing)
        boxes = []
        if self.mode == "3d":
            axis = index = None
            for k in (k for k in np.unique(lab).tolist() if k > 0):
                lower, upper = self._box(lab == k, spacing, rng)
                boxes.append({"class": k, "lower": lower, "upper": upper})
        else:
            axis = resolve_axis(self.axis, lab.shape)
            vol = np.moveaxis(lab, axis, 0)
            with_fg = np.flatnonzero((vol > 0).reshape(vol.shape[0], -1).any(axis=1))
            index = int(rng.choice(with_fg)) if len(with_fg) else int(rng.integers(vol.shape[0]))
            for k in (k for k in np.unique(vol[index]).tolist() if k > 0):
                lower, upper = self._box(vol[index] == k, plane_spacing(spacing, axis), rng)
                boxes.append({"class": k, "lower": lower[:axis] + [index] + lower[axis:],
                              "upper": upper[:axis] + [index] + upper[axis:]})
        return {"style": self.name, "shape": list(lab.shape), "spacing": list(spacing), "mode": self.mode,
                "axis": axis, "slice": index, "boxes": boxes}

    def _box(self, mask: np.ndarray, spacing, rng) -> tuple[list[int], list[int]]:
        voxels = np.argwhere(mask)
        grow = np.floor(rng.uniform(0, self.jitter_mm, size=(2, mask.ndim)) / np.asarray(spacing) + 1e-9).astype(int)
        lower = np.maximum(voxels.min(axis=0) - grow[0], 0)
        upper = np.minimum(voxels.max(axis=0) + grow[1], np.asarray(mask.shape) - 1)
        return lower.tolist(), upper.tolist()

    def apply(self, label, params: dict, *, ignore_label: int, spacing=DEFAULT_SPACING, return_strokes: bool = False):
        """Annotate background outside the union of the boxes of ``params``; ignore inside.

        Args:
            label: the int array [X, Y, Z] given to :meth:`make_params`.
            params: the parameters; only they are used.
            ignore_label: value of unannotated voxels.
            spacing: the voxel size (mm) given to :meth:`make_params`.
            return_strokes: also return one :class:`StrokeRecord` (class 0, kind ``"box"``) of the
                annotated background.

        Returns:
            partial label [X, Y, Z]; with ``return_strokes``, ``(partial, records)``.
        """
        lab = check_label(label, ignore_label)
        spacing = check_spacing(spacing)
        check_params_fit(params, self.name, lab.shape, spacing)
        inside = np.zeros(lab.shape, dtype=bool)
        for box in params["boxes"]:
            inside[tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(box["lower"], box["upper"]))] = True
        annotated = ~inside
        if params["mode"] == "2d":
            on_slice = np.zeros(lab.shape, dtype=bool)
            np.moveaxis(on_slice, int(params["axis"]), 0)[int(params["slice"])] = True
            annotated &= on_slice
        if (lab[annotated] != 0).any():
            raise ValueError("params do not fit this label: a structure reaches outside its box")
        out = np.full(lab.shape, ignore_label, dtype=output_dtype(lab, ignore_label))
        out[annotated] = 0
        if not return_strokes:
            return out
        if params["mode"] == "2d":
            axis, index = int(params["axis"]), int(params["slice"])
            record = StrokeRecord(axis, index, 0, "box", np.take(annotated, index, axis=axis))
        else:
            record = StrokeRecord(None, None, 0, "box", annotated)
        return out, [record]
