"""3D U-Nets whose norm layers are conditioned on the expert.

MONAI's ``UNet`` and ``DynUNet`` are chains of ``Sequential`` blocks that cannot pass the expert id
to a norm layer, so these networks are built from MONAI ``Convolution`` blocks (``conv_only=True``)
with their own forward. The expert is an argument of ``forward``, never hidden module state.

Layout (nnU-Net-like): per resolution level two conv-norm-act units, down-sampling by a stride-2
convolution, up-sampling by a stride-2 transposed convolution, skip connections by concatenation, a
1x1x1 convolution head. ``channels=(16, 32, 64, 128)`` means 4 levels, 3 down-samplings; a patch must
be divisible by ``2 ** (levels - 1)`` and keep at least 2 voxels per axis at the bottom, or instance
norm has a single voxel to normalise.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import copy

import torch
from monai.networks.blocks import Convolution
from torch import nn

from experts.networks.attention import LocalSelfAttention
from experts.networks.cin import ConditionalInstanceNorm, SharedInstanceNorm
from experts.networks.lowrank import LowRankSite
from experts.networks.protocol import ConditionedNetwork
from experts.records import NetOutput

__all__ = ["CINUNet", "CIN_PLACEMENTS"]

CIN_PLACEMENTS = ("all", "encoder", "decoder")


def _conv(cin: int, cout: int, *, stride: int = 1, kernel: int = 3, transposed: bool = False) -> Convolution:
    return Convolution(
        spatial_dims=3,
        in_channels=cin,
        out_channels=cout,
        strides=stride,
        kernel_size=kernel,
        conv_only=True,
        is_transposed=transposed,
        padding=0 if kernel % 2 == 0 else None,
        output_padding=0 if transposed else None,
        bias=True,
    )


class ConvNormAct(nn.Module):
    """conv (+ per-expert low-rank residuals) -> (conditional) instance norm -> LeakyReLU."""

    def __init__(self, cin: int, cout: int, *, num_experts: int, conditional: bool, stride: int = 1):
        super().__init__()
        self.conv = _conv(cin, cout, stride=stride)
        self.low_rank = LowRankSite(cin, cout, stride=stride)
        self.norm = (ConditionalInstanceNorm if conditional else SharedInstanceNorm)(cout, num_experts)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.low_rank(x, expert, self.conv(x)), expert))


class ResidualUnit(nn.Module):
    """Two conv-norm units with a (projected) identity shortcut: ``act(x' + norm(conv(act(norm(conv x)))))``."""

    def __init__(self, cin: int, cout: int, *, num_experts: int, conditional: bool, stride: int = 1):
        super().__init__()
        norm = ConditionalInstanceNorm if conditional else SharedInstanceNorm
        self.conv1 = _conv(cin, cout, stride=stride)
        self.low_rank1 = LowRankSite(cin, cout, stride=stride)
        self.norm1 = norm(cout, num_experts)
        self.conv2 = _conv(cout, cout)
        self.low_rank2 = LowRankSite(cout, cout)
        self.norm2 = norm(cout, num_experts)
        self.skip = nn.Identity() if (cin == cout and stride == 1) else _conv(cin, cout, stride=stride, kernel=1)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.low_rank1(x, expert, self.conv1(x)), expert))
        y = self.norm2(self.low_rank2(y, expert, self.conv2(y)), expert)
        return self.act(y + self.skip(x))


class Stage(nn.Module):
    """One resolution level: two conv-norm-act units (or one residual unit)."""

    def __init__(self, cin: int, cout: int, *, num_experts: int, conditional: bool, stride: int, residual: bool):
        super().__init__()
        if residual:
            self.units = nn.ModuleList([ResidualUnit(cin, cout, num_experts=num_experts, conditional=conditional, stride=stride)])
        else:
            self.units = nn.ModuleList(
                [
                    ConvNormAct(cin, cout, num_experts=num_experts, conditional=conditional, stride=stride),
                    ConvNormAct(cout, cout, num_experts=num_experts, conditional=conditional),
                ]
            )

    def forward(self, x: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x, expert)
        return x


