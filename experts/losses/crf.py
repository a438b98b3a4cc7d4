"""Masked (gated) CRF loss in 3D: a Potts energy on the voxels that carry no annotation.

Obukhov et al., "Gated CRF loss for weakly supervised semantic image segmentation" (2019), as used by
AttenScribble (arXiv 2312.06614); a 3D form with a physical-spacing kernel as in HiLab-git/PA-Seg.
With ``p_i`` the softmax prediction, ``m_i = 1`` on unannotated voxels and ``N_r(i)`` a local window::

    E = sum_i m_i sum_{j in N_r(i), j != i} K_ij (1 - sum_c p_ic p_jc) / sum_i m_i
    K_ij = exp(-|x_i - x_j|^2 / (2 sigma_xy^2) - |I_i - I_j|^2 / (2 sigma_I^2))

with positions ``x`` in mm (from ``batch.spacing``) and ``I`` the image (all channels). Neighbours
that look alike and lie close cost when they are predicted differently, so labels spread from the
scribbles along homogeneous regions and stop at intensity edges. The energy is computed on the
prediction, image and mask average-pooled ``downsample`` times (2x by default: a radius-(3,3,3)
window is 342 neighbours at half resolution, i.e. 7x that reach at full resolution), one offset of
the window at a time (no Python loop over voxels), using ``K_ij = K_ji`` to visit each pair once.
Its gradient is written by hand (:class:`_PottsEnergy`), so memory stays at one prediction-sized
buffer whatever the window.

Published 2D settings: sigma_xy 6 px, sigma_rgb 0.1 on [0, 1] images, radius 5, weight 0.1. Here
the image is z-scored, so ``sigma_intensity`` is in standard deviations; choose both sigmas (and the
weight) on validation cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from experts.errors import ConfigError
from experts.losses.terms import LossTerm, register_term
from experts.records import Batch, NetOutput
from experts.windows import pair_slices, window_offsets

__all__ = ["MaskedCRF", "masked_crf_energy", "unannotated_mask", "pooled"]


def unannotated_mask(label: torch.Tensor, ignore_label: int | None) -> torch.Tensor:
    """``[B, 1, D, H, W]`` float, 1 where the label is the ignore value (0 everywhere for dense labels)."""
    if ignore_label is None:
        return torch.zeros_like(label, dtype=torch.float32)
    return (label == ignore_label).float()


def pooled(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool ``[B, C, D, H, W]`` by ``factor`` per axis (1: unchanged)."""
    return x if factor == 1 else F.avg_pool3d(x, factor)


def _kernel(image: torch.Tensor, spacing: torch.Tensor, offset, src, dst, *, sigma_xy: float, sigma_i: float) -> torch.Tensor:
    """``K_ij`` for every pair ``(i, i + offset)``: ``[B, 1, *box]``."""
    dist2 = ((spacing * torch.tensor(offset, dtype=spacing.dtype, device=spacing.device)) ** 2).sum(1)  # [B] mm^2
    diff2 = (image[src] - image[dst]).square().sum(1, keepdim=True)
    return torch.exp(-dist2.view(-1, 1, 1, 1, 1) / (2 * sigma_xy**2) - diff2 / (2 * sigma_i**2))


class _PottsEnergy(torch.autograd.Function):
    """``sum_{o in half window} sum_i K_io (m_i + m_{i+o}) (1 - p_i . p_{i+o})`` and its gradient in ``p``."""

    @staticmethod
    def forward(ctx, p, image, mask, spacing, offsets, sigma_xy, sigma_i):
        total = p.new_zeros(())
        spatial = p.shape[2:]
        for o in offsets:
            src, dst = pair_slices(spatial, o)
            w = _kernel(image, spacing, o, src, dst, sigma_xy=sigma_xy, sigma_i=sigma_i) * (mask[src] + mask[dst])
            total += (w * (1 - (p[src] * p[dst]).sum(1, keepdim=True))).sum()
        ctx.save_for_backward(p, image, mask, spacing)
        ctx.offsets, ctx.sigmas = offsets, (sigma_xy, sigma_i)
        return total

    @staticmethod
    def backward(ctx, grad):
        p, image, mask, spacing = ctx.saved_tensors
        sigma_xy, sigma_i = ctx.sigmas
        g = torch.zeros_like(p)
        for o in ctx.offsets:
            src, dst = pair_slices(p.shape[2:], o)
            w = _kernel(image, spacing, o, src, dst, sigma_xy=sigma_xy, sigma_i=sigma_i) * (mask[src] + mask[dst])
            g[src] -= w * p[dst]
            g[dst] -= w * p[src]
        return g * grad, None, None, None, None, None, None


