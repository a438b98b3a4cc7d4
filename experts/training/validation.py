"""Per-expert validation: each expert's prediction against that expert's own dense labels."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from experts.inference import predict_experts

__all__ = ["expert_dice"]


def expert_dice(
    model: torch.nn.Module,
    *,
    cache,
    targets: dict[str, list[tuple[str, int]]],
    class_names: list[str],
    patch_size,
    device,
    overlap: float = 0.25,
    sw_batch_size: int = 2,
) -> dict[str, dict[str, float]]:
    """Mean Dice per expert and foreground class on preprocessed validation volumes.

    Args:
        model: the network.
        cache: a :class:`~experts.data.datasets.VolumeCache` of the validation cases (unpadded).
        targets: case -> ``[(expert, row), ...]`` with a dense label of that expert in ``cache``.
        class_names: background first.
        patch_size: sliding-window size.

    Returns:
        ``{expert: {class: mean Dice, "mean": mean over classes}}``; a class absent from both the
        label and the prediction of a case is skipped for that case.
    """
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for case, pairs in targets.items():
        rows = [row for _, row in pairs]
        probs = predict_experts(model, cache.image(case), rows, patch_size=patch_size, overlap=overlap, sw_batch_size=sw_batch_size, device=device)
        pred = probs.argmax(dim=1).numpy()  # [E, D, H, W]
        for (expert, _), p in zip(pairs, pred):
            ref = np.asarray(cache.label(case, expert)["label"])[0]
            for k, name in enumerate(class_names[1:], start=1):
                a, b = p == k, ref == k
                total = int(a.sum()) + int(b.sum())
                if total:
                    scores[expert][name].append(2.0 * int((a & b).sum()) / total)
    out = {}
    for expert, per_class in scores.items():
        means = {c: float(np.mean(v)) for c, v in per_class.items()}
        means["mean"] = float(np.mean(list(means.values()))) if means else float("nan")
        out[expert] = means
    return out
