"""Where a user corrects next: the largest error component, clicked at its distance-transform maximum.

The rule of the CVPR 2025 interactive 3D challenge's evaluation and VISTA3D's validation: among the
connected components (26-connectivity) of the false negatives and of the false positives, take the
largest; the next click goes at the maximum of its distance transform (mm; the volume's border
counts as an edge, as in :func:`experts.scribbles.clicks.centre_clicks`), positive for a false
negative, negative for a false positive. A scribble correction runs along the same component: the
skeleton of its cross-section through that point. Errors count on annotated voxels only, so a
partial label's unannotated voxels are never "wrong".

Shapes: ``prediction``, ``target``, ``annotated``: bool ``[X, Y, Z]``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from experts.interactive.prompts import Prompt

__all__ = ["largest_error", "error_click", "error_scribble"]

_FULL = np.ones((3, 3, 3), dtype=bool)


def largest_error(prediction: np.ndarray, target: np.ndarray, annotated: np.ndarray | None = None) -> tuple[np.ndarray, bool] | None:
    """The largest error component ``(bool [X, Y, Z], is_false_negative)``, or None without errors.
    Ties go to the false negatives."""
    pred, tgt = np.asarray(prediction, bool), np.asarray(target, bool)
    if pred.shape != tgt.shape:
        raise ValueError(f"prediction {pred.shape} and target {tgt.shape} differ in shape")
    ann = np.ones_like(tgt) if annotated is None else np.asarray(annotated, bool)
    best, best_size, best_fn = None, 0, True
    for errors, fn in ((tgt & ~pred & ann, True), (~tgt & pred & ann, False)):
        if not errors.any():
            continue
        comps, n = ndi.label(errors, structure=_FULL)
        sizes = np.bincount(comps.ravel())[1:]
        piece = int(np.argmax(sizes))
        if sizes[piece] > best_size:
            best, best_size, best_fn = comps == piece + 1, int(sizes[piece]), fn
    return None if best is None else (best, best_fn)


def _centre(component: np.ndarray, spacing) -> list[int]:
    box = ndi.find_objects(component.astype(np.uint8))[0]
    depth = ndi.distance_transform_edt(np.pad(component[box], 1), sampling=spacing)[(slice(1, -1),) * 3]
    local = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return [int(s.start + i) for s, i in zip(box, local)]


def error_click(prediction, target, annotated=None, *, spacing=(1.0, 1.0, 1.0)) -> Prompt | None:
    """The next click: at the EDT maximum of the largest error component (None: nothing wrong)."""
    found = largest_error(prediction, target, annotated)
    if found is None:
        return None
    component, fn = found
    return Prompt("click", [_centre(component, spacing)], positive=fn)


def error_scribble(prediction, target, annotated=None, *, spacing=(1.0, 1.0, 1.0), axis: int = 2) -> Prompt | None:
    """A scribble along the largest error component: the 2D skeleton of its cross-section along
    ``axis`` through its EDT maximum (the click point alone where the section is a dot)."""
    found = largest_error(prediction, target, annotated)
    if found is None:
        return None
    component, fn = found
    centre = _centre(component, spacing)
    section = np.take(component, centre[axis], axis=axis)
    skeleton = skeletonize(section) if section.sum() > 2 else section
    pts2d = np.argwhere(skeleton)
    if not len(pts2d):
        return Prompt("click", [centre], positive=fn)
    points = np.insert(pts2d, axis, centre[axis], axis=1)
    return Prompt("scribble", points, positive=fn, connected=False)