def masked_crf_energy(
    probs: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor,
    spacing: torch.Tensor,
    *,
    radius=(3, 3, 3),
    dilation: int = 1,
    sigma_xy_mm: float = 8.0,
    sigma_intensity: float = 0.3,
) -> torch.Tensor:
    """The masked Potts energy ``E`` of the module docstring on one grid.

    Args:
        probs: ``[B, K, D, H, W]`` class probabilities (gradients flow into them).
        image: ``[B, C, D, H, W]`` the image on the same grid (no gradient).
        mask: ``[B, 1, D, H, W]`` weight of each voxel as a centre (1 = unannotated; fractions after pooling).
        spacing: ``[B, 3]`` mm per voxel of this grid.
        radius: window half-width per axis in voxels; dilation: step between neighbours.

    Returns:
        Scalar energy; 0 when the mask is empty, or when the prediction is one-hot and constant.
    """
    offsets = window_offsets(radius, dilation=dilation, half=True)
    energy = _PottsEnergy.apply(probs, image.detach().to(probs.dtype), mask.to(probs.dtype), spacing.to(probs.dtype), offsets, float(sigma_xy_mm), float(sigma_intensity))
    return energy / mask.sum().clamp_min(1.0)


@register_term("masked_crf")
class MaskedCRF(LossTerm):
    """The masked CRF loss on unannotated voxels (off by default; see the module docstring).

    Params: ``sigma_xy_mm`` (8.0), ``sigma_intensity`` (0.3, in the z-scored image's units),
    ``radius`` ([3, 3, 3] voxels of the downsampled grid, 342 neighbours), ``dilation`` (1),
    ``downsample`` (2). Parts: ``energy``, ``unannotated_fraction``.

    Config: ``{name: masked_crf, weight: 0.1, start_step: 100, ramp_steps: 200}``.
    """

    @dataclass
    class Params:
        sigma_xy_mm: float = 8.0
        sigma_intensity: float = 0.3
        radius: list[int] = field(default_factory=lambda: [3, 3, 3])
        dilation: int = 1
        downsample: int = 2

    #: more neighbours than this make a step several times slower (a radius-5 cube has 1,330)
    MAX_NEIGHBOURS = 400

    def __init__(self, context, **params):
        super().__init__(context, **params)
        p = self.params
        if p.sigma_xy_mm <= 0 or p.sigma_intensity <= 0 or p.downsample < 1 or p.dilation < 1:
            raise ConfigError(f"loss term 'masked_crf': sigma_xy_mm and sigma_intensity must be > 0 and downsample, dilation >= 1 (got {p.sigma_xy_mm}, {p.sigma_intensity}, {p.downsample}, {p.dilation})")
        try:
            n = 2 * len(window_offsets(p.radius, half=True))
        except ValueError as err:
            raise ConfigError(f"loss term 'masked_crf': {err}") from None
        if n > self.MAX_NEIGHBOURS:
            raise ConfigError(f"loss term 'masked_crf': radius {list(p.radius)} gives {n} neighbours (at most {self.MAX_NEIGHBOURS}); use a smaller radius or a dilation to widen it")

    def forward(self, outputs: NetOutput, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        f = p.downsample
        probs = pooled(outputs.logits.float().softmax(1), f)
        image = pooled(batch.image.float(), f)
        mask = pooled(unannotated_mask(batch.label, self.context.ignore_label), f)
        energy = masked_crf_energy(probs, image, mask, batch.spacing.float() * f, radius=p.radius, dilation=p.dilation, sigma_xy_mm=p.sigma_xy_mm, sigma_intensity=p.sigma_intensity)
        return {"loss": energy, "energy": energy.detach(), "unannotated_fraction": mask.mean().detach()}
