"""Scribble and prompt simulation: dense 3D labels -> partial labels (annotations + ignore value).

Every class, background included, gets annotations (except where a style says otherwise: a box
annotates only background, clicks may skip it); every other voxel gets ``ignore_label``. Styles are
pluggable (:func:`register_scribble_style`); each separates its random choices
(``make_params(label, *, ignore_label, rng, spacing=(1.0, 1.0, 1.0)) -> dict``, JSON-serialisable)
from drawing (``apply(label, params, *, ignore_label, spacing=..., return_strokes=False)``,
deterministic). ``spacing`` is the voxel size in mm along X, Y, Z; the new styles state every
distance in mm. Styles:

* ``"slicewise"``: ScribbleBench's interior + boundary strokes per slice (Gotkowski et al.,
  arXiv 2403.12834), :class:`SlicewiseScribbles` (sizes in pixels).
* ``"line"``: straight strokes between random interior points, per slice or in 3D, :class:`LineScribbles`.
* ``"centreline"``: the skeleton, 2D per slice or 3D, broken into pieces, :class:`CentrelineScribbles`.
* ``"contour"``: a broken outline just inside each structure, per slice, :class:`ContourScribbles`.
* ``"clicks"``: positive clicks as small balls (random, centre or border), negative clicks kept as
  prompts, :class:`ClickPrompts`.
* ``"box"``: a bounding box per structure (3D, or 2D on one slice): background outside all boxes,
  ignore inside, :class:`BoxPrompts`.
* ``"slices"``: a few densely labelled slices, :class:`SlicePrompts`.
* ``"habit"``: a named annotator habit, a mixture of the styles above (:mod:`experts.scribbles.habits`:
  ``sparse-centreline``, ``contour-tracer``, ``box-then-clicks``, ``quick-lines``), :class:`HabitStyle`.

The three stroke styles (line, centreline, contour) share an optional smooth deformation
(``deform_mm``), breaking noise and a per-class voxel budget (``max_voxels``):
:mod:`experts.scribbles.strokes`. ScribblePrompt's styles (Wong et al., 2024) are 2D; these are their
3D counterparts.

Example:
    >>> partial = simulate_scribbles(label, ignore_label=3, style="slicewise", seed=0, density=0.5)
    >>> partial = simulate_scribbles(label, ignore_label=3, style="centreline", spacing=(0.8, 0.8, 3.0))
    >>> partial = simulate_habit(label, habit="box-then-clicks", ignore_label=3, seed=1)
"""

from __future__ import annotations

import numpy as np

from experts.scribbles.base import DEFAULT_SPACING, ScribbleStyle, StrokeRecord
from experts.scribbles.registry import create_scribble_style, list_scribble_styles, register_scribble_style
from experts.scribbles.slicewise import SlicewiseScribbles
from experts.scribbles.line import LineScribbles
from experts.scribbles.centreline import CentrelineScribbles
from experts.scribbles.contour import ContourScribbles
from experts.scribbles.clicks import ClickPrompts
from experts.scribbles.box import BoxPrompts
from experts.scribbles.slices import SlicePrompts
from experts.scribbles.habits import HabitStyle, get_habit, list_habits, register_habit, simulate_habit

__all__ = [
    "ScribbleStyle",
    "StrokeRecord",
    "SlicewiseScribbles",
    "LineScribbles",
    "CentrelineScribbles",
    "ContourScribbles",
    "ClickPrompts",
    "BoxPrompts",
    "SlicePrompts",
    "HabitStyle",
    "create_scribble_style",
    "list_scribble_styles",
    "register_scribble_style",
    "get_habit",
    "list_habits",
    "register_habit",
    "simulate_habit",
    "simulate_scribbles",
]


def simulate_scribbles(label, *, ignore_label: int, style: str | ScribbleStyle = "slicewise", seed: int = 0,
                       spacing=DEFAULT_SPACING, **style_params) -> np.ndarray:
    """Simulate scribbles on a dense label: ``make_params`` with ``default_rng(seed)``, then ``apply``.

    Args:
        label: int or whole-float array [X, Y, Z]; values 0..K-1 are classes (0 is background).
        ignore_label: value of unannotated voxels (0..65535, not present in ``label``).
        style: a registered style name (default ``"slicewise"``) or a style instance; a habit is
            ``style="habit", habit="<name>"``.
        seed: seed of the only random generator used; same seed, same output.
        spacing: voxel size in mm along X, Y, Z (default 1 mm); distances of the styles are in mm.
        **style_params: configuration of the named style (e.g. ``density=0.5``, ``thickness=1``).

    Returns:
        partial label [X, Y, Z], uint8 (uint16 if ``ignore_label`` or a class exceeds 255).
    """
    if isinstance(style, ScribbleStyle):
        if style_params:
            raise ValueError(f"style_params {sorted(style_params)} given with a style instance; configure the instance")
        instance = style
    else:
        instance = create_scribble_style(style, **style_params)
    params = instance.make_params(label, ignore_label=ignore_label, rng=np.random.default_rng(seed), spacing=spacing)
    return instance.apply(label, params, ignore_label=ignore_label, spacing=spacing)
