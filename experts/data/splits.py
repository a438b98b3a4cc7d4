"""Case-level splits: the same image never straddles training and validation.

A training sample is a (case, expert, label) triple, but folds are made over cases
(scikit-learn's ``GroupKFold`` with the case id as group), never over triples: two experts' labels of
one scan are not independent evidence.
"""

from __future__ import annotations

from sklearn.model_selection import GroupKFold

__all__ = ["case_split"]


def case_split(items: list[tuple[str, str]], *, n_folds: int, fold: int) -> tuple[list[str], list[str]]:
    """Split (case, expert) items into training and validation cases.

    Args:
        items: ``(case, expert)`` pairs of the training labels.
        n_folds: number of folds (reduced to the number of cases when there are fewer).
        fold: which fold is validation, ``0 <= fold < n_folds``.

    Returns:
        ``(train_cases, val_cases)``, sorted, disjoint, covering every case.
    """
    cases = sorted({c for c, _ in items})
    if len(cases) < 2:
        return cases, []
    k = min(n_folds, len(cases))
    if not 0 <= fold < k:
        raise ValueError(f"fold must be in 0..{k - 1} for {len(cases)} cases and {n_folds} folds, got {fold}")
    groups = [c for c, _ in items]
    splitter = GroupKFold(n_splits=k)
    for i, (_, val_idx) in enumerate(splitter.split(items, groups=groups)):
        if i == fold:
            val = sorted({groups[j] for j in val_idx})
            return [c for c in cases if c not in val], val
    raise AssertionError("unreachable")
