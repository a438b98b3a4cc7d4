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

__all__ = ["Target", "expert_dice"]


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
) -> dict[str, dict[str, float]]:
    """Mean Dice per key and foreground class.

    Args:
        model: the network.
        cache: a :class:`~experts.data.datasets.VolumeCache` (unpadded) holding the cases and labels.
        targets: case -> targets; a target is a :class:`Target` or a pair ``(expert, row)``
            meaning ``Target(expert, row, expert)``.
        class_names: background first; the ignore value is ``len(class_names)``.
        patch_size: sliding-window size.

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
