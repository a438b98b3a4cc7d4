"""Human inter-expert agreement: how much the experts' own labels overlap.

For each pair of experts and each foreground class, the mean Dice over the cases both labelled
densely. This is the yardstick a model is measured against: "is the model for Dr. B as close to
Dr. B as Dr. B's colleagues are?"
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from experts.data.nifti import load_volume

__all__ = ["pairwise_agreement", "label_dice"]


def label_dice(a: np.ndarray, b: np.ndarray, value: int) -> float | None:
    """Dice of ``a == value`` and ``b == value``; ``None`` when the class is absent from both."""
    x, y = a == value, b == value
    total = int(x.sum()) + int(y.sum())
    if total == 0:
        return None
    return 2.0 * int((x & y).sum()) / total


def pairwise_agreement(manifest, *, split: str | None = None, experts: list[str] | None = None) -> dict[str, dict[tuple[str, str], tuple[float, int]]]:
    """Mean pairwise Dice per foreground class on cases both experts labelled densely.

    Args:
        manifest: a :class:`~experts.data.manifest.Manifest`.
        split: ``"train"``, ``"test"`` or ``None`` (both).
        experts: restrict to these experts (default: all).

    Returns:
        ``{class_name: {(expert_a, expert_b): (mean_dice, n_cases)}}``; pairs without a common
        dense case are left out.
    """
    experts = experts or manifest.experts
    spec = manifest.spec
    classes = [(n, spec.labels[n]) for n in spec.class_names[1:]]
    dense: dict[str, dict[str, object]] = {}
    for lf in manifest.labels_of(kind="dense"):
        if (split is None or lf.split == split) and lf.expert in experts:
            dense.setdefault(lf.case, {})[lf.expert] = lf.path
    scores: dict[str, dict[tuple[str, str], list[float]]] = {n: {} for n, _ in classes}
    for case, paths in sorted(dense.items()):
        if len(paths) < 2:
            continue
        arrays = {e: load_volume(p, kind="label").array for e, p in paths.items()}
        for a, b in combinations([e for e in experts if e in arrays], 2):
            for name, value in classes:
                d = label_dice(arrays[a], arrays[b], value)
                if d is not None:
                    scores[name].setdefault((a, b), []).append(d)
    return {
        name: {pair: (float(np.mean(v)), len(v)) for pair, v in pairs.items()}
        for name, pairs in scores.items()
        if pairs
    }
