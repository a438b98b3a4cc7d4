"""Dice and HD95 of expert-conditioned predictions against dense labels, per expert.

Validation Dice (:mod:`experts.training.validation`) says how much overlaps; the regularisers for
scribbles mostly change boundaries and stray islands, which HD95 measures. Both here come from one
prediction per case, in the plan's space (HD95 in mm of the plan's spacing).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["dice_and_hd95"]


def dice_and_hd95(net, plan, *, images: dict, labels: dict, rows: dict[str, int], device="cpu", sw_batch_size: int = 2) -> dict[str, dict]:
    """Mean Dice and HD95 over cases and foreground classes, per expert.

    Args:
        net: the network.
        plan: its preprocessing plan.
        images: case -> image paths; labels: ``(case, expert)`` -> a dense label path.
        rows: expert -> its row in ``net``.

    Returns:
        ``{expert: {"dice": mean, "hd95": mean mm, "cases": n}}``; a class absent from both the
        label and the prediction is skipped, an HD95 undefined for a case (one side empty) too.
    """
    from experts.data.datasets import VolumeCache
    from experts.inference import predict_experts
    from experts.metrics.surface import surface_metrics

    k = plan.num_classes
    cache = VolumeCache(plan, images=images, labels=labels, pad=False)
    dice, hd95, cases = defaultdict(list), defaultdict(list), defaultdict(int)
    for case in images:
        experts = [e for (c, e) in labels if c == case and e in rows]
        if not experts:
            continue
        probs = predict_experts(net, cache.image(case), [rows[e] for e in experts], patch_size=plan.patch_size, sw_batch_size=sw_batch_size, device=device)
        for e, pred in zip(experts, probs.argmax(dim=1).numpy()):
            ref = np.asarray(cache.label(case, e)["label"])[0].astype(np.int64)
            for c in range(1, k):
                total = int((pred == c).sum() + (ref == c).sum())
                if total:
                    dice[e].append(2.0 * int(((pred == c) & (ref == c)).sum()) / total)
            surf = surface_metrics(pred.astype(np.int64), ref, num_classes=k, spacing=plan.spacing)
            hd95[e] += [v.value for v in surf.hd95.values() if v.value is not None]
            cases[e] += 1
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    return {e: {"dice": mean(dice[e]), "hd95": mean(hd95[e]), "cases": cases[e]} for e in rows if cases[e]}
