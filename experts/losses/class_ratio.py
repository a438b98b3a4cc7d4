"""EM class-ratio estimation with a spatial prior (ZScribbleSeg, arXiv 2605.06266).

Scribbles do not cover the classes in proportion to their volume, so a network trained on them
is calibrated to the scribbles' class mixture ``pi^L`` rather than the image's. ZScribbleSeg
estimates the mixture ``pi`` of the unannotated voxels with the EM prior update of Saerens et al.
(2002)::

    pi_c <- mean_i [ (pi_c / pi^L_c) p_ic / sum_k (pi_k / pi^L_k) p_ik ]

started from ``pi = pi^L`` and iterated until the change is below ``tolerance``. Per expert (their
styles differ) the estimate runs across steps: ``pi^L`` from the scribbles' class counts summed
over every step, ``pi`` updated each step from the running estimate and blended into it with
``momentum``. Both live in buffers, so checkpoints carry them and ``--resume`` restores them; under
DDP each EM iteration all-reduces its sums, so every rank holds the same estimate.

**Which voxels feed the EM step.** The unannotated ones. Saerens' update estimates the class
priors of the set whose posteriors it averages, given a classifier calibrated to ``pi^L``; the
quantity the spatial prior needs is the mixture of the voxels without a label, which is what the
paper defines. One public implementation feeds the predictions at the scribbled pixels instead;
averaged there, the update estimates the scribbles' own mixture, which is ``pi^L`` by construction,
so it cannot correct the bias the method exists for. That choice is not followed here.

**Spatial prior.** With the prior-weighted score ``s_ic = (pi_c / pi^L_c) p_ic / sum_k (...)``
(smoothed by a ``(2 smoothing + 1)^3`` mean filter, a cheap stand-in for the paper's CRF
smoothing), an unannotated voxel whose ``s_ic`` lies below the ``(1 - pi_c)`` quantile of its
sample's unannotated voxels is "not c"; the complementary loss on unannotated voxels is
``-log sum_{c allowed} p_ic`` (0 where every class is allowed), averaged over the unannotated voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from experts.errors import ConfigError
from experts.losses.terms import LossTerm, TermError, register_term
from experts.records import Batch, NetOutput

__all__ = ["EMClassRatio", "em_prior_update", "complementary_loss", "not_class_mask"]


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum over the ranks of a running process group (unchanged in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
    return x


def _weighted(p: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """``(pi_c / pi^L_c) p_ic / sum_k (...)``: ``p [B, K, N]``, ``ratio [B, K]``."""
    w = p * ratio.unsqueeze(-1)
    return w / w.sum(1, keepdim=True).clamp_min(1e-12)


def em_prior_update(p: torch.Tensor, group: torch.Tensor, weight: torch.Tensor, prior: torch.Tensor, labelled: torch.Tensor, *, tolerance: float = 1e-3, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Iterate the EM prior update to convergence, per group (expert).

    Args:
        p: ``[B, K, N]`` posteriors (detached).
        group: ``LongTensor[B]`` group (expert row) of each sample.
        weight: ``[B, N]`` 1 for the voxels that feed the update (unannotated), else 0.
        prior: ``[G, K]`` starting estimate ``pi``; labelled: ``[G, K]`` ``pi^L`` (positive).

    Returns:
        ``(pi [G, K], voxels [G], iterations)``; a group without voxels keeps its ``prior``. Sums are
        all-reduced over a running process group, so every rank returns the same estimate.
    """
    g, k = prior.shape
    onehot = F.one_hot(group, g).to(p.dtype)  # [B, G]
    voxels = _all_reduce(onehot.t() @ weight.sum(1))  # [G]
    pi = prior.clone()
    for it in range(1, max_iter + 1):
        r = _weighted(p, (pi / labelled)[group])
        sums = _all_reduce(onehot.t() @ (r * weight.unsqueeze(1)).sum(-1))  # [G, K]
        new = torch.where(voxels.unsqueeze(1) > 0, sums / voxels.clamp_min(1).unsqueeze(1), pi)
        change = float((new - pi).abs().max())
        pi = new
        if change < tolerance:
            break
    return pi, voxels, it


