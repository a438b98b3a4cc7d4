"""Spatial self-attention over a local window of decoder features (AttenScribble, arXiv 2312.06614).

AttenScribble adds a multi-head spatial self-attention block on internal features and uses its
attention matrix as the affinity of a CRF-like loss (``attentive_similarity``). Full attention over
a 3D patch is ``N^2`` (a 64^3 patch at 1/4 resolution: 4096^2 per head and sample); here each voxel
attends to the voxels of a local window around it on a coarse decoder level, so the attention
tensor is ``[B, heads, wd, wh, ww, d, h, w]``: ``window`` weights per voxel, bounded whatever the
patch. The block is residual with a zero-initialised gain (``y = x + gamma * proj(attn . v)``,
SAGAN's gate), so inserting it leaves a network's output unchanged until it learns to use it.

Its parameters are shared by every expert (there is no expert input): the network lists the block
under a role of its own (``attention``), so adaptation's trainable sets keep it frozen (``rows``,
``rows+head``, ``decoder``) or train it (``all``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from experts.windows import pair_slices, window_offsets

__all__ = ["LocalSelfAttention"]


class LocalSelfAttention(nn.Module):
    """Multi-head self-attention of every voxel over a ``(2r+1)^3``-style window around it.

    Args:
        channels: feature channels ``F`` of the input.
        heads: attention heads; must divide ``F``.
        radius: window half-width per axis ``(rd, rh, rw)`` in voxels of the input grid
            (default ``(2, 2, 2)``: 125 voxels, the centre included).

    Shapes:
        ``forward(x [B, F, d, h, w]) -> (y [B, F, d, h, w], attention [B, heads, wd, wh, ww, d, h, w])``;
        ``attention`` sums to 1 over the window axes at every voxel, and is 0 for neighbours outside
        the grid.
    """

    def __init__(self, channels: int, *, heads: int = 4, radius: Sequence[int] = (2, 2, 2)):
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"attention heads ({heads}) must divide the feature channels ({channels})")
        self.channels, self.heads = int(channels), int(heads)
        self.radius = tuple(int(r) for r in radius)
        self.offsets = window_offsets(self.radius, centre=True)
        self.qkv = nn.Conv3d(channels, 3 * channels, kernel_size=1)
        self.proj = nn.Conv3d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    @property
    def window(self) -> tuple[int, int, int]:
        return tuple(2 * r + 1 for r in self.radius)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, f, *spatial = x.shape
        q, k, v = self.qkv(x).view(b, 3, self.heads, f // self.heads, *spatial).unbind(1)
        q = q * (1.0 / math.sqrt(f // self.heads))
        scores = x.new_full((b, self.heads, len(self.offsets), *spatial), float("-inf"))
        for n, o in enumerate(self.offsets):
            src, dst = pair_slices(spatial, o)
            scores[:, :, n][src] = (q[src] * k[dst]).sum(2)
        attn = scores.softmax(2)  # the centre is always inside the grid, so every row has a finite entry
        out = torch.zeros_like(q)
        for n, o in enumerate(self.offsets):
            src, dst = pair_slices(spatial, o)
            out[src] = out[src] + attn[:, :, n].unsqueeze(2)[src] * v[dst]
        y = x + self.gamma * self.proj(out.reshape(b, f, *spatial))
        return y, attn.view(b, self.heads, *self.window, *spatial)
