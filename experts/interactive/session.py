"""An interactive session: a scan, the current mask of one class, the annotating expert, and undo.

Example:
    >>> session = InteractiveSession(bundle, "sub011_0000.nii.gz", "drB", target="gm")
    >>> session.click([30, 41, 22], positive=True)          # voxel indices of the input file
    {'step': 1, 'seconds': 0.21, 'crop': [[14, 25, 6], [46, 57, 38]], 'voxels': 5120}
    >>> session.box([-20.0, 5.5, 10.0], [4.0, 30.0, 31.5], coordinates="world")   # mm, RAS
    >>> session.undo(); session.save("mask.nii.gz")

Every method takes and returns plain JSON values (lists of numbers, strings, dicts), so a web page
can call it as it is; :meth:`InteractiveSession.mask` is the one that returns an array.

The scan goes onto the model's grid (RAS, the plan's spacing) as in ``predict``. The mask starts as
the automatic model's probability of the class (``target``) for that expert. Each interaction runs
the promptable network on a crop around the prompt and the object it touches
(:mod:`experts.interactive.geometry`), grown while the edited object reaches the crop's border,
pastes the crop's probabilities back except on objects of the mask that the prompt does not touch
(the other hemisphere's nucleus in the same crop keeps its mask) and records what it replaced: :meth:`undo` puts those values back
bit for bit, :meth:`redo` the new ones. The mask on the input grid (:meth:`mask`, :meth:`save`) is
the probability resampled onto the input's exact shape and affine, thresholded at 0.5.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from experts.errors import ConfigError, shorten
from experts.interactive.geometry import crop_around, grow, to_model_voxels, touching_axes
from experts.interactive.prompts import Prompt, PromptEncoding, render_prompts

__all__ = ["InteractiveSession"]


class InteractiveSession:
    """See the module docstring.

    Args:
        model: a :class:`~experts.bundle.ModelBundle` of a promptable network.
        image: channel file path(s), or an array ``[X, Y, Z]`` / ``[C, X, Y, Z]`` with ``affine``.
        expert: the annotating expert's id (the row that answers).
        target: the class to segment (name or index; default the first foreground class).
        affine: ``[4, 4]`` for an array ``image`` (default identity).
        device: where the network runs.
        max_zoom: how far a crop may grow (times its first size); 1 switches growing off.
        start: the mask to start from, a probability ``[D, H, W]`` on the model grid (default: the
            automatic model's for this expert and class); another row's automatic answer, say.
    """

    def __init__(self, model, image=None, expert: str | None = None, *, target: str | int | None = None, affine=None, device: str = "cpu", max_zoom: float = 4.0, start=None):
        if getattr(model.network, "prompt_channels", 0) == 0:
            raise ConfigError("the model takes no prompts; pass an interactive model (expertseg pretrain --interactive, models:/<name>@interactive)")
        if expert not in model.experts:
            raise ConfigError(f"expert {shorten(expert)} is not in this model; it knows {', '.join(model.experts)}")
        self.model, self.expert, self.device, self.max_zoom = model, expert, torch.device(device), float(max_zoom)
        self.row = model.experts.index(expert)
        self.target = _class_index(target, model.plan.class_names)
        self.encoding = PromptEncoding(**model.network.encoding)
        self.seconds_: list[float] = []
        self._work = [0, 0]  # the current interaction's network calls and the voxels they ran on (padded)
        if image is not None:
            self.load(image, affine=affine, start=start)

    # --- the scan ---------------------------------------------------------------------------------
    def load(self, image, *, affine=None, start=None) -> dict:
        """Load a scan, start from ``start`` or the automatic mask, forget every interaction;
        returns a summary."""
        from experts.interactive.grid import to_model_grid

        self.input_shape, self.input_affine, image_t, self.model_affine = to_model_grid(self.model.plan, image, affine=affine)
        self.image = image_t.float()
        if start is None:
            self.prob = self._automatic()
        else:
            self.prob = np.array(start, dtype=np.float32)
            if self.prob.shape != tuple(self.image.shape[1:]):
                raise ConfigError(f"start: a mask of shape {list(self.prob.shape)}; the scan on the model grid is {list(self.image.shape[1:])}")
        self.prompts: list[Prompt] = []
        self.undo_stack: list[tuple] = []
        self.redo_stack: list[tuple] = []
        return self.state()

    def state(self) -> dict:
        return {"expert": self.expert, "class": self.model.plan.class_names[self.target], "input_shape": list(self.input_shape),
                "model_shape": list(self.prob.shape), "interactions": len(self.prompts), "can_undo": bool(self.undo_stack), "can_redo": bool(self.redo_stack)}

    @torch.no_grad()
    def _automatic(self) -> np.ndarray:
        from experts.inference import predict_experts

        probs = predict_experts(self.model.network, self.image, [self.row], patch_size=self.model.plan.patch_size, device=self.device)
        return probs[0, self.target].numpy().astype(np.float32)

    # --- interactions -------------------------------------------------------------------------------
    def click(self, point: Sequence[float], *, positive: bool = True, coordinates: str = "voxel") -> dict:
        """A click at ``[x, y, z]`` (input voxels or world mm): add there (positive) or remove."""
        return self._interact(Prompt("click", self._voxels([point], coordinates, "click"), positive=bool(positive)))

    def scribble(self, points: Sequence[Sequence[float]], *, positive: bool = True, coordinates: str = "voxel") -> dict:
        """A scribble through ``points`` (a polyline, consecutive points joined)."""
        return self._interact(Prompt("scribble", self._voxels(points, coordinates, "scribble"), positive=bool(positive)))

    def box(self, lower: Sequence[float], upper: Sequence[float], *, positive: bool = True, coordinates: str = "voxel") -> dict:
        """A box between two opposite corners (inclusive); one axis may be flat (a box on a slice)."""
        corners = self._voxels([lower, upper], coordinates, "box")
        extent = np.abs(np.asarray(upper, float) - np.asarray(lower, float))
        if (extent <= 0).sum() > 1:
            raise ConfigError(f"box: corners {shorten(list(lower))} and {shorten(list(upper))} have zero size on {(extent <= 0).sum()} axes; a box needs an extent on at least two axes")
        return self._interact(Prompt("box", [corners.min(0), corners.max(0)], positive=bool(positive)))

    def erase(self, points: Sequence[Sequence[float]], *, radius_mm: float = 3.0, coordinates: str = "voxel") -> dict:
        """Remove the mask within ``radius_mm`` of the polyline ``points`` (an eraser brush), no
        network call. It is kept as a negative scribble, so later answers know the region is not
        the object, and undone like any interaction."""
        t0 = time.perf_counter()
        if not (isinstance(radius_mm, (int, float)) and 0 < float(radius_mm) <= 100):
            raise ConfigError(f"erase: radius_mm must be a number in (0, 100] mm, got {shorten(radius_mm)}")
        prompt = Prompt("scribble", self._voxels(points, coordinates, "erase"), positive=False)
        spacing = np.linalg.norm(self.model_affine[:3, :3], axis=0)
        reach = np.ceil(float(radius_mm) / spacing).astype(int)
        lo, hi = prompt.bounds()
        region = tuple(slice(max(int(a) - r, 0), min(int(b) + r + 1, n)) for a, b, r, n in zip(lo, hi, reach, self.prob.shape))
        grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in region], indexing="ij"), -1) * spacing
        pts = prompt.points * spacing
        near = np.zeros(grid.shape[:3], bool)
        for a, b in zip(pts, pts[1:] if len(pts) > 1 else pts):
            ab = b - a
            t = np.clip(((grid - a) @ ab) / max(float(ab @ ab), 1e-9), 0, 1)
            near |= np.linalg.norm(grid - (a + t[..., None] * ab), axis=-1) <= float(radius_mm)
        before = self.prob[region].copy()
        after = np.where(near, 0.0, before).astype(np.float32)
        self.prompts.append(prompt)
        self.prob[region] = after
        self.undo_stack.append((region, before, after, prompt))
        self.redo_stack.clear()
        seconds = time.perf_counter() - t0
        return {"step": len(self.prompts), "seconds": round(seconds, 4), "crop": [[s.start for s in region], [s.stop - 1 for s in region]], "voxels": int((self.prob > 0.5).sum())}

    def add(self, prompt: Prompt) -> dict:
        """A prompt already on the model's grid (simulations, the evaluation protocol)."""
        return self._interact(prompt)

    def undo(self) -> dict:
        """Take back the last interaction (the mask returns to its values before it, bit for bit)."""
        if not self.undo_stack:
            return {**self.state(), "undone": False}
        region, before, after, prompt = self.undo_stack.pop()
        self.prob[region] = before
        self.prompts.pop()
        self.redo_stack.append((region, before, after, prompt))
        return {**self.state(), "undone": True}

    def redo(self) -> dict:
        """Put back the last interaction that :meth:`undo` took back."""
        if not self.redo_stack:
            return {**self.state(), "redone": False}
        region, before, after, prompt = self.redo_stack.pop()
        self.prob[region] = after
        self.prompts.append(prompt)
        self.undo_stack.append((region, before, after, prompt))
        return {**self.state(), "redone": True}

    def _voxels(self, points, coordinates: str, what: str) -> np.ndarray:
        return to_model_voxels(points, coordinates=coordinates, input_affine=self.input_affine, input_shape=self.input_shape, model_affine=self.model_affine, model_shape=self.prob.shape, what=what)

    def _interact(self, prompt: Prompt) -> dict:
        t0 = time.perf_counter()
        self.prompts.append(prompt)
        region = self._first_crop(prompt)
        limit = np.asarray([s.stop - s.start for s in region]) * self.max_zoom
        self._work = [0, 0]
        while True:
            answer = self._predict(region)
            edited = self._edited(region, answer, prompt)
            axes = [a for a in touching_axes((answer > 0.5) & edited, region, self.prob.shape) if region[a].stop - region[a].start < limit[a]]
            if not axes:
                break
            region = grow(region, axes, shape=self.prob.shape, divisor=self.model.network.divisor)
        before = self.prob[region].copy()
        after = np.where(edited, answer, before).astype(np.float32)
        self.prob[region] = after
        self.undo_stack.append((region, before, after, prompt))
        self.redo_stack.clear()
        seconds = time.perf_counter() - t0
        self.seconds_.append(seconds)
        return {"step": len(self.prompts), "seconds": round(seconds, 4), "crop": [[s.start for s in region], [s.stop - 1 for s in region]], "voxels": int((self.prob > 0.5).sum()),
                "network_calls": self._work[0], "network_voxels": self._work[1]}

    def _edited(self, region: tuple[slice, ...], answer: np.ndarray, prompt: Prompt) -> np.ndarray:
        """Where the crop's answer replaces the mask: everywhere but the objects of the current
        mask that the prompt does not touch (components, 26-connected, of the old mask joined with
        the answer, that hold old mask voxels and miss the prompt's footprint). A click on the left
        thalamus edits the left thalamus; the right one, also in the crop, keeps its mask and does
        not grow the crop."""
        from scipy import ndimage as ndi

        old = self.prob[region] > 0.5
        comps, n = ndi.label((answer > 0.5) | old, structure=np.ones((3, 3, 3), bool))
        if n == 0 or not old.any():
            return np.ones(answer.shape, bool)
        footprint = render_prompts([prompt], region, encoding=self.encoding).any(0)
        kept = np.setdiff1d(np.unique(comps[old]), np.unique(comps[footprint]))
        return ~np.isin(comps, kept)

    def _first_crop(self, prompt: Prompt) -> tuple[slice, ...]:
        """Around the prompt and the current object's components that the prompt touches."""
        from scipy import ndimage as ndi

        lo, hi = prompt.bounds()
        r = max(self.encoding.click_radius, self.encoding.scribble_radius)
        near = tuple(slice(max(int(a) - r, 0), int(b) + r + 1) for a, b in zip(lo, hi))
        if (self.prob[near] > 0.5).any():
            comps, _ = ndi.label(self.prob > 0.5, structure=np.ones((3, 3, 3), bool))
            ids = np.setdiff1d(np.unique(comps[near]), [0])
            obj = np.argwhere(np.isin(comps, ids))
            lo, hi = np.minimum(lo, obj.min(0)), np.maximum(hi, obj.max(0))
        return crop_around(lo, hi, shape=self.prob.shape, patch=self.model.plan.patch_size, divisor=self.model.network.divisor)

    @torch.no_grad()
    def _predict(self, region: tuple[slice, ...]) -> np.ndarray:
        """The network's probability of the class on ``region`` ``[d, h, w]``."""
        net, div = self.model.network, self.model.network.divisor
        size = [s.stop - s.start for s in region]
        padded = [max(-(-n // div) * div, 2 * div) for n in size]
        pad = [(0, p - n) for p, n in zip(padded, size)]
        self._work[0] += 1
        self._work[1] += int(np.prod(padded))
        channels = np.concatenate([self.prob[region][None], render_prompts(self.prompts, region, encoding=self.encoding)])
        image = self.image[(slice(None), *region)].numpy()
        x = torch.from_numpy(np.pad(image, [(0, 0), *pad])).to(self.device)[None]
        p = torch.from_numpy(np.pad(channels, [(0, 0), *pad])).to(self.device)[None]
        net.eval()
        logits = net(x, torch.tensor([self.row], device=self.device), prompts=p, target=torch.tensor([self.target], device=self.device)).logits
        out = logits.float().softmax(1)[0, 1].cpu().numpy()
        return out[tuple(slice(0, n) for n in size)].astype(np.float32)

    # --- the result ---------------------------------------------------------------------------------
    def mask(self) -> np.ndarray:
        """The current mask on the input grid, uint8 ``[X, Y, Z]`` (the input's exact shape)."""
        from experts.interactive.grid import to_input_grid

        return (to_input_grid(self.prob, model_affine=self.model_affine, input_affine=self.input_affine, input_shape=self.input_shape) > 0.5).astype(np.uint8)

    def save(self, path: str | Path) -> str:
        """Write the mask (0/1) with the input's affine; returns the path."""
        from experts.data.nifti import save_volume

        return str(save_volume(path, self.mask(), self.input_affine, dtype=np.uint8))


def _class_index(target, class_names: Sequence[str]) -> int:
    if target is None:
        return 1
    if isinstance(target, str) and target in class_names[1:]:
        return list(class_names).index(target)
    if isinstance(target, int) and not isinstance(target, bool) and 1 <= target < len(class_names):
        return target
    raise ConfigError(f"class {shorten(target)} is not a foreground class of this model; it segments {', '.join(class_names[1:])} (or 1..{len(class_names) - 1})")
