"""Per-expert low-rank residual adapters on a network's convolutions.

A site wraps one convolution ``y = W * x``. An expert given an adapter at that site gets
``y = W * x + B * (A * x)``: ``A`` a convolution with the same kernel and stride into ``rank``
channels, ``B`` a 1x1x1 convolution back to the output channels, initialised to zero so that a new
adapter changes nothing until it is trained (LoRA, Hu et al., ICLR 2022, on convolutions; residual
adapters per domain, Rebuffi et al., NeurIPS 2017). Other experts' outputs never see it: the
residual is computed for the batch items of that expert alone.

The network says which convolutions are sites (``low_rank_sites()`` in its protocol); an empty
site holds no parameters and no state, so models saved before adapters existed load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LowRankSite"]


class LowRankSite(nn.Module):
    """The per-expert low-rank residuals of one convolution.

    Args:
        in_channels, out_channels: the convolution's channels.
        kernel: its kernel size; stride: its stride (the residual keeps the output's shape).

    Shapes:
        ``forward(x [B, Cin, ...], expert LongTensor[B], y [B, Cout, ...]) -> [B, Cout, ...]``:
        ``y`` plus each adapted expert's residual on its own batch items.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel, self.stride = in_channels, out_channels, kernel, stride
        self.adapters = nn.ModuleDict()

    def add(self, row: int, rank: int, *, generator: torch.Generator | None = None) -> list[nn.Parameter]:
        """Give expert ``row`` a zero-initialised residual of ``rank``; returns its parameters.

        ``A`` starts random (drawn from ``generator``: uniform with Kaiming's bound for its fan-in),
        ``B`` at zero, so the residual is zero and its gradient is not.
        """
        if str(row) in self.adapters:
            raise ValueError(f"row {row} already has a low-rank adapter here")
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        down = nn.Conv3d(self.in_channels, rank, self.kernel, stride=self.stride, padding=self.kernel // 2, bias=False)
        up = nn.Conv3d(rank, self.out_channels, 1, bias=False)
        bound = 1.0 / (self.in_channels * self.kernel**3) ** 0.5
        with torch.no_grad():
            down.weight.copy_(torch.rand(down.weight.shape, generator=generator) * 2 * bound - bound)
        nn.init.zeros_(up.weight)
        adapter = nn.Sequential(down, up)
        self.adapters[str(row)] = adapter
        return list(adapter.parameters())

    def rows(self) -> list[int]:
        return sorted(int(k) for k in self.adapters)

    def forward(self, x: torch.Tensor, expert: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for key, adapter in self.adapters.items():
            picked = (expert == int(key)).nonzero().flatten()
            if picked.numel():
                y = y.index_add(0, picked, adapter(x.index_select(0, picked)).to(y.dtype))
        return y

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, rows={self.rows()}"
