"""A promptable network: any conditioned network with seven prompt channels added to its input.

``PromptableNetwork(image [B, C, *S], expert LongTensor[B], *, prompts [B, 7, *S], target
LongTensor[B]) -> NetOutput(logits [B, 2, *S])``: the target class's mask (background, target),
answered with the expert's row, the way that expert draws. The prompt channels are those of
:data:`experts.interactive.prompts.CHANNELS` (nnInteractive's layout, arXiv 2503.08373): the previous
prediction of the target class, box +/-, click +/-, scribble +/-.

It holds two copies of a pretrained multi-expert network:

- ``automatic``: the pretrained network as it was (frozen during interactive training). Without
  prompts, the previous-prediction channel is its probability of the target class, so the first
  answer of a session is the automatic prediction; ``expert_logits`` (what ``predict`` and the
  validation use) is its K-class answer.
- ``interactive``: the same architecture with ``C + 7`` input channels, started from the pretrained
  weights with the new channels' weights at zero (:meth:`PromptableNetwork.from_pretrained`).

One class from a K-class head: the target's logit against the log-sum-exp of the others,
``[logsumexp_{k != c} z_k, z_c]``, whose softmax is exactly the K-class softmax's ``p_c``. The head
keeps every class (one network answers for any target class) and a fresh promptable network given
no prompt reproduces the pretrained network's probability of the target, voxel for voxel.

Both copies' CIN layers are expert rows, so adding an expert (adaptation) gives the new doctor a row
in each: the automatic answer and the refinement both learn that doctor's style.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from experts.networks.protocol import ConditionedNetwork
from experts.records import NetOutput

__all__ = ["PromptableNetwork", "PROMPT_CHANNELS", "binary_logits", "widen_inputs"]

#: extra input channels (previous prediction, box +/-, click +/-, scribble +/-)
PROMPT_CHANNELS = 7


def binary_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B, K, *S]`` class logits -> ``[B, 2, *S]`` (rest, target class ``target LongTensor[B]``)."""
    b, k = logits.shape[:2]
    onehot = torch.zeros(b, k, *([1] * (logits.ndim - 2)), dtype=torch.bool, device=logits.device)
    onehot[torch.arange(b, device=logits.device), target] = True
    z_c = (logits * onehot).sum(1, keepdim=True)
    rest = torch.logsumexp(logits.masked_fill(onehot, float("-inf")), dim=1, keepdim=True)
    return torch.cat([rest, z_c], dim=1)


def widen_inputs(dst: nn.Module, src_state: dict, *, in_channels: int) -> None:
    """Load ``src_state`` into ``dst`` whose input layers take more channels: a tensor that differs
    only along axis 1 (input channels: ``in_channels`` there, more here) gets the source in its first
    ``in_channels`` and zeros after; every other tensor must match."""
    state = dst.state_dict()
    for key, value in state.items():
        src = src_state[key]
        if src.shape == value.shape:
            state[key] = src.clone()
        elif src.ndim == value.ndim >= 2 and src.shape[1] == in_channels and src.shape[:1] + src.shape[2:] == value.shape[:1] + value.shape[2:]:
            wide = torch.zeros_like(value)
            wide[:, :in_channels] = src
            state[key] = wide
        else:
            raise ValueError(f"{key}: pretrained {tuple(src.shape)} does not fit {tuple(value.shape)}")
    dst.load_state_dict(state)


