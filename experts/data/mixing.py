"""Supervision-maximising augmentation for scribbles (ZScribbleSeg, arXiv 2605.06266): mixing two
scribbled patches of the same expert, and random occlusion.

A scribbled patch supervises few voxels; mixing two of the same expert (their style is the same)
by a binary box mask, CutMix-style, puts two patches' scribbles in one and makes the network
segment structures cut at arbitrary boundaries. The label stays an integer map (each voxel keeps
the label of the patch it came from, the ignore value included), so every loss term keeps working.
Occlusion blanks a random box of the image (to 0, the z-scored mean) and keeps its labels, so the
network must infer the hidden part from the shape around it.

Randomness is separate from application: :meth:`SupervisionAugment.make_params` draws everything
from the sample's seed (partner, boxes), :meth:`SupervisionAugment.apply` is deterministic, so a
sample is still a pure function of ``(item, seed)`` and resume replays it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = ["MixParams", "SupervisionAugment", "MixedPatchDataset"]

Box = tuple[tuple[int, int], ...]  #: (start, stop) per spatial axis


@dataclass(frozen=True)
class MixParams:
    """One sample's draw: the partner ``(item index, seed)`` and the box taken from it, and the
    occluded box; ``None`` where that augmentation does not apply."""

    partner: tuple[int, int] | None = None
    mix_box: Box | None = None
    occlusion_box: Box | None = None


def _box(rng: np.random.Generator, shape: Sequence[int], fraction: tuple[float, float]) -> Box:
    """A random box holding ``fraction`` (drawn uniformly in the range) of the patch's volume."""
    share = rng.uniform(*fraction) ** (1.0 / len(shape))
    out = []
    for n in shape:
        size = max(1, int(round(share * n)))
        start = int(rng.integers(0, n - size + 1))
        out.append((start, start + size))
    return tuple(out)


class SupervisionAugment:
    """Draws and applies the mix and the occlusion.

    Args:
        groups: item index -> the indices of its possible partners (the same expert's other
            scribbled items); items not listed (dense labels) are never mixed.
        mix: probability that a scribbled patch is mixed with a partner (0: off).
        occlusion: probability that a patch has a box of its image blanked (0: off).
        mix_fraction: share of the patch's volume taken from the partner (range).
        occlusion_fraction: share of the patch's volume occluded (range).
    """

    def __init__(self, groups: dict[int, list[int]], *, mix: float = 0.0, occlusion: float = 0.0, mix_fraction=(0.25, 0.5), occlusion_fraction=(0.05, 0.2)):
        for name, v in (("mix", mix), ("occlusion", occlusion)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"augment.{name} is a probability in [0, 1], got {v}")
        self.groups, self.mix, self.occlusion = groups, float(mix), float(occlusion)
        self.mix_fraction, self.occlusion_fraction = tuple(mix_fraction), tuple(occlusion_fraction)

    def make_params(self, index: int, seed: int, shape: Sequence[int]) -> MixParams:
        rng = np.random.default_rng([int(seed), 0x5C81])
        partner = mix_box = occ = None
        partners = self.groups.get(index) or []
        if rng.random() < self.mix and partners:
            partner = (int(partners[int(rng.integers(len(partners)))]), int(rng.integers(2**31 - 1)))
            mix_box = _box(rng, shape, self.mix_fraction)
        if rng.random() < self.occlusion:
            occ = _box(rng, shape, self.occlusion_fraction)
        return MixParams(partner, mix_box, occ)

    @staticmethod
    def apply(sample: dict, params: MixParams, partner: dict | None = None) -> dict:
        """``sample`` (``image [C, *S]``, ``label [1, *S]``) mixed with ``partner`` inside
        ``params.mix_box`` and occluded inside ``params.occlusion_box``."""
        out = dict(sample)
        if params.mix_box is not None and partner is not None:
            box = (slice(None), *(slice(a, b) for a, b in params.mix_box))
            out["image"], out["label"] = out["image"].clone(), out["label"].clone()
            out["image"][box] = partner["image"][box]
            out["label"][box] = partner["label"][box]
        if params.occlusion_box is not None:
            box = (slice(None), *(slice(a, b) for a, b in params.occlusion_box))
            out["image"] = out["image"].clone()
            out["image"][box] = 0.0
        return out


class MixedPatchDataset(torch.utils.data.Dataset):
    """A :class:`~experts.data.datasets.PatchDataset` whose patches go through
    :class:`SupervisionAugment`; addressed by ``(item_index, seed)`` like it."""

    def __init__(self, base, augment: SupervisionAugment):
        self.base, self.augment = base, augment

    @classmethod
    def from_items(cls, base, *, mix: float, occlusion: float) -> "MixedPatchDataset":
        """Partners: the same expert's other scribbled (``partial``) items of ``base.items``."""
        by_expert: dict[str, list[int]] = {}
        for i, it in enumerate(base.items):
            if it.kind == "partial":
                by_expert.setdefault(it.expert, []).append(i)
        groups = {i: [j for j in members if j != i] for members in by_expert.values() for i in members}
        return cls(base, SupervisionAugment(groups, mix=mix, occlusion=occlusion))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key
        sample = self.base[key]
        params = self.augment.make_params(index, seed, sample["image"].shape[1:])
        partner = self.base[params.partner] if params.partner is not None else None
        return self.augment.apply(sample, params, partner)
