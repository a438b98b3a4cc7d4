"""Multi-expert sampling: which (case, expert, label) triples make each batch.

Experts differ in how many cases they labelled and how (dense or scribbles); drawing triples
uniformly would let the most prolific expert dominate the shared weights. Each sample is drawn in
three steps: an expert (weights per expert, default equal), a label kind among those the expert has
(``dense`` / ``partial`` weights, renormalised), then a case uniformly among that expert's labels of
that kind.

The draw is a pure function of ``(seed, step)``: no hidden state to save, the same batches after a
resume, and every process of a distributed run can draw the same global batch and take its share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SampleItem", "ExpertBalancedSampler"]


@dataclass(frozen=True)
class SampleItem:
    """One training label: ``row`` is the expert's row in the network's CIN tables."""

    case: str
    expert: str
    kind: str
    row: int


class ExpertBalancedSampler:
    """Draw batches of ``(item_index, sample_seed)`` balanced over experts and label kinds.

    Args:
        items: the training labels.
        batch_size: samples per (global) batch.
        seed: run seed.
        expert_weights: relative weight per expert id (missing: 1.0).
        kind_weights: relative weight per label kind (missing: 1.0).

    ``batch(step)`` returns the batch for that step; iterating from ``start`` yields batches
    ``start, start + 1, ...`` for ``steps`` steps.
    """

    def __init__(self, items: list[SampleItem], *, batch_size: int, seed: int, expert_weights: dict[str, float] | None = None, kind_weights: dict[str, float] | None = None):
        if not items:
            raise ValueError("no training labels to sample from")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.items = list(items)
        self.batch_size = batch_size
        self.seed = seed
        expert_weights = expert_weights or {}
        kind_weights = kind_weights or {}
        by: dict[str, dict[str, list[int]]] = {}
        for i, it in enumerate(self.items):
            by.setdefault(it.expert, {}).setdefault(it.kind, []).append(i)
        self.experts = sorted(by)
        w = np.array([float(expert_weights.get(e, 1.0)) for e in self.experts])
        if w.sum() <= 0:
            raise ValueError("every expert has sampling weight 0; give at least one a positive weight")
        self.expert_p = w / w.sum()
        self.kinds: dict[str, list[str]] = {}
        self.kind_p: dict[str, np.ndarray] = {}
        self.members = by
        for e in self.experts:
            kinds = sorted(by[e])
            kw = np.array([float(kind_weights.get(k, 1.0)) for k in kinds])
            if kw.sum() <= 0:
                kw = np.ones(len(kinds))
            self.kinds[e], self.kind_p[e] = kinds, kw / kw.sum()

    def get_params(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "expert_p": {e: round(float(p), 6) for e, p in zip(self.experts, self.expert_p)},
        }

    def batch(self, step: int) -> list[tuple[int, int]]:
        """``batch_size`` pairs ``(item_index, sample_seed)`` for ``step``."""
        rng = np.random.default_rng([self.seed, step])
        out = []
        for _ in range(self.batch_size):
            e = self.experts[rng.choice(len(self.experts), p=self.expert_p)]
            k = self.kinds[e][rng.choice(len(self.kinds[e]), p=self.kind_p[e])]
            members = self.members[e][k]
            out.append((members[int(rng.integers(len(members)))], int(rng.integers(2**31 - 1))))
        return out

    def iterate(self, start: int, steps: int, *, rank: int = 0, world_size: int = 1):
        """Yield per-process batches for steps ``start .. steps - 1``.

        With ``world_size > 1`` each process takes every ``world_size``-th sample of the global batch.
        """
        for step in range(start, steps):
            yield self.batch(step)[rank::world_size]
