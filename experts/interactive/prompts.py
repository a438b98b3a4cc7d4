"""Prompts of interactive segmentation and their encoding as input channels (nnInteractive's layout).

A prompt is a click, a scribble or a box, positive or negative, in voxel indices of the model's grid.
A promptable network sees the image plus :data:`CHANNELS`: the previous prediction of the target
class, then box +/-, click +/-, scribble +/- (Isensee et al., nnInteractive, arXiv 2503.08373). A
click is a ball of ``click_radius`` voxels, a scribble its path thickened by ``scribble_radius``
voxels, a box its filled cuboid (a 2D box is one slice thick). Older prompts fade: the i-th of n
prompts is drawn with weight ``decay ** (n - 1 - i)``, and a channel holds the largest weight over
its prompts.

Shapes: ``render_prompts(...) -> [6, d, h, w]`` float32 for a region ``(slice, slice, slice)`` of
the volume (the previous-prediction channel is the caller's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line_nd

__all__ = ["CHANNELS", "PROMPT_CHANNELS", "KINDS", "Prompt", "PromptEncoding", "render_prompts", "prompt_voxels"]

#: the extra input channels, in order
CHANNELS = ("previous", "box+", "box-", "click+", "click-", "scribble+", "scribble-")
#: how many there are
PROMPT_CHANNELS = len(CHANNELS)
KINDS = ("box", "click", "scribble")


@dataclass(frozen=True)
class Prompt:
    """One interaction, in voxel indices ``[x, y, z]`` of the model's grid.

    Attributes:
        kind: ``"click"`` (one point), ``"scribble"`` (a polyline, or a voxel set when not
            ``connected``) or ``"box"`` (two points: inclusive lower and upper corners).
        points: int ``[N, 3]``.
        positive: adds to the object (True) or removes from it (False).
        connected: scribbles only: join consecutive points by straight segments.
    """

    kind: str
    points: np.ndarray
    positive: bool = True
    connected: bool = True

    def __post_init__(self):
        pts = np.asarray(self.points, dtype=np.int64).reshape(-1, 3)
        object.__setattr__(self, "points", pts)
        if self.kind not in KINDS:
            raise ValueError(f"prompt kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if len(pts) == 0 or (self.kind == "click" and len(pts) != 1) or (self.kind == "box" and len(pts) != 2):
            raise ValueError(f"a {self.kind} needs {'1 point' if self.kind == 'click' else '2 corners' if self.kind == 'box' else 'at least 1 point'}, got {len(pts)}")
        if self.kind == "box" and (pts[1] < pts[0]).any():
            raise ValueError(f"a box's upper corner {pts[1].tolist()} lies below its lower corner {pts[0].tolist()} on some axis")

    def channel(self) -> int:
        """Index of its channel among the six prompt channels (after the previous prediction)."""
        return 2 * KINDS.index(self.kind) + (0 if self.positive else 1)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive voxel bounds ``(lower [3], upper [3])`` of what it touches (before thickening)."""
        return self.points.min(axis=0), self.points.max(axis=0)

    def to_json(self) -> dict:
        return {"type": self.kind, "points": self.points.tolist(), "positive": bool(self.positive)}


@dataclass(frozen=True)
class PromptEncoding:
    """How prompts become channels (sizes in voxels of the model's grid; nnInteractive: 4, 1, 0.98)."""

    click_radius: int = 2
    scribble_radius: int = 1
    decay: float = 0.98


def _ball(radius: int) -> np.ndarray:
    r = int(radius)
    g = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return (g**2).sum(0) <= r * r + 1e-9


def prompt_voxels(prompt: Prompt) -> np.ndarray:
    """The voxels a prompt marks before thickening, int ``[N, 3]`` (a box: its two corners)."""
    if prompt.kind != "scribble" or not prompt.connected or len(prompt.points) == 1:
        return prompt.points
    pieces = [prompt.points[:1]]
    for a, b in zip(prompt.points[:-1], prompt.points[1:]):
        pieces.append(np.stack(line_nd(a, b, endpoint=True), axis=1))
    return np.unique(np.concatenate(pieces), axis=0)


def _draw(out: np.ndarray, prompt: Prompt, origin: np.ndarray, weight: float, enc: PromptEncoding) -> None:
    """Draw one prompt into ``out [d, h, w]`` (a region starting at ``origin``), keeping the max."""
    shape = np.asarray(out.shape)
    if prompt.kind == "box":
        lo = np.maximum(prompt.points[0] - origin, 0)
        hi = np.minimum(prompt.points[1] - origin + 1, shape)
        if (hi > lo).all():
            view = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            np.maximum(view, weight, out=view)
        return
    radius = enc.click_radius if prompt.kind == "click" else enc.scribble_radius
    pts = prompt_voxels(prompt) - origin
    keep = ((pts >= -radius) & (pts < shape + radius)).all(axis=1)
    pts = pts[keep]
    if not len(pts):
        return
    lo = pts.min(axis=0) - radius
    local = np.zeros(tuple(pts.max(axis=0) + radius + 1 - lo), dtype=bool)
    local[tuple((pts - lo).T)] = True
    if radius > 0:
        local = ndi.binary_dilation(local, structure=_ball(radius))
    a, b = np.maximum(lo, 0), np.minimum(lo + local.shape, shape)
    if (b <= a).any():
        return
    piece = local[tuple(slice(s - l, e - l) for s, e, l in zip(a, b, lo))]
    view = out[a[0] : b[0], a[1] : b[1], a[2] : b[2]]
    view[piece] = np.maximum(view[piece], weight)


def render_prompts(prompts: Sequence[Prompt], region: Sequence[slice], *, encoding: PromptEncoding = PromptEncoding()) -> np.ndarray:
    """The six prompt channels ``[6, d, h, w]`` of ``region`` (three slices with starts and stops).

    Args:
        prompts: in the order they were given (the last is the newest, drawn at weight 1).
        region: the part of the volume to draw, in voxel indices.
        encoding: radii and decay.
    """
    origin = np.asarray([s.start for s in region], dtype=np.int64)
    shape = tuple(int(s.stop - s.start) for s in region)
    out = np.zeros((6, *shape), dtype=np.float32)
    n = len(prompts)
    for i, prompt in enumerate(prompts):
        _draw(out[prompt.channel()], prompt, origin, float(encoding.decay ** (n - 1 - i)), encoding)
    return out
