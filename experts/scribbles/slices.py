"""The ``"slices"`` style: k densely labelled slices per case (ScribbleBench's sparse-slice alternative).

``n_slices`` slices along ``axis`` are labelled in full, every other voxel is ignore. The slices are
drawn among those holding foreground (among all slices if there is none): uniformly without
replacement (``"random"``), or evenly through them with one random offset (``"even"``: the slice at
quantile ``(j + u) / n`` of the foreground slices, ``u`` uniform), as an annotator labelling every
few slices would.
"""

from __future__ import annotations

import numpy as np

from experts.scribbles.base import (
    DEFAULT_SPACING,
    ScribbleStyle,
    StrokeRecord,
    check_axis,
    check_int,
    check_label,
    check_params_fit,
    check_rng,
    check_spacing,
    output_dtype,
    resolve_axis,
)
from experts.scribbles.registry import register_scribble_style

__all__ = ["SlicePrompts"]


@register_scribble_style("slices")
class SlicePrompts(ScribbleStyle):
    """A few fully labelled slices along one axis; the rest ignore.

    Args:
        n_slices: slices labelled per case, >= 1 (fewer if fewer slices hold foreground). Default 3.
        axis: axis of [X, Y, Z] to slice along (-3..2) or ``"auto"`` (the axis with the most slices).
            Default -1 (Z).
        placement: ``"random"`` or ``"even"`` (see the module docstring). Default ``"random"``.
    """

    def __init__(self, *, n_slices: int = 3, axis: int | str = -1, placement: str = "random"):
        check_int("n_slices", n_slices, 1)
        if placement not in ("random", "even"):
            raise ValueError(f"placement must be 'random' or 'even', got {placement!r}")
        self.n_slices, self.axis, self.placement = int(n_slices), check_axis(axis), placement

    def get_params(self) -> dict:
        return {"n_slices": self.n_slices, "axis": self.axis, "placement": self.placement}

    def make_params(self, label, *, ignore_label: int, rng: np.random.Generator, spacing=DEFAULT_SPACING) -> dict:
        """Choose the slices.

        Args:
            label: int array [X, Y, Z], classes 0..K-1 (0 is background).
            ignore_label: value of unannotated voxels; must not occur in ``label``.
            rng: the only source of randomness.
            spacing: voxel size in mm (X, Y, Z); checked, not used.

        Returns:
            JSON-serialisable dict: ``style``, ``shape``, ``axis`` (resolved) and ``slices`` (sorted indices).
        """
        lab = check_label(label, ignore_label)
        check_rng(rng)
        check_spacing(spacing)
        axis = resolve_axis(self.axis, lab.shape)
        vol = np.moveaxis(lab, axis, 0)
        pool = np.flatnonzero((vol > 0).reshape(vol.shape[0], -1).any(axis=1))
        if len(pool) == 0:
            pool = np.arange(vol.shape[0])
        n = min(self.n_slices, len(pool))
        if self.placement == "random":
            chosen = rng.choice(pool, size=n, replace=False)
        else:
            chosen = pool[np.floor((np.arange(n) + rng.random()) * len(pool) / n).astype(int)]
        return {"style": self.name, "shape": list(lab.shape), "axis": axis,
                "slices": sorted(int(i) for i in chosen)}

    def apply(self, label, params: dict, *, ignore_label: int, spacing=DEFAULT_SPACING, return_strokes: bool = False):
        """Copy the chosen slices of ``label``; ignore elsewhere.

        Returns:
            partial label [X, Y, Z]; with ``return_strokes``, ``(partial, records)``, one record
            (kind ``"slice"``) per class on each slice.
        """
        lab = check_label(label, ignore_label)
        check_spacing(spacing)
        check_params_fit(params, self.name, lab.shape)
        axis = int(params["axis"])
        out = np.full(lab.shape, ignore_label, dtype=output_dtype(lab, ignore_label))
        vol, out_vol = np.moveaxis(lab, axis, 0), np.moveaxis(out, axis, 0)
        records = []
        for index in (int(i) for i in params["slices"]):
            out_vol[index] = vol[index]
            if return_strokes:
                records += [StrokeRecord(axis, index, k, "slice", vol[index] == k) for k in np.unique(vol[index]).tolist()]
        return (out, records) if return_strokes else out