class PromptableNetwork(ConditionedNetwork):
    """See the module docstring.

    Args:
        interactive: the network that reads image + prompts (``C + 7`` input channels).
        automatic: the pretrained network (``C`` input channels), same experts and classes.
        in_channels: image channels C.
        num_classes: classes K of the pretrained head (background included).
        encoding: how prompts become channels (``click_radius``, ``scribble_radius``, ``decay``);
            stored with the model, read by the session.
    """

    prompt_channels = PROMPT_CHANNELS

    def __init__(self, *, interactive: ConditionedNetwork, automatic: ConditionedNetwork, in_channels: int, num_classes: int, encoding: dict | None = None):
        super().__init__()
        self.interactive, self.automatic = interactive, automatic
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.expert_heads = interactive.expert_heads  # one dict: the interactive copy's private heads
        self.encoding = dict(encoding or {})
        self.returned_features = interactive.returned_features
        for p in automatic.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, network: ConditionedNetwork, *, build, in_channels: int, num_classes: int, encoding: dict | None = None) -> "PromptableNetwork":
        """A promptable network started from ``network``; ``build(in_channels=...)`` makes an empty
        network of its architecture (the new channels' weights start at zero)."""
        automatic = copy.deepcopy(network).cpu()
        automatic.merge_row_blocks()
        interactive = build(in_channels=in_channels + PROMPT_CHANNELS)
        for row in automatic.expert_head_rows():
            interactive.add_expert_head(row)
        widen_inputs(interactive, automatic.state_dict(), in_channels=in_channels)
        return cls(interactive=interactive, automatic=automatic, in_channels=in_channels, num_classes=num_classes, encoding=encoding)

    # --- the protocol --------------------------------------------------------------------------
    @property
    def divisor(self) -> int:
        return self.interactive.divisor

    def check_input_size(self, spatial: Sequence[int]) -> None:
        self.interactive.check_input_size(spatial)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.interactive.feature_names

    def role_modules(self) -> dict[str, list[nn.Module]]:
        return {**self.interactive.role_modules(), "automatic": [self.automatic]}

    def make_head(self) -> nn.Module:
        return self.interactive.make_head()

    def add_expert_head(self, row: int, state: dict | None = None) -> list[nn.Parameter]:
        if row not in self.automatic.expert_head_rows():
            self.automatic.add_expert_head(row, state)
        return super().add_expert_head(row, state)

    def remove_expert(self, row: int) -> None:
        super().remove_expert(row)
        self.interactive.expert_heads = self.expert_heads
        heads = {int(k): h for k, h in self.automatic.expert_heads.items() if int(k) != row}
        self.automatic.expert_heads = nn.ModuleDict({str(k - (k > row)): h for k, h in sorted(heads.items())})

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What interactive training optimises: the interactive copy (the automatic one stays)."""
        return list(self.interactive.parameters())

    # --- forward -----------------------------------------------------------------------------
    def _target(self, target, image: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        target = torch.ones(b, dtype=torch.long, device=image.device) if target is None else torch.as_tensor(target, device=image.device).long().reshape(-1)
        if target.shape[0] == 1 and b > 1:
            target = target.expand(b)
        k = self.num_classes
        if target.shape[0] != b or bool(((target < 1) | (target >= k)).any()):
            raise ValueError(f"target must name a foreground class 1..{k - 1} per sample, got {target.tolist()}")
        return target

    @torch.no_grad()
    def automatic_probability(self, image: torch.Tensor, expert: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The automatic model's probability of each sample's target class ``[B, 1, *S]``."""
        logits = self.automatic(image, expert).logits.float()
        return binary_logits(logits, target).softmax(1)[:, 1:]

    def empty_prompts(self, image: torch.Tensor, expert: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Prompts of no interaction: the automatic probability, then six empty channels."""
        prev = self.automatic_probability(image, expert, target)
        return torch.cat([prev, prev.new_zeros(prev.shape[0], PROMPT_CHANNELS - 1, *prev.shape[2:])], 1).to(image.dtype)

    def forward(self, image: torch.Tensor, expert: torch.Tensor, *, prompts: torch.Tensor | None = None, target: torch.Tensor | None = None) -> NetOutput:
        expert = self._conditioning(image, expert, None)
        target = self._target(target, image)
        if prompts is None:
            prompts = self.empty_prompts(image, expert, target)
        if prompts.shape[0] != image.shape[0] or prompts.shape[1] != PROMPT_CHANNELS or prompts.shape[2:] != image.shape[2:]:
            raise ValueError(f"prompts must be [B, {PROMPT_CHANNELS}, *spatial] like the image {tuple(image.shape)}, got {tuple(prompts.shape)}")
        out = self.interactive(torch.cat([image, prompts.to(image.dtype)], 1), expert)
        return NetOutput(logits=binary_logits(out.logits, target), features=out.features)

    def expert_logits(self, image: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Without prompts the model answers as the automatic one: its ``[B, E, K, *S]`` logits."""
        return self.automatic.expert_logits(image, rows)
