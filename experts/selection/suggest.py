"""Which cases a new doctor should label first: candidates, signals, a strategy's ranking.

:func:`suggest_cases` is what ``expertseg suggest`` and the ``selection`` bench share: the model
conditioned on each existing expert (never the doctor's own row, if the model has one) looks at the
candidate images, a registered strategy ranks them, and the first K are the suggestion. The doctor's
label files are never opened; which cases they already labelled is only a list of ids.

Example::

    from experts.bundle import load_bundle
    from experts.data.manifest import scan_dataset
    from experts.selection import candidate_cases, suggest_cases

    bundle, manifest = load_bundle("runs/pre/model"), scan_dataset("demo_data")
    candidates, labelled = candidate_cases(manifest, "drnew", "all")
    suggestion = suggest_cases(bundle, manifest, expert="drnew", k=3, strategy="disagreement", candidates=candidates)
    suggestion.cases                      # the 3 cases to label first
    suggestion.ranking[0].reason()        # why the first one
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from experts.errors import ConfigError, DatasetError
from experts.selection.signals import CaseSignals, case_signals
from experts.selection.strategies import RankedCase, create_strategy

__all__ = ["CANDIDATES", "Suggestion", "candidate_cases", "check_k", "suggest_cases"]

#: which training cases ``--candidates`` offers: those the doctor has not labelled, or all of them
CANDIDATES = ("unlabelled", "all")


@dataclass
class Suggestion:
    """A strategy's ranking of the candidates; ``cases`` are the first ``k``.

    Attributes:
        expert: the new doctor.
        strategy / params / seed: what ranked them.
        experts: the existing experts whose predictions were used.
        ranking: every candidate, best first, with its score parts.
        signals: the candidates' signals (what the strategy saw).
        labelled: cases the doctor had already labelled (kept away from by diversity).
    """

    expert: str
    k: int
    strategy: str
    params: dict
    seed: int
    experts: list[str]
    ranking: list[RankedCase]
    signals: list[CaseSignals] = field(default_factory=list, repr=False)
    labelled: list[str] = field(default_factory=list)

    @property
    def cases(self) -> list[str]:
        return [r.case for r in self.ranking[: self.k]]

    def to_dict(self) -> dict:
        """JSON-ready (no feature vectors)."""
        return {
            "expert": self.expert,
            "k": self.k,
            "cases": self.cases,
            "strategy": self.strategy,
            "params": self.params,
            "seed": self.seed,
            "experts": self.experts,
            "labelled": self.labelled,
            "ranking": [r.to_dict() for r in self.ranking],
            "signals": [s.to_dict() for s in self.signals],
        }


def candidate_cases(manifest, expert: str, which: str = "unlabelled") -> tuple[list[str], list[str]]:
    """The training cases to rank and those the doctor already labelled (any kind of label).

    Args:
        manifest: the scanned dataset.
        expert: the doctor; one without any label in the dataset yet is a cold start.
        which: ``"unlabelled"`` (the doctor's unlabelled training cases; their labelled ones are
            returned as labelled) or ``"all"`` (every training case, none counted as labelled: for
            benchmarking with the doctor's labels hidden).
    """
    if which not in CANDIDATES:
        raise ConfigError(f"--candidates must be one of {', '.join(CANDIDATES)}, got {which!r}")
    train = manifest.case_ids("train")
    done = {lf.case for lf in manifest.labels_of(expert=expert, split="train")}
    if which == "all":
        return list(train), []
    return [c for c in train if c not in done], [c for c in train if c in done]


def check_k(k: int, candidates: Sequence[str], *, expert: str, which: str | None = None) -> None:
    """Refuse a K below 1 or above the number of candidates, with what to do.

    Args:
        which: how the candidates were chosen (:data:`CANDIDATES`), for the message; ``None``: given.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"--k must be a whole number of cases >= 1, got {k!r}")
    if k > len(candidates):
        where = {"unlabelled": f" ({expert}'s unlabelled training cases)", "all": " (every training case)"}.get(which, "")
        fix = "lower --k or pass --candidates all" if which == "unlabelled" else "lower --k"
        raise ConfigError(f"--k {k} is more than the {len(candidates)} candidate case(s){where}; {fix}")


def suggest_cases(
    bundle,
    manifest,
    *,
    expert: str,
    k: int,
    strategy="foreground-random",
    candidates: Sequence[str],
    labelled: Sequence[str] = (),
    seed: int = 0,
    signals: Sequence[CaseSignals] | None = None,
    device="cpu",
    sw_batch_size: int = 2,
    overlap: float = 0.5,
    blend: str = "gaussian",
    progress: bool = False,
) -> Suggestion:
    """Rank ``candidates`` for ``expert`` and suggest the first ``k``.

    Args:
        bundle: the model; every expert but ``expert`` is asked.
        manifest: the dataset (its images).
        expert: the new doctor.
        k: how many cases to suggest (1 to ``len(candidates)``).
        strategy: a registered strategy's name, ``{name, params}`` or an instance.
        candidates: training case ids to rank; labelled: ids the doctor labelled already.
        seed: seeds a random strategy.
        signals: precomputed signals of the candidates and labelled cases (e.g. one computation for
            many strategies and seeds); computed when ``None``.
        device / sw_batch_size / overlap / blend / progress: of the predictions.

    Raises:
        ConfigError: K out of range, an unknown strategy or bad parameters, no other expert.
        DatasetError: a case that is not a training case of the dataset.
    """
    chosen = create_strategy(strategy)
    check_k(k, candidates, expert=expert)
    unknown = [c for c in [*candidates, *labelled] if c not in manifest.cases]
    if unknown:
        raise DatasetError(f"{manifest.root}: no case {', '.join(unknown[:5])}; pass training cases of the dataset")
    experts = [e for e in bundle.experts if e != expert]
    if not experts:
        raise ConfigError(f"the model has no expert besides {expert!r}; suggest needs the existing experts' rows")
    if signals is None:
        images = {c: manifest.cases[c].images for c in dict.fromkeys([*candidates, *labelled])}
        signals = case_signals(bundle, images, experts=experts, needs=chosen.needs, device=device, sw_batch_size=sw_batch_size, overlap=overlap, blend=blend, progress=progress)
    by_case = {s.case: s for s in signals}
    cands, known = [by_case[c] for c in candidates], [by_case[c] for c in labelled]
    ranking = chosen.rank(cands, seed=seed, labelled=known)
    return Suggestion(expert=expert, k=k, strategy=chosen.name, params=chosen.get_params(), seed=seed, experts=experts, ranking=ranking, signals=cands, labelled=list(labelled))
