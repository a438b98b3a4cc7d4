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
from typing import NamedTuple

import torch
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
    st = _statistics(logits, target, ignore_label=ignore_label)
    return st.nll_sum / st.annotated.clamp_min(1)


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
    st = _statistics(logits, target, ignore_label=ignore_label)
    return _dice_from(st, batch_dice=batch_dice, smooth=smooth, include_background=include_background)


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
        loss, ce, dice, annotated = _FusedDiceCE.apply(logits, target, self.ignore_label, self.ce_weight, self.dice_weight, self.batch_dice, self.smooth)
        return {"loss": loss, "ce": ce, "dice": dice, "annotated_fraction": annotated}


class _FusedDiceCE(torch.autograd.Function):
    """``ce_weight * CE + dice_weight * Dice term`` with a hand-written backward.

    The same values as :func:`partial_cross_entropy` and :func:`partial_soft_dice` (the composed,
    autograd versions; a test checks that both agree, gradients included), in fewer passes over the
    ``[B, K, D, H, W]`` tensor: one log-softmax turned into probabilities in place, the target's
    log-probability gathered (no one-hot), the per-class sums from one comparison per foreground
    class (a scatter or a bincount into K bins runs on one thread), the mask applied once. With
    ``g_c = dL/dp_c = m * (dP_c + [c = t] dI_c)`` (Dice) the gradient with respect to the logits is
    ``m * (p_c * (dP_c + s - A) + [c = t] (p_t dI_t - s))``, ``A = sum_j p_j dP_j + p_t dI_t`` and
    ``s`` the cross-entropy's scale: one per-voxel reduction and one pass over the volume.
    """

    @staticmethod
    def forward(ctx, logits, target, ignore_label, ce_weight, dice_weight, batch_dice, smooth):
        b, k = logits.shape[:2]
        x = logits.detach().reshape(b, k, -1)
        t = _squeeze_channel(target, logits.ndim).reshape(b, -1)
        p = x.log_softmax(dim=1)
        if ignore_label is None:
            label, w = t.long(), None
        else:
            annotated = t != ignore_label
            label, w = torch.where(annotated, t, 0).long(), annotated.to(p.dtype)
        safe = label.unsqueeze(1)
        log_pt = p.gather(1, safe).squeeze(1)
        p_w = p.exp_()  # masked in place below: the unmasked probabilities are not needed again
        if w is None:
            count = torch.tensor(float(t.numel()), dtype=p.dtype, device=p.device)
            nll, pt_w = -log_pt.sum(), log_pt.exp()
        else:
            count = w.sum()
            nll = -torch.dot(log_pt.reshape(-1), w.reshape(-1))
            pt_w, _ = log_pt.exp_().mul_(w), p_w.mul_(w.unsqueeze(1))
        pred = p_w.sum(-1)
        # per foreground class (unannotated voxels carry label 0 here): one comparison, two sums;
        # 2x faster than a bincount, which runs on one thread
        masks = [label == c for c in range(1, k)]
        inter = torch.stack([(pt_w * m).sum(-1) for m in masks], 1)
        ref = torch.stack([m.sum(-1) for m in masks], 1).to(p.dtype)
        pred = pred[:, 1:]
        ce = nll / count.clamp_min(1)
        if batch_dice:
            inter, pred, ref = inter.sum(0, keepdim=True), pred.sum(0, keepdim=True), ref.sum(0, keepdim=True)
        denom = (ref + pred + smooth).clamp_min(1e-8)
        num = 2 * inter + smooth
        dice = -(num / denom).mean()
        ctx.save_for_backward(p_w, pt_w, safe, *(() if w is None else (w,)))
        ctx.dice_grads = (-dice_weight * 2 / denom / num.numel(), dice_weight * num / denom**2 / num.numel())  # dL/dI, dL/dP
        ctx.ce_scale = ce_weight / count.clamp_min(1)
        ctx.shape = logits.shape
        parts = (ce.clone(), dice.clone(), count / t.numel())
        ctx.mark_non_differentiable(*parts)
        return (ce_weight * ce + dice_weight * dice, *parts)

    @staticmethod
    def backward(ctx, grad_loss, *_):
        # the mask is binary: with p and p_t already masked (p_w, pt_w), A and the whole gradient
        # vanish where m = 0 and are exact where m = 1
        p_w, pt_w, safe, *w = ctx.saved_tensors
        b = p_w.shape[0]
        zero = torch.zeros(b, 1, dtype=p_w.dtype, device=p_w.device)
        d_inter, d_pred = (torch.cat([zero, g.expand(b, -1)], 1) * grad_loss for g in ctx.dice_grads)  # no Dice term for the background
        s = ctx.ce_scale * grad_loss
        at_label = pt_w * d_inter.gather(1, safe.squeeze(1))  # p_t dI_t, [B, N]
        a = torch.bmm(d_pred.unsqueeze(1), p_w).squeeze(1) + at_label
        g = ((d_pred + s).unsqueeze(-1) - a.unsqueeze(1)).mul_(p_w)
        at_label = at_label.addcmul_(w[0], s, value=-1) if w else at_label.sub_(s)
        g.scatter_add_(1, safe, at_label.unsqueeze(1))
        return g.reshape(ctx.shape), None, None, None, None, None, None


