"""Diversity: k-centre greedy on pooled encoder features (the core-set of Sener & Savarese, ICLR
2018), alone or traded off against the existing experts' disagreement.

Distances are Euclidean between the cases' pooled bottleneck features (per-channel mean and
standard deviation, :mod:`experts.selection.signals`). k-centre greedy repeatedly takes the case
farthest from every case chosen so far (the doctor's already-labelled cases count as chosen), so a
case identical to a chosen one (distance 0) comes after every case that differs from all of them.

``disagreement+diversity`` takes, at each step, the case with the highest

    (1 - weight) * disagreement / max disagreement + weight * distance / max distance,

both over the cases not yet chosen, distance to the nearest chosen case. The first pick (nothing
chosen yet) is the case of highest disagreement (score: its normalised disagreement); ``weight = 0`` is ``disagreement``, ``weight = 1``
is ``diversity`` after that first pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from experts.errors import ConfigError
from experts.selection.signals import CaseSignals
from experts.selection.strategies import STRATEGIES, SelectionStrategy

__all__ = ["Diversity", "DisagreementDiversity", "pairwise_distances"]


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[N, M]`` between the rows of ``a [N, F]`` and ``b [M, F]`` (exactly 0
    between identical rows: no ``|a|^2 + |b|^2 - 2ab`` rounding)."""
    from scipy.spatial.distance import cdist

    return cdist(a, b)


def _features(cases: list[CaseSignals]) -> np.ndarray:
    return np.stack([np.asarray(c.features, dtype=np.float64) for c in cases]) if cases else np.zeros((0, 0))


def _nearest_chosen(feats: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Distance of each candidate to the nearest already-labelled case (``inf`` without any)."""
    if labelled.shape[0] == 0:
        return np.full(feats.shape[0], np.inf)
    return pairwise_distances(feats, labelled).min(axis=1)


@STRATEGIES.register_class("diversity")
class Diversity(SelectionStrategy):
    """k-centre greedy on pooled encoder features.

    Without labelled cases the first pick is the medoid (the case with the smallest mean distance to
    the others: the most typical case, ``start: medoid``) or a seeded draw (``start: random``).
    """

    needs = frozenset({"features"})

    @dataclass
    class Params:
        start: Literal["medoid", "random"] = "medoid"  #: the first pick when nothing is labelled yet

    @property
    def seeded(self) -> bool:
        return self.params.start == "random"

    def order(self, candidates, *, seed, labelled):
        cands = sorted(candidates, key=lambda c: c.case)
        feats = _features(cands)
        nearest = _nearest_chosen(feats, _features(labelled))
        left, out = list(range(len(cands))), []
        if not labelled:
            first = self._first(feats, seed)
            typical = float(pairwise_distances(feats[first : first + 1], feats).mean())
            out.append((cands[first].case, None, {"pick": self.params.start, "mean_distance": typical}))
            left.remove(first)
            nearest = pairwise_distances(feats, feats[first : first + 1])[:, 0]
        while left:
            i = max(left, key=lambda j: (nearest[j], -j))  # farthest; equal distances in case-id order
            out.append((cands[i].case, float(nearest[i]), {"distance": float(nearest[i])}))
            left.remove(i)
            nearest = np.minimum(nearest, pairwise_distances(feats, feats[i : i + 1])[:, 0])
        return out

    def _first(self, feats: np.ndarray, seed: int) -> int:
        if self.params.start == "random":
            return int(np.random.default_rng(seed).integers(len(feats)))
        return int(np.argmin(pairwise_distances(feats, feats).mean(axis=1)))


@STRATEGIES.register_class("disagreement+diversity")
class DisagreementDiversity(SelectionStrategy):
    """Greedy trade-off of disagreement and distance to the chosen cases (see the module docstring)."""

    needs = frozenset({"disagreement", "features"})

    @dataclass
    class Params:
        weight: float = 0.5  #: share of the distance term, in [0, 1]

    def __init__(self, **params):
        super().__init__(**params)
        if not 0.0 <= self.params.weight <= 1.0:
            raise ConfigError(f"suggest strategy 'disagreement+diversity': 'weight' must be between 0 and 1, got {self.params.weight}")

    def order(self, candidates, *, seed, labelled):
        w = self.params.weight
        cands = sorted(candidates, key=lambda c: c.case)
        feats = _features(cands)
        mi = np.array([c.disagreement for c in cands], dtype=np.float64)
        nearest = _nearest_chosen(feats, _features(labelled))
        left, out = list(range(len(cands))), []
        while left:
            u = mi[left] / mi[left].max() if mi[left].max() > 0 else np.zeros(len(left))
            dist = nearest[left]
            if np.isinf(dist).all():  # nothing chosen yet: disagreement alone
                score = u
            else:
                d = dist / dist.max() if dist.max() > 0 else np.zeros(len(left))
                score = (1 - w) * u + w * d
            j = max(range(len(left)), key=lambda t: (score[t], -left[t]))
            i = left[j]
            parts = {"disagreement": float(mi[i]), "distance": None if np.isinf(dist[j]) else float(dist[j]), "score": float(score[j])}
            out.append((cands[i].case, float(score[j]), parts))
            left.remove(i)
            nearest = np.minimum(nearest, pairwise_distances(feats, feats[i : i + 1])[:, 0])
        return out
