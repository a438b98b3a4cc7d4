"""Partial (ignore-label) cross-entropy and soft Dice, as nnU-Net v2 computes them.

Scribbles and other sparse labels mark unannotated voxels with the ignore value; those voxels carry
no supervision (Gotkowski et al., "Embarrassingly simple scribble supervision for 3D medical
segmentation", arXiv 2403.12834; nnU-Net v2's ``ignore`` label). With ``m`` = 1 on annotated voxels:

- ``CE = sum(m * -log p_target) / sum(m)``, the mean over every annotated voxel of the batch, and 0
  (not NaN) when nothing is annotated;
- soft Dice over the foreground channels: ``I = sum(p*y*m)``, ``P = sum(p*m)``, ``G = sum(y*m)`` per
  sample and channel (summed over the batch too with ``batch_dice``),
  ``dc = (2I + smooth) / max(G + P + smooth, 1e-8)``; the Dice term is ``-mean(dc)``.

The softmax runs over all voxels first and the mask applies afterwards: masking the logits before the
softmax (old MONAI ``MaskedDiceLoss``) gives a different, wrong Dice. Dense and partial labels mix
freely in one batch: a dense label simply has ``m = 1`` everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from experts.errors import ConfigError
from experts.losses.terms import LossTerm, register_term
from experts.records import Batch, NetOutput

__all__ = ["PartialDiceCE", "PartialDiceCELoss", "partial_cross_entropy", "partial_soft_dice"]


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, ignore_label: int | None) -> torch.Tensor:
    """Cross-entropy averaged over the annotated voxels of the whole batch.

    Args:
        logits: ``[B, K, D, H, W]`` unnormalised scores.
        target: ``[B, 1, D, H, W]`` or ``[B, D, H, W]`` integer labels, ``ignore_label`` where unannotated.
        ignore_label: value of unannotated voxels, or ``None`` when every voxel is annotated.

    Returns:
        Scalar loss; exactly 0 (with a zero gradient) when no voxel is annotated.
    """
    target = _squeeze_channel(target, logits.ndim).long()
    mask = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    safe = torch.where(mask, target, torch.zeros_like(target))
    nll = F.cross_entropy(logits, safe, reduction="none")
    return (nll * mask).sum() / mask.sum().clamp_min(1)


def partial_soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_label: int | None,
    batch_dice: bool = False,
    smooth: float = 1e-5,
    include_background: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft Dice coefficients on annotated voxels.

    Args:
        logits: ``[B, K, D, H, W]``.
        target: ``[B, 1, D, H, W]`` or ``[B, D, H, W]`` integer labels.
        ignore_label: value of unannotated voxels, or ``None``.
        batch_dice: sum intersections and volumes over the batch (nnU-Net's ``batch_dice``).
        smooth: added to numerator and denominator (nnU-Net: 1e-5).
        include_background: also score channel 0 (nnU-Net: off).

    Returns:
        ``(dice_term, dc)``: the loss term ``-mean(dc)`` and the coefficients
        ``dc`` of shape ``[K']`` (batch_dice) or ``[B, K']``. A sample without any annotated voxel
        has ``dc = 1`` per channel (``smooth / smooth``), so it does not move the loss.
    """
    target = _squeeze_channel(target, logits.ndim).long()
    num_classes = logits.shape[1]
    mask = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(torch.where(mask, target, torch.zeros_like(target)), num_classes).movedim(-1, 1).to(probs.dtype)
    m = mask.unsqueeze(1).to(probs.dtype)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    axes = tuple(range(2, probs.ndim))
    inter = (probs * onehot * m).sum(axes)
    pred = (probs * m).sum(axes)
    ref = (onehot * m).sum(axes)
    if batch_dice:
        inter, pred, ref = inter.sum(0), pred.sum(0), ref.sum(0)
    dc = (2 * inter + smooth) / (ref + pred + smooth).clamp_min(1e-8)
    return -dc.mean(), dc


class PartialDiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * (-mean dc)`` on annotated voxels (nnU-Net's DC_and_CE_loss).

    Args:
        ignore_label: value of unannotated voxels, or ``None``.
        ce_weight: weight of the cross-entropy term (default 1).
        dice_weight: weight of the Dice term (default 1).
        batch_dice: see :func:`partial_soft_dice`.
        smooth: see :func:`partial_soft_dice`.

    ``forward(logits [B,K,D,H,W], target [B,1,D,H,W])`` returns a dict with ``loss`` (what to
    backpropagate), ``ce``, ``dice`` (the Dice term, in ``[-1, 0]``) and ``annotated_fraction``, so
    that the parts can be logged separately.
    """

    def __init__(self, *, ignore_label: int | None, ce_weight: float = 1.0, dice_weight: float = 1.0, batch_dice: bool = False, smooth: float = 1e-5):
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ConfigError(f"loss weights must be >= 0 and not both 0, got ce={ce_weight}, dice={dice_weight}")
        self.ignore_label = ignore_label
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.batch_dice = batch_dice
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if _squeeze_channel(target, logits.ndim).shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
        ce = partial_cross_entropy(logits, target, ignore_label=self.ignore_label)
        dice, _ = partial_soft_dice(logits, target, ignore_label=self.ignore_label, batch_dice=self.batch_dice, smooth=self.smooth)
        annotated = 1.0 if self.ignore_label is None else (target != self.ignore_label).float().mean()
        return {
            "loss": self.ce_weight * ce + self.dice_weight * dice,
            "ce": ce.detach(),
            "dice": dice.detach(),
            "annotated_fraction": torch.as_tensor(annotated).detach(),
        }


@register_term("partial_dice_ce")
class PartialDiceCE(LossTerm):
    """The default term: :class:`PartialDiceCELoss` on ``outputs.logits`` and ``batch.label``.

    Params: ``ce_weight`` (1.0), ``dice_weight`` (1.0), ``batch_dice`` (false), ``smooth`` (1e-5).
    Parts: ``ce``, ``dice`` (the Dice term, in ``[-1, 0]``), ``annotated_fraction``.
    """

    @dataclass
    class Params:
        ce_weight: float = 1.0
        dice_weight: float = 1.0
        batch_dice: bool = False
        smooth: float = 1e-5

    def __init__(self, context, **params):
        super().__init__(context, **params)
        p = self.params
        self.loss = PartialDiceCELoss(ignore_label=context.ignore_label, ce_weight=p.ce_weight, dice_weight=p.dice_weight, batch_dice=p.batch_dice, smooth=p.smooth)

    def forward(self, outputs: NetOutput, batch: Batch) -> dict[str, torch.Tensor]:
        return self.loss(outputs.logits.float(), batch.label)


def _squeeze_channel(target: torch.Tensor, ndim: int) -> torch.Tensor:
    """``[B, 1, *spatial]`` -> ``[B, *spatial]``; a target without the channel axis passes through."""
    return target[:, 0] if target.ndim == ndim else target
