"""Human inter-expert agreement: how much the experts' own labels overlap.

For each pair of experts and each foreground class, the mean Dice over the cases both labelled
densely. This is the yardstick a model is measured against: "is the model for Dr. B as close to
Dr. B as Dr. B's colleagues are?"
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from experts.data.nifti import load_volume
from experts.metrics import overlap_metrics

__all__ = ["pairwise_agreement"]


def pairwise_agreement(manifest, *, split: str | None = None, experts: list[str] | None = None) -> dict[str, dict[tuple[str, str], tuple[float, int]]]:
    """Mean pairwise Dice per foreground class on cases both experts labelled densely.

    Args:
        manifest: a :class:`~experts.data.manifest.Manifest`.
        split: ``"train"``, ``"test"`` or ``None`` (both).
        experts: restrict to these experts (default: all).

    Returns:
        ``{class_name: {(expert_a, expert_b): (mean_dice, n_cases)}}``; pairs without a common
        dense case, and cases where a class is absent from both labels, are left out.
    """
    experts = experts or manifest.experts
    spec = manifest.spec
    names = spec.class_names
    dense: dict[str, dict[str, object]] = {}
    for lf in manifest.labels_of(kind="dense"):
        if (split is None or lf.split == split) and lf.expert in experts:
            dense.setdefault(lf.case, {})[lf.expert] = lf.path
    scores: dict[str, dict[tuple[str, str], list[float]]] = {n: {} for n in names[1:]}
    for case, paths in sorted(dense.items()):
        if len(paths) < 2:
            continue
        arrays = {e: np.asarray(load_volume(p, kind="label").array).astype(np.int64) for e, p in paths.items()}
        for a, b in combinations([e for e in experts if e in arrays], 2):
            result = overlap_metrics(arrays[a], arrays[b], num_classes=len(names))
            for value, metric in result.dice.items():
                if metric.defined:
                    scores[names[value]].setdefault((a, b), []).append(metric.value)
    return {name: {pair: (float(np.mean(v)), len(v)) for pair, v in pairs.items()} for name, pairs in scores.items() if pairs}
