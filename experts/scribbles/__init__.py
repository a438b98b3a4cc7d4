"""Scribble simulation: dense 3D labels -> partial labels (strokes + ignore value).

Every class, background included, gets strokes; every other voxel gets ``ignore_label``. Styles are
pluggable (:func:`register_scribble_style`); each separates its random choices
(``make_params(label, *, ignore_label, rng) -> dict``, JSON-serialisable) from drawing
(``apply(label, params, *, ignore_label)``, deterministic). Styles:

* ``"slicewise"``: ScribbleBench's interior + boundary strokes per slice (Gotkowski et al.,
  arXiv 2403.12834), :class:`SlicewiseScribbles`.

Example:
    >>> partial = simulate_scribbles(label, ignore_label=3, style="slicewise", seed=0, density=0.5)
"""

from __future__ import annotations

import numpy as np

from experts.scribbles.base import ScribbleStyle, StrokeRecord
from experts.scribbles.registry import create_scribble_style, list_scribble_styles, register_scribble_style
from experts.scribbles.slicewise import SlicewiseScribbles

__all__ = [
    "ScribbleStyle",
    "StrokeRecord",
    "SlicewiseScribbles",
    "create_scribble_style",
    "list_scribble_styles",
    "register_scribble_style",
    "simulate_scribbles",
]


def simulate_scribbles(label, *, ignore_label: int, style: str | ScribbleStyle = "slicewise", seed: int = 0,
                       **style_params) -> np.ndarray:
    """Simulate scribbles on a dense label: ``make_params`` with ``default_rng(seed)``, then ``apply``.

    Args:
        label: int or whole-float array [X, Y, Z]; values 0..K-1 are classes (0 is background).
        ignore_label: value of unannotated voxels (0..65535, not present in ``label``).
        style: a registered style name (default ``"slicewise"``) or a style instance.
        seed: seed of the only random generator used; same seed, same output.
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
    params = instance.make_params(label, ignore_label=ignore_label, rng=np.random.default_rng(seed))
    return instance.apply(label, params, ignore_label=ignore_label)