class _Statistics(NamedTuple):
    """What both terms need, from one log-softmax (shapes: ``[B, K]`` per sample and class)."""

    nll_sum: torch.Tensor  #: sum of -log p_target over annotated voxels (scalar)
    inter: torch.Tensor  #: sum of p_c on annotated voxels labelled c
    pred: torch.Tensor  #: sum of p_c on annotated voxels
    ref: torch.Tensor  #: number of annotated voxels labelled c
    annotated: torch.Tensor  #: number of annotated voxels (scalar)
    voxels: int


def _statistics(logits: torch.Tensor, target: torch.Tensor, *, ignore_label: int | None) -> _Statistics:
    """One pass: no one-hot of the volume; the target's probability is gathered, the per-class
    sums are scattered by label, and the mask is applied once."""
    b, k = logits.shape[:2]
    x = logits.reshape(b, k, -1)
    t = _squeeze_channel(target, logits.ndim).reshape(b, -1).long()
    log_p = x.log_softmax(dim=1)
    p = log_p.exp()
    if ignore_label is None:
        bins = t
        weights = torch.ones_like(t, dtype=p.dtype)
    else:
        annotated = t != ignore_label
        bins = torch.where(annotated, t, torch.full_like(t, k))  # unannotated voxels fall into an extra bin
        weights = annotated.to(p.dtype)
    safe = bins.clamp_max(k - 1).unsqueeze(1)
    log_pt = log_p.gather(1, safe).squeeze(1)
    zeros = torch.zeros(b, k + 1, dtype=p.dtype, device=p.device)
    inter = zeros.scatter_add(1, bins, log_pt.exp() * weights)[:, :k]
    ref = zeros.scatter_add(1, bins, weights)[:, :k]
    pred = torch.bmm(p, weights.unsqueeze(-1)).squeeze(-1)
    return _Statistics(-(log_pt * weights).sum(), inter, pred, ref, weights.sum(), t.numel())


def _dice_from(st: _Statistics, *, batch_dice: bool, smooth: float, include_background: bool) -> tuple[torch.Tensor, torch.Tensor]:
    inter, pred, ref = (st.inter, st.pred, st.ref) if include_background else (st.inter[:, 1:], st.pred[:, 1:], st.ref[:, 1:])
    if batch_dice:
        inter, pred, ref = inter.sum(0), pred.sum(0), ref.sum(0)
    dc = (2 * inter + smooth) / (ref + pred + smooth).clamp_min(1e-8)
    return -dc.mean(), dc


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