def not_class_mask(score: torch.Tensor, weight: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """``[B, K, N]`` bool: unannotated voxels whose score for ``c`` is below the ``(1 - pi_c)``
    quantile of their sample's unannotated voxels. ``score [B, K, N]``, ``weight [B, N]``,
    ``pi [B, K]`` (each sample's estimate)."""
    out = torch.zeros_like(score, dtype=torch.bool)
    for b in range(score.shape[0]):
        keep = weight[b] > 0
        if not keep.any():
            continue
        s = score[b][:, keep]  # [K, n]
        q = torch.stack([torch.quantile(s[c], float(1 - pi[b, c].clamp(0, 1))) for c in range(s.shape[0])])
        out[b][:, keep] = s < q.unsqueeze(1)
    return out


def complementary_loss(logits: torch.Tensor, not_c: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i * -log sum_{c allowed} p_ic / sum_i w_i`` with ``logits [B, K, N]``,
    ``not_c [B, K, N]`` bool, ``weight [B, N]``; voxels where no class or every class is allowed add 0."""
    log_p = logits.log_softmax(1)
    allowed = ~not_c
    useful = allowed.any(1) & not_c.any(1) & (weight > 0)
    lse = torch.logsumexp(log_p.masked_fill(~allowed, float("-inf")), dim=1)
    per_voxel = torch.where(useful, -lse, torch.zeros_like(lse))
    return (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)


@register_term("em_class_ratio")
class EMClassRatio(LossTerm):
    """The EM mixture estimate and its "not c" complementary loss (off by default; see the module docstring).

    Params: ``momentum`` (0.9, of the running estimate), ``tolerance`` (1e-3, EM stops when the
    largest change is below it), ``max_iter`` (100), ``smoothing`` (1: a 3^3 mean filter on the
    score; 0: none), ``max_experts`` (64, rows of the state tables). Parts: ``complementary``,
    ``not_fraction`` (share of (voxel, class) pairs marked "not c"), ``em_iterations`` and
    ``pi_<c>`` (the estimate, averaged over the batch's samples). State (buffers): ``prior``,
    ``labelled_counts`` (``[max_experts, K]``) and ``updates`` (``[max_experts]``).
    """

    @dataclass
    class Params:
        momentum: float = 0.9
        tolerance: float = 1e-3
        max_iter: int = 100
        smoothing: int = 1
        max_experts: int = 64

    def __init__(self, context, **params):
        super().__init__(context, **params)
        p = self.params
        if not 0 <= p.momentum < 1 or p.tolerance <= 0 or p.max_iter < 1 or p.smoothing < 0 or p.max_experts < 1:
            raise ConfigError(f"loss term 'em_class_ratio': needs 0 <= momentum < 1, tolerance > 0, max_iter >= 1, smoothing >= 0, max_experts >= 1 (got {p.momentum}, {p.tolerance}, {p.max_iter}, {p.smoothing}, {p.max_experts})")
        k = context.num_classes
        self.register_buffer("prior", torch.full((p.max_experts, k), 1.0 / k, dtype=torch.float64))
        self.register_buffer("labelled_counts", torch.zeros(p.max_experts, k, dtype=torch.float64))
        self.register_buffer("updates", torch.zeros(p.max_experts, dtype=torch.long))

    def labelled_prior(self) -> torch.Tensor:
        """``pi^L [max_experts, K]``: the scribbles' class fractions (uniform before any scribble;
        a class never scribbled gets a small floor so the ratio stays finite)."""
        counts = self.labelled_counts + 0.5
        return counts / counts.sum(1, keepdim=True)

    def forward(self, outputs: NetOutput, batch: Batch) -> dict[str, torch.Tensor]:
        b, k = outputs.logits.shape[:2]
        logits = outputs.logits.float().reshape(b, k, -1)
        label = batch.label.reshape(b, -1)
        expert = batch.expert.to(logits.device).long()
        if int(expert.max()) >= self.params.max_experts:
            raise TermError(f"loss term 'em_class_ratio': expert row {int(expert.max())} exceeds its state tables ({self.params.max_experts} rows); raise params.max_experts")
        ignore = self.context.ignore_label
        weight = (label == ignore).double() if ignore is not None else torch.zeros_like(label, dtype=torch.float64)
        with torch.no_grad():
            pi = self._update(logits.softmax(1).double(), label, expert, weight)
            score = self._smooth(_weighted(logits.softmax(1).double(), pi[expert] / self.labelled_prior()[expert]), batch.label.shape)
            not_c = not_class_mask(score, weight, pi[expert])
        loss = complementary_loss(logits, not_c, weight.float())
        seen = pi[expert].mean(0)
        parts = {"complementary": loss.detach(), "not_fraction": (not_c.any(1).double() * weight).sum().div(weight.sum().clamp_min(1)).float(), "em_iterations": torch.tensor(float(self._iterations))}
        return {"loss": loss, **parts, **{f"pi_{c}": seen[c].float() for c in range(k)}}

    def _update(self, p: torch.Tensor, label: torch.Tensor, expert: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """One step of the running estimate (all ranks alike); returns ``pi [max_experts, K]``."""
        g, k = self.prior.shape
        annotated = (label != self.context.ignore_label) if self.context.ignore_label is not None else torch.ones_like(label, dtype=torch.bool)
        counts = torch.zeros(g, k + 1, dtype=torch.float64, device=p.device)
        bins = torch.where(annotated, label, torch.full_like(label, k)).clamp_max(k)
        rows = expert.unsqueeze(1).expand_as(bins)
        counts.index_put_((rows.reshape(-1), bins.reshape(-1)), torch.ones(bins.numel(), dtype=torch.float64, device=p.device), accumulate=True)
        self.labelled_counts += _all_reduce(counts[:, :k])
        labelled = self.labelled_prior()
        start = torch.where((self.updates > 0).unsqueeze(1), self.prior, labelled)
        pi, voxels, self._iterations = em_prior_update(p, expert, weight, start, labelled, tolerance=self.params.tolerance, max_iter=self.params.max_iter)
        m = torch.where(self.updates > 0, self.params.momentum, 0.0).to(pi.dtype).unsqueeze(1)
        fresh = voxels > 0
        self.prior.copy_(torch.where(fresh.unsqueeze(1), m * self.prior + (1 - m) * pi, self.prior))
        self.updates += fresh.long()
        self.check_state()
        return self.prior.clone()

    def _smooth(self, score: torch.Tensor, shape) -> torch.Tensor:
        r = self.params.smoothing
        if r == 0:
            return score
        b, k = score.shape[:2]
        vol = score.reshape(b, k, *shape[2:])
        return F.avg_pool3d(vol, 2 * r + 1, stride=1, padding=r, count_include_pad=False).reshape(b, k, -1)

    def check_state(self) -> None:
        """Stop the run if the estimate is not a distribution per expert (NaN, negative, not summing to 1)."""
        ok = bool(torch.isfinite(self.prior).all()) and bool((self.prior >= 0).all()) and bool(((self.prior.sum(1) - 1).abs() < 1e-6).all())
        if not ok or bool((self.labelled_counts < 0).any()) or not bool(torch.isfinite(self.labelled_counts).all()):
            raise TermError("loss term 'em_class_ratio': its class-ratio state is invalid (NaN, negative, or not summing to 1 per expert); the run stopped and its last good checkpoint is kept; resume from that checkpoint")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.check_state()

    _iterations = 0
