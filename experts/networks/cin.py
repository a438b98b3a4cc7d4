"""Conditional instance normalisation (CIN): one row of scale and shift per expert.

``y = gamma[e] * (x - mean) / std + beta[e]`` with statistics per sample and channel over the spatial
axes, ``gamma, beta`` of shape ``[num_experts, channels]`` initialised to 1 and 0. Everything else in
the network is shared, so an expert's labelling style lives in a few numbers per layer and a new
expert is a new row (Dumoulin et al., ICLR 2017; Hu & Qin, arXiv 2402.07330).

Rows are stored in blocks: the pretrained table is one block, and each expert added later gets a block
of its own (:meth:`ConditionalInstanceNorm.add_experts`), a separate ``nn.Parameter`` that an optimiser
can own alone. Adam's moments and weight decay move parameters whose gradient is zero, so masking the
gradient of a shared table would not keep the pretrained rows still.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConditionalInstanceNorm", "SharedInstanceNorm"]


class ConditionalInstanceNorm(nn.Module):
    """Instance norm without affine, then the expert's scale and shift.

    Args:
        channels: number of feature channels C.
        num_experts: rows of the table (experts known at construction).
        eps: added to the variance.

    Shapes:
        ``forward(x [B, C, *spatial], expert LongTensor[B]) -> [B, C, *spatial]``.
    """

    def __init__(self, channels: int, num_experts: int, eps: float = 1e-5):
        super().__init__()
        if channels < 1 or num_experts < 1:
            raise ValueError(f"channels and num_experts must be >= 1, got {channels}, {num_experts}")
        self.channels = channels
        self.eps = eps
        self.gamma = nn.ParameterList([nn.Parameter(torch.ones(num_experts, channels))])
        self.beta = nn.ParameterList([nn.Parameter(torch.zeros(num_experts, channels))])

    @property
    def num_experts(self) -> int:
        return sum(int(g.shape[0]) for g in self.gamma)

    def table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All rows, ``([E, C], [E, C])``, blocks concatenated in order."""
        return torch.cat(list(self.gamma)), torch.cat(list(self.beta))

    def add_experts(self, gamma: torch.Tensor, beta: torch.Tensor) -> tuple[nn.Parameter, nn.Parameter]:
        """Append a block of new rows (``[n, C]`` each) as new parameters and return them."""
        if gamma.shape != beta.shape or gamma.ndim != 2 or gamma.shape[1] != self.channels:
            raise ValueError(f"new rows must both be [n, {self.channels}], got {tuple(gamma.shape)} and {tuple(beta.shape)}")
        ref = self.gamma[0]
        g = nn.Parameter(gamma.detach().clone().to(ref.device, ref.dtype))
        b = nn.Parameter(beta.detach().clone().to(ref.device, ref.dtype))
        self.gamma.append(g)
        self.beta.append(b)
        return g, b

    def split_row(self, row: int) -> tuple[nn.Parameter, nn.Parameter]:
        """Make ``row`` a block of its own (order kept) and return its two parameters, so that an
        optimiser can own one existing expert's row alone."""
        gamma, beta = self.table()
        if not 0 <= row < gamma.shape[0]:
            raise ValueError(f"row {row} is not in this table of {gamma.shape[0]} experts")
        cuts = [(0, row), (row, row + 1), (row + 1, gamma.shape[0])]
        self.gamma = nn.ParameterList([nn.Parameter(gamma[a:b].detach().clone()) for a, b in cuts if b > a])
        self.beta = nn.ParameterList([nn.Parameter(beta[a:b].detach().clone()) for a, b in cuts if b > a])
        index = 1 if row > 0 else 0
        return self.gamma[index], self.beta[index]

    def merge_blocks(self) -> None:
        """Fold every block into one table (for saving a plain full model)."""
        gamma, beta = self.table()
        self.gamma = nn.ParameterList([nn.Parameter(gamma.detach().clone())])
        self.beta = nn.ParameterList([nn.Parameter(beta.detach().clone())])

    def forward(self, x: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        if expert.ndim != 1 or expert.shape[0] != x.shape[0]:
            raise ValueError(f"expert must be a LongTensor[B] with B={x.shape[0]}, got shape {tuple(expert.shape)}")
        gamma, beta = self.table()
        view = (x.shape[0], self.channels) + (1,) * (x.ndim - 2)
        y = F.instance_norm(x, eps=self.eps)
        return y * gamma[expert].view(view) + beta[expert].view(view)

    def extra_repr(self) -> str:
        return f"{self.channels}, num_experts={self.num_experts}"


class SharedInstanceNorm(nn.InstanceNorm3d):
    """Plain instance norm with a shared affine; takes and ignores the expert (same call signature)."""

    def __init__(self, channels: int, num_experts: int = 1, eps: float = 1e-5):
        super().__init__(channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor, expert: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG002
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
