"""The training step's two records: a batch goes in, a network output comes out.

Every loss term sees both (``term(outputs, batch)``), so a term that needs the image, the voxel
spacing, the prompts or the decoder features reads them from the records instead of changing the
loop. Both records are dict-like (``batch["image"]``) as well as attribute-like (``batch.image``).

Shapes:
    ``Batch.image [B, C, D, H, W]`` float, ``Batch.label [B, 1, D, H, W]`` long (the ignore value
    where unannotated), ``Batch.expert LongTensor[B]`` (rows of the CIN tables),
    ``Batch.spacing [B, 3]`` float (mm per axis of ``D, H, W``), ``Batch.prompts [B, P, D, H, W]``
    or ``None``, ``Batch.target LongTensor[B]`` (the class a promptable network segments) or
    ``None``; ``NetOutput.logits [B, K, D, H, W]``, ``NetOutput.features {name: [B, F, ...]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Sequence

import torch

__all__ = ["Batch", "NetOutput", "collate_batch"]


class _Record:
    """Dict-style access to a dataclass's fields."""

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self.keys() else default

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]


@dataclass
class Batch(_Record):
    """One training batch."""

    image: torch.Tensor
    label: torch.Tensor
    expert: torch.Tensor
    spacing: torch.Tensor
    prompts: torch.Tensor | None = None
    #: the class a promptable network answers for, ``LongTensor[B]`` (``None``: not promptable)
    target: torch.Tensor | None = None

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on ``device``."""
        return replace(self, **{k: v.to(device, non_blocking=non_blocking) for k in self.keys() if isinstance(v := getattr(self, k), torch.Tensor)})

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


@dataclass
class NetOutput(_Record):
    """What a network returns: the logits, and the named internal features it was asked for."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    def feature(self, name: str) -> torch.Tensor:
        """The feature map ``name``; a clear error if the network was not asked for it."""
        try:
            return self.features[name]
        except KeyError:
            raise KeyError(f"the network returned no feature {name!r} (it returns {', '.join(self.features) or 'none'}); add it to network.features") from None


def collate_batch(samples: Sequence[dict]) -> Batch:
    """Stack per-sample dicts (``image [C, *patch]``, ``label [1, *patch]``, ``expert []``,
    ``spacing [3]``, optional ``prompts [P, *patch]``) into a :class:`Batch`; the DataLoader's
    ``collate_fn``."""
    stack = lambda key: torch.stack([torch.as_tensor(s[key]) for s in samples])  # noqa: E731
    prompts = stack("prompts") if samples and samples[0].get("prompts") is not None else None
    return Batch(image=stack("image").float(), label=stack("label").long(), expert=stack("expert").long().reshape(-1), spacing=stack("spacing").float(), prompts=prompts)


def _register_pytree() -> None:
    """Let torch utilities (DDP's output handling, ``torch.compile``) look inside the records."""
    try:
        from torch.utils._pytree import register_dataclass
    except ImportError:  # older torch: plain dataclasses still work without the tree view
        return
    for cls in (Batch, NetOutput):
        try:
            register_dataclass(cls)
        except (ValueError, TypeError):
            pass


_register_pytree()
