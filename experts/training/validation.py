"""Dice of expert-conditioned predictions against labels, on preprocessed volumes.

Used for validation during pretraining (each expert against its own dense labels), for choosing the
nearest existing expert when adapting (every existing expert against the new doctor's labels) and
for adaptation's held-back case. Partial labels are scored on annotated voxels only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

import numpy as np
import torch

from experts.inference import predict_experts

__all__ = ["Target", "expert_dice", "dense_targets", "score_test_cases"]


class Target(NamedTuple):
    """Score the network conditioned on ``row`` against ``label_expert``'s label; report under ``key``."""

    label_expert: str
    row: int
    key: str


def expert_dice(
    model: torch.nn.Module,
    *,
    cache,
    targets: dict[str, list[tuple]],
    class_names: list[str],
    patch_size,
    device,
    overlap: float = 0.25,
    sw_batch_size: int = 2,
    partial: str = "dice",
) -> dict[str, dict[str, float]]:
    """Mean Dice per key and foreground class.

    Args:
        model: the network.
        cache: a :class:`~experts.data.datasets.VolumeCache` (unpadded) holding the cases and labels.
        targets: case -> targets; a target is a :class:`Target` or a pair ``(expert, row)``
            meaning ``Target(expert, row, expert)``.
        class_names: background first; the ignore value is ``len(class_names)``.
        patch_size: sliding-window size.
        partial: how a partial label (one with unannotated voxels) is scored: ``"dice"`` on the
            annotated voxels, or ``"accuracy"``: per class, background included, the fraction of
            the voxels marked as that class that are predicted as it (reported as ``acc:<class>``),
            which a prediction cannot raise by over-segmenting.

    Returns:
        ``{key: {class: mean Dice, "mean": mean over classes}}``. A class absent from both the
        label and the prediction of a case (on annotated voxels) is skipped for that case.
    """
    ignore = len(class_names)
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for case, raw in targets.items():
        tgts = [t if len(t) == 3 else Target(t[0], t[1], t[0]) for t in raw]
        rows = sorted({t.row for t in tgts})
        probs = predict_experts(model, cache.image(case), rows, patch_size=patch_size, overlap=overlap, sw_batch_size=sw_batch_size, device=device)
        preds = dict(zip(rows, probs.argmax(dim=1).numpy()))  # row -> [D, H, W]
        for t in tgts:
            ref = np.asarray(cache.label(case, t.label_expert)["label"])[0]
            annotated = ref != ignore
            p = preds[t.row]
            if partial == "accuracy" and not annotated.all():
                for k, name in enumerate(class_names):
                    marked = ref == k
                    if marked.any():
                        scores[t.key][f"acc:{name}"].append(float((p[marked] == k).mean()))
                continue
            for k, name in enumerate(class_names[1:], start=1):
                a, b = (p == k) & annotated, ref == k
                total = int(a.sum()) + int(b.sum())
                if total:
                    scores[t.key][name].append(2.0 * int((a & b).sum()) / total)
    out = {}
    for key, per_class in scores.items():
        means = {c: float(np.mean(v)) for c, v in per_class.items()}
        means["mean"] = float(np.mean(list(means.values()))) if means else float("nan")
        out[key] = means
    return out


def dense_targets(manifest, cases, rows: dict[str, int], *, split: str) -> dict[str, list[tuple[str, int]]]:
    """``{case: [(expert, row), ...]}`` for every dense label of the experts in ``rows`` on ``cases``."""
    targets: dict[str, list[tuple[str, int]]] = {}
    for c in cases:
        for e, row in rows.items():
            lf = manifest.label(c, e)
            if lf is not None and lf.kind == "dense" and lf.split == split:
                targets.setdefault(c, []).append((e, row))
    return targets


def score_test_cases(net, manifest, plan, rows: dict[str, int], *, device, sw_batch_size: int = 2, extra: dict[str, tuple[str, int]] | None = None) -> dict:
    """Dice per expert and class on the held-out cases (``labelsTs``, dense labels of ``rows``' experts).

    Args:
        net: the network.
        manifest: the scanned dataset.
        plan: the preprocessing plan.
        rows: expert id -> its row in ``net``.
        extra: more rows scored in the same pass, ``{key: (label expert, row)}``, reported under key
            (e.g. the initial row of an adaptation, against the same doctor's labels).

    Returns:
        As :func:`expert_dice`; empty when no test case has such a label.
    """
    from experts.data.datasets import VolumeCache

    targets = dense_targets(manifest, manifest.case_ids("test"), rows, split="test")
    for key, (label_expert, row) in (extra or {}).items():
        for pairs in targets.values():
            if any(e == label_expert for e, _ in pairs):
                pairs.append(Target(label_expert, row, key))
    if not targets:
        return {}
    cache = VolumeCache(plan, images={c: manifest.cases[c].images for c in targets}, labels={(c, t[0]): manifest.label(c, t[0]).path for c, pairs in targets.items() for t in pairs}, pad=False)
    return expert_dice(net, cache=cache, targets=targets, class_names=plan.class_names, patch_size=plan.patch_size, device=device, sw_batch_size=sw_batch_size)