class CINUNet(ConditionedNetwork):
    """A 3D U-Net with expert-conditioned instance norm.

    Args:
        in_channels: image channels.
        num_classes: output classes K (background included, ignore excluded).
        num_experts: rows of every CIN table.
        channels: feature widths per level, e.g. ``(16, 32, 64, 128)``.
        cin: where norms are conditional: ``"all"`` (default), ``"encoder"`` or ``"decoder"``; the
            others use instance norm with one shared affine.
        residual: residual units instead of plain conv pairs.
        features: which internal features the output carries: ``"decoder.<l>"`` (the decoder's
            output at level ``l``, 0 = full resolution, the last decoder stage) and
            ``"encoder.<l>"`` (``encoder.<levels-1>`` is the bottleneck). Default ``("decoder.0",)``.
        attention: a shared :class:`~experts.networks.attention.LocalSelfAttention` block after one
            decoder level, e.g. ``{"level": 2, "heads": 4, "radius": [2, 2, 2]}`` (level defaults
            to ``min(2, levels - 2)``, 1/4 resolution in a 4-level net); ``None`` (default): none.
            Its parameters form the role ``attention``; its weights are the feature ``"attention"``
            ``[B, heads, wd, wh, ww, d, h, w]``.

    Shapes:
        ``forward(image [B, C, D, H, W], expert LongTensor[B]) -> NetOutput`` with
        ``logits [B, K, D, H, W]`` and ``features["decoder.0"] [B, channels[0], D, H, W]``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_experts: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        cin: str = "all",
        residual: bool = False,
        features: Sequence[str] = ("decoder.0",),
        attention: Mapping | None = None,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels needs at least 2 positive widths (levels), got {channels}")
        if cin not in CIN_PLACEMENTS:
            raise ValueError(f"cin must be one of {CIN_PLACEMENTS}, got {cin!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and one class), got {num_classes}")
        self.in_channels, self.num_classes, self.channels, self.cin = in_channels, num_classes, channels, cin
        self.attention, self.attention_level = _attention_block(attention, channels)
        unknown = [f for f in features if f not in self.feature_names]
        if unknown:
            raise ValueError(f"unknown feature(s) {', '.join(map(repr, unknown))}; this network returns {', '.join(self.feature_names)}")
        self.returned_features = tuple(dict.fromkeys(features))
        enc_cond, dec_cond = cin in ("all", "encoder"), cin in ("all", "decoder")
        kw = dict(num_experts=num_experts, residual=residual)
        self.encoder = nn.ModuleList(
            Stage(cin_, cout, conditional=enc_cond, stride=1 if i == 0 else 2, **kw)
            for i, (cin_, cout) in enumerate(zip((in_channels,) + channels[:-1], channels))
        )
        self.upsample = nn.ModuleList(_conv(c_hi, c_lo, stride=2, kernel=2, transposed=True) for c_hi, c_lo in zip(channels[:0:-1], channels[-2::-1]))
        self.decoder = nn.ModuleList(Stage(2 * c, c, conditional=dec_cond, stride=1, **kw) for c in channels[-2::-1])
        self.head = _conv(channels[0], num_classes, kernel=1)

    @property
    def divisor(self) -> int:
        """Each spatial size must be a multiple of this (``2 ** (levels - 1)``)."""
        return 2 ** (len(self.channels) - 1)

    @property
    def feature_names(self) -> tuple[str, ...]:
        levels = len(self.channels)
        return tuple(f"decoder.{l}" for l in range(levels - 1)) + tuple(f"encoder.{l}" for l in range(levels)) + (("attention",) if self.attention is not None else ())

    def role_modules(self) -> dict[str, list[nn.Module]]:
        roles = {"shared_encoder": [self.encoder], "shared_decoder": [self.upsample, self.decoder], "head": [self.head]}
        return roles if self.attention is None else {**roles, "attention": [self.attention]}

    def make_head(self) -> nn.Module:
        return copy.deepcopy(self.head)

    def check_input_size(self, spatial: Sequence[int]) -> None:
        """Raise ``ValueError`` if a patch of this size cannot pass through the network."""
        bad = [s for s in spatial if s % self.divisor or s // self.divisor < 2]
        if bad:
            raise ValueError(
                f"patch size {tuple(spatial)} does not fit a {len(self.channels)}-level network: every axis must be a "
                f"multiple of {self.divisor} with at least {2 * self.divisor} voxels (instance norm needs 2 voxels per axis at the bottom)"
            )

    def forward(self, image: torch.Tensor, expert: torch.Tensor, *, prompts: torch.Tensor | None = None) -> NetOutput:
        if _single_on_cpu(image):
            def twice(t):
                return None if t is None else torch.cat([t, t])

            out = self.forward(twice(image), twice(expert), prompts=twice(prompts))
            return NetOutput(logits=out.logits[:1], features={k: v[:1] for k, v in out.features.items()})
        expert = self._conditioning(image, expert, prompts)
        features: dict[str, torch.Tensor] = {}
        skips = self._encode(image, expert, features)
        return self._decode(skips, expert, features)

    def _encode(self, image: torch.Tensor, expert: torch.Tensor, features: dict) -> list[torch.Tensor]:
        skips, x = [], image
        for level, stage in enumerate(self.encoder):
            x = stage(x, expert)
            skips.append(x)
            if f"encoder.{level}" in self.returned_features:
                features[f"encoder.{level}"] = x
        return skips

    def _decode(self, skips: list[torch.Tensor], expert: torch.Tensor, features: dict) -> NetOutput:
        levels, x = len(self.channels), skips[-1]
        for i, (up, stage, skip) in enumerate(zip(self.upsample, self.decoder, reversed(skips[:-1]))):
            x = stage(torch.cat([up(x), skip], dim=1), expert)
            if levels - 2 - i == self.attention_level:
                x, attn = self.attention(x)
                if "attention" in self.returned_features:
                    features["attention"] = attn
            if f"decoder.{levels - 2 - i}" in self.returned_features:
                features[f"decoder.{levels - 2 - i}"] = x
        return NetOutput(logits=self._heads(x, expert, self.head(x)), features=features)

    def expert_logits(self, image: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """As the protocol's, but with ``cin="decoder"`` the encoder (which ignores the expert) runs
        once for all experts and only the decoder and head run per expert (unless an expert has
        low-rank residuals in the encoder)."""
        if self.cin != "decoder" or any(site.adapters for site in self.low_rank_sites(["shared_encoder"]).values()):
            return super().expert_logits(image, rows)
        if _single_on_cpu(image):
            return self.expert_logits(torch.cat([image, image]), rows)[:1]
        b = image.shape[0]
        any_row = torch.zeros(b, dtype=torch.long, device=image.device)
        skips = self._encode(self._check_image(image), any_row, {})
        return torch.stack([self._decode(skips, torch.full((b,), int(r), dtype=torch.long, device=image.device), {}).logits for r in rows], dim=1)


def _single_on_cpu(image: torch.Tensor) -> bool:
    """A batch of one on the CPU: PyTorch then runs most of this network's 3D convolutions on its
    native kernel (a size heuristic tuned for 2D) instead of oneDNN's, about 9x slower than the
    same convolution on a batch of two; so the network runs the sample twice and keeps one (exact
    gradients: the copy's output is unused)."""
    return image.shape[0] == 1 and image.device.type == "cpu" and torch.backends.mkldnn.is_available()


def _attention_block(spec: Mapping | None, channels: tuple[int, ...]) -> tuple[LocalSelfAttention | None, int | None]:
    """The attention block asked for by the constructor's ``attention`` option, and its level."""
    if not spec:
        return None, None
    spec = dict(spec)
    unknown = sorted(set(spec) - {"level", "heads", "radius"})
    if unknown:
        raise ValueError(f"attention: unknown key(s) {', '.join(unknown)}; it takes level, heads, radius")
    level = int(spec.get("level", min(2, len(channels) - 2)))
    if not 0 <= level <= len(channels) - 2:
        raise ValueError(f"attention level must be a decoder level 0..{len(channels) - 2}, got {level}")
    return LocalSelfAttention(channels[level], heads=int(spec.get("heads", 4)), radius=spec.get("radius", (2, 2, 2))), level
