"""Choosing the adapter's capacity and step count from the doctor's own cases.

:func:`cross_validate` leaves one case out at a time and asks a training function for the
left-out case's score history of each rung; :func:`pick` takes the best mean over the folds. The
initial row (step 0, no training) is always a candidate, so the choice never does worse than not
adapting on the doctor's evidence. Both are plain functions of scores, tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["CrossValidation", "cross_validate", "pick"]

#: scores closer than this are a tie (the simpler rung and fewer steps win it)
TIE = 1e-9


@dataclass
class CrossValidation:
    """What the folds measured and what they chose.

    Attributes:
        held_out: the left-out case of each fold, in order.
        scores: ``{rung: [{step: score} per fold it ran]}`` (pruned rungs ran the first fold only).
        kept: the rungs that ran every fold.
        rung: the chosen rung (None: keep the initial row).
        step: the chosen step count (0: the initial row).
        score: the chosen candidate's mean score over the folds.
        initial: the initial row's mean score over the folds.
    """

    held_out: list[str]
    scores: dict[str, list[dict[int, float]]] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    rung: str | None = None
    step: int = 0
    score: float = float("nan")
    initial: float = float("nan")

    def mean_curves(self) -> dict[str, dict[int, float]]:
        """``{rung: {step: mean score over the folds}}`` for the rungs that ran every fold."""
        out = {}
        for rung in self.kept:
            runs = self.scores[rung]
            steps = sorted(set.intersection(*(set(r) for r in runs)))
            out[rung] = {s: float(np.mean([r[s] for r in runs])) for s in steps}
        return out

    def summary(self) -> dict:
        """JSON-friendly: the choice, the initial row's score and each rung's best mean."""
        curves = self.mean_curves()
        best = {r: max(c.values()) for r, c in curves.items() if c}
        pruned = {r: max(runs[0].values()) for r, runs in self.scores.items() if r not in self.kept and runs and runs[0]}
        return {"rung": self.rung or "initial", "steps": self.step, "score": self.score, "initial": self.initial, "held_out": self.held_out, "best_by_rung": best, "pruned_after_first_fold": pruned}


def cross_validate(train: Callable[[str, str], Sequence[tuple[int, float]]], *, cases: Sequence[str], rungs: Sequence[str], folds: int, keep: int) -> CrossValidation:
    """Leave-one-case-out over the last ``folds`` cases, pruning to ``keep`` rungs after the first.

    Args:
        train: ``train(rung, held_out_case) -> [(step, score)]``: trains ``rung`` on the other
            cases and returns the left-out case's scores, step 0 (before training) included.
        cases: the doctor's cases (at least 2).
        rungs: candidate rungs, simplest first (ties go to the earlier rung and fewer steps).
        folds: how many cases to leave out (at most ``len(cases)``).
        keep: rungs that go on after the first fold.

    Returns:
        The :class:`CrossValidation` with the choice made by :func:`pick`.
    """
    if len(cases) < 2:
        raise ValueError("cross-validation needs at least 2 cases")
    held_out = list(cases)[::-1][: max(1, min(folds, len(cases)))]
    result = CrossValidation(held_out=held_out)
    live = list(rungs)
    for i, case in enumerate(held_out):
        for rung in live:
            result.scores.setdefault(rung, []).append({int(s): float(v) for s, v in train(rung, case)})
        if i == 0 and len(live) > keep:
            ranked = sorted(live, key=lambda r: -max(result.scores[r][0].values(), default=-1.0))[:keep]
            live = [r for r in live if r in ranked]
    result.kept = live
    return pick(result)


def pick(result: CrossValidation) -> CrossValidation:
    """Choose the best mean (rung, step); the initial row (step 0) first, so training must beat it."""
    curves = result.mean_curves()
    initial = [c[0] for c in curves.values() if 0 in c]
    result.initial = float(np.mean(initial)) if initial else float("nan")
    result.rung, result.step, result.score = None, 0, result.initial if initial else -np.inf
    for rung, curve in curves.items():
        for step, value in sorted(curve.items()):
            if step > 0 and value > result.score + TIE:
                result.rung, result.step, result.score = rung, step, value
    return result
