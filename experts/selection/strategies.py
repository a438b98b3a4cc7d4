"""Case-selection strategies (``expertseg suggest --strategy``), registered by name.

A strategy ranks candidate cases from their :class:`~experts.selection.signals.CaseSignals` (the
existing experts' view of each image; never a label of the new doctor) and returns every candidate,
best first, each with its score and the parts of that score (the reason it was chosen). The first
K of a ranking are the K cases to label, so one ranking gives the whole label-efficiency curve.
Equal scores are broken by case id, so a ranking depends only on the signals and the seed.

- ``random``: a uniform draw (the seed's permutation);
- ``foreground-random``: nnActive's improved random baseline (MIC-DKFZ, arXiv 2511.19183): a draw
  without replacement with probability proportional to the predicted foreground volume;
- ``disagreement``: the mean mutual information between the existing experts' predictions;
- ``diversity`` and ``disagreement+diversity``: k-centre greedy on pooled encoder features, alone
  or traded off against disagreement (:mod:`experts.selection.diversity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from experts.errors import ConfigError
from experts.params import Configurable
from experts.registry import Registry
from experts.selection.signals import CaseSignals

__all__ = ["STRATEGIES", "SelectionStrategy", "RankedCase", "create_strategy", "RandomCases", "ForegroundRandom", "Disagreement"]

STRATEGIES: Registry = Registry("case-selection strategy")
_register = STRATEGIES.register_class


@dataclass
class RankedCase:
    """One case of a ranking: its place (1 = label first), its score and the score's parts."""

    case: str
    rank: int
    score: float | None
    parts: dict = field(default_factory=dict)

    def reason(self) -> str:
        """The parts in words, e.g. ``disagreement 0.0123, foreground_ml 512``."""
        return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.parts.items() if v is not None)

    def to_dict(self) -> dict:
        return {"case": self.case, "rank": self.rank, "score": self.score, "parts": dict(self.parts), "reason": self.reason()}


class SelectionStrategy(Configurable):
    """Base of the strategies: parameters checked on construction (``Params``).

    Subclasses set ``needs`` (which signals they read) and implement :meth:`order`.
    """

    kind = "suggest strategy"
    #: the signals this strategy reads (of :data:`experts.selection.signals.SIGNALS`)
    needs: ClassVar[frozenset] = frozenset()

    def __init__(self, **params):
        self._check_params(params)

    @property
    def seeded(self) -> bool:
        """Whether the seed changes the ranking (the bench runs several seeds of these)."""
        return False

    def rank(self, candidates: Sequence[CaseSignals], *, seed: int = 0, labelled: Sequence[CaseSignals] = ()) -> list[RankedCase]:
        """Every candidate, best first.

        Args:
            candidates: the cases to rank (distinct ids).
            seed: seeds a random strategy's draw.
            labelled: cases the doctor has already labelled (diversity keeps away from them).
        """
        ids = [c.case for c in candidates]
        if len(set(ids)) != len(ids):
            raise ValueError("candidate cases must be distinct")
        missing = [s for s in self.needs if any(_signal(c, s) is None for c in [*candidates, *labelled])]
        if missing:
            raise ValueError(f"strategy {self.name!r} needs the signal(s) {', '.join(sorted(missing))}; compute them with case_signals(needs=...)")
        order = self.order(list(candidates), seed=seed, labelled=list(labelled))
        return [RankedCase(case=c, rank=i + 1, score=score, parts=parts) for i, (c, score, parts) in enumerate(order)]

    def order(self, candidates: list[CaseSignals], *, seed: int, labelled: list[CaseSignals]) -> list[tuple[str, float | None, dict]]:  # pragma: no cover - abstract
        """``[(case, score, parts)]`` for every candidate, best first."""
        raise NotImplementedError


def _signal(c: CaseSignals, name: str):
    return {"foreground": c.foreground_ml, "disagreement": c.disagreement, "features": c.features}[name]


def by_score(candidates: list[CaseSignals], score) -> list[CaseSignals]:
    """Highest score first; equal scores in case-id order."""
    return sorted(candidates, key=lambda c: (-score(c), c.case))


@_register("random")
class RandomCases(SelectionStrategy):
    """A uniform draw: the seed's permutation of the candidates (sorted by id first)."""

    @property
    def seeded(self) -> bool:
        return True

    def order(self, candidates, *, seed, labelled):
        ids = sorted(c.case for c in candidates)
        drawn = np.random.default_rng(seed).permutation(len(ids))
        return [(ids[i], None, {"draw": f"uniform, seed {seed}"}) for i in drawn]


@_register("foreground-random")
class ForegroundRandom(SelectionStrategy):
    """A draw without replacement weighted by predicted foreground volume (nnActive's improved
    random): Gumbel-top-k keys ``log w + G`` sorted, which is sequential sampling with probability
    ``w_i / sum(w)`` among the cases not yet drawn. Cases without foreground come last."""

    needs = frozenset({"foreground"})

    @property
    def seeded(self) -> bool:
        return True

    def order(self, candidates, *, seed, labelled):
        cands = sorted(candidates, key=lambda c: c.case)
        volume = np.array([max(c.foreground_ml, 0.0) for c in cands])
        weight = volume / volume.sum() if volume.sum() > 0 else np.full(len(cands), 1.0 / len(cands))
        gumbel = np.random.default_rng(seed).gumbel(size=len(cands))
        with np.errstate(divide="ignore"):
            keys = np.where(weight > 0, np.log(np.where(weight > 0, weight, 1.0)) + gumbel, -np.inf)
        order = sorted(range(len(cands)), key=lambda i: (-keys[i], cands[i].case))
        return [(cands[i].case, float(weight[i]), {"foreground_ml": float(volume[i]), "weight": float(weight[i])}) for i in order]


@_register("disagreement")
class Disagreement(SelectionStrategy):
    """The cases where the existing experts disagree most: mean mutual information between their
    predictions over the volume (a free committee, query-by-committee's vote entropy in its soft form)."""

    needs = frozenset({"disagreement"})

    def order(self, candidates, *, seed, labelled):
        parts = lambda c: {"disagreement": c.disagreement, "disagreement_foreground": c.disagreement_foreground, "foreground_ml": c.foreground_ml}  # noqa: E731
        return [(c.case, float(c.disagreement), parts(c)) for c in by_score(candidates, lambda c: c.disagreement)]


def create_strategy(spec) -> SelectionStrategy:
    """A strategy from a name, ``{name, params}`` or an instance.

    Raises:
        ConfigError: an unknown name or wrong parameters (one line each).
    """
    if isinstance(spec, SelectionStrategy):
        return spec
    name, params = (spec, {}) if isinstance(spec, str) else (spec.get("name"), spec.get("params") or {})
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy: unknown case-selection strategy {name!r}; known: {', '.join(STRATEGIES.names())}")
    return STRATEGIES.get(name)(**params)
