"""Attentive-similarity loss (AttenScribble, arXiv 2312.06614): the Potts form of the masked CRF
with the network's own self-attention as the affinity.

The network's attention block (:mod:`experts.networks.attention`, feature ``"attention"``,
``A [B, heads, wd, wh, ww, d, h, w]``: voxel ``i``'s weight on neighbour ``j = i + o``) gives the
kernel, after three steps as in the paper: averaged over heads and symmetrised,
``S_ij = (A_ij + A_ji) / 2``; masked by a Gaussian distance window with the self-loop removed,
``S_ij * exp(-|x_i - x_j|^2 / (2 sigma^2))`` (mm, from ``batch.spacing``), ``S_ii = 0``; and
normalised per voxel, ``K_ij = S_ij / sum_j S_ij``. Then, on the attention's grid (the prediction
and the unannotated mask average-pooled to it)::

    E = sum_i m_i sum_{j != i} K_ij (1 - sum_c p_ic p_jc) / sum_i m_i

Gradients flow into both the prediction (neighbours the network finds similar should agree) and
the attention (attend to the neighbours that agree). AttenScribble's 2D settings: attention at
64^2, window radius 5, sigma 6 px, weight 0.1 beside a gated CRF of weight 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from experts.errors import ConfigError
from experts.losses.crf import unannotated_mask
from experts.losses.terms import LossTerm, register_term
from experts.records import Batch, NetOutput
from experts.windows import pair_slices

__all__ = ["AttentiveSimilarity", "attentive_energy"]


def attentive_energy(attention: torch.Tensor, probs: torch.Tensor, mask: torch.Tensor, spacing: torch.Tensor, *, sigma_mm: float) -> torch.Tensor:
    """``E`` of the module docstring.

    Args:
        attention: ``[B, heads, wd, wh, ww, d, h, w]`` window weights (each window axis odd).
        probs: ``[B, K, d, h, w]`` class probabilities on the attention's grid.
        mask: ``[B, 1, d, h, w]`` weight of each voxel as a centre (1 = unannotated).
        spacing: ``[B, 3]`` mm per voxel of this grid.

    Returns:
        Scalar energy (0 for an empty mask); differentiable in ``attention`` and ``probs``.
    """
    b, _, *window = attention.shape[:5]
    spatial = tuple(attention.shape[5:])
    if any(w % 2 == 0 for w in window) or tuple(probs.shape[2:]) != spatial:
        raise ValueError(f"attention {tuple(attention.shape)} and prediction {tuple(probs.shape)} do not fit: odd window axes and the same grid needed")
    radius = [w // 2 for w in window]
    a = attention.mean(1).reshape(b, -1, *spatial)  # [B, W, d, h, w]
    offsets = [(i - radius[0], j - radius[1], k - radius[2]) for i in range(window[0]) for j in range(window[1]) for k in range(window[2])]
    index = {o: n for n, o in enumerate(offsets)}
    kernels, pairs = [], []
    for o in offsets:
        if o == (0, 0, 0):
            continue
        src, dst = pair_slices(spatial, o)
        sym = 0.5 * (a[:, index[o]][src] + a[:, index[tuple(-v for v in o)]][dst])  # A_ij at i, A_ji at j = i + o
        dist2 = ((spacing * torch.tensor(o, dtype=spacing.dtype, device=spacing.device)) ** 2).sum(1).view(-1, 1, 1, 1)
        kernels.append(F.pad(sym * torch.exp(-dist2 / (2 * sigma_mm**2)), _pad_back(spatial, src)))
        pairs.append((src, dst))
    k = torch.stack(kernels, 1)  # [B, W-1, d, h, w], 0 where the neighbour is outside the grid
    k = k / k.sum(1, keepdim=True).clamp_min(1e-12)
    total = probs.new_zeros(())
    for n, (src, dst) in enumerate(pairs):
        potts = 1 - (probs[src] * probs[dst]).sum(1)
        total = total + (k[:, n][src] * potts * mask[:, 0][src]).sum()
    return total / mask.sum().clamp_min(1.0)


def _pad_back(spatial, src) -> tuple[int, ...]:
    """``F.pad`` widths that put a box ``x[src]`` back on the full grid (last axis first)."""
    pads = []
    for n, s in reversed(list(zip(spatial, src[1:]))):
        pads += [s.start, n - s.stop]
    return tuple(pads)


@register_term("attentive_similarity")
class AttentiveSimilarity(LossTerm):
    """The attentive-similarity loss on unannotated voxels (off by default; see the module docstring).

    Needs a network with an attention block returning the feature ``attention``
    (``network.attention: {level: 2}``, ``network.features: [decoder.0, attention]``).
    Params: ``sigma_mm`` (10.0). Parts: ``energy``.
    """

    features = ("attention",)

    @dataclass
    class Params:
        sigma_mm: float = 10.0

    def __init__(self, context, **params):
        super().__init__(context, **params)
        if self.params.sigma_mm <= 0:
            raise ConfigError(f"loss term 'attentive_similarity': sigma_mm must be > 0, got {self.params.sigma_mm}")

    def forward(self, outputs: NetOutput, batch: Batch) -> dict[str, torch.Tensor]:
        attention = outputs.feature("attention").float()
        grid = tuple(attention.shape[5:])
        full = tuple(outputs.logits.shape[2:])
        probs = F.adaptive_avg_pool3d(outputs.logits.float().softmax(1), grid)
        mask = F.adaptive_avg_pool3d(unannotated_mask(batch.label, self.context.ignore_label), grid)
        scale = torch.tensor([f / g for f, g in zip(full, grid)], dtype=torch.float32, device=probs.device)
        energy = attentive_energy(attention, probs, mask, batch.spacing.float() * scale, sigma_mm=self.params.sigma_mm)
        return {"loss": energy, "energy": energy.detach()}
