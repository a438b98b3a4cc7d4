"""The interactive evaluation of the CVPR 2025 interactive 3D challenge, on one session.

One first prompt (a box around the reference object: its tight bounding box on the model grid; or,
in the scribble-first variant, a scribble of the ``line`` style through it), then ``clicks`` (5)
corrections, each at the distance-transform maximum of the largest error component
(:func:`experts.interactive.corrections.error_click`). After each of the 1 + 5 steps: Dice, NSD
(``tolerance_mm``, 2 mm in the challenge) and the seconds the interaction took. The area under the
Dice (and NSD) curve is the trapezoid over the steps at unit spacing (6 steps: at most 5). The
automatic answer (before any prompt) is scored too: the non-interactive model's line.

With ``replay`` the prompts are given instead (another session's, in order): the same prompts
answered by another expert's row, say, to see whether the row matters.

Everything is measured on the model's grid (RAS, the plan's spacing), where the session works.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from experts.interactive.corrections import error_click
from experts.interactive.prompts import Prompt

__all__ = ["run_protocol", "summarise", "VARIANTS", "first_prompt", "dice"]

VARIANTS = ("box", "scribble")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two bool arrays (1.0 when both are empty)."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def _nsd(pred: np.ndarray, truth: np.ndarray, spacing, tolerance_mm: float) -> float:
    from experts.metrics.surface import surface_metrics

    value = surface_metrics(pred.astype(np.uint8), truth.astype(np.uint8), num_classes=2, spacing=spacing, tolerance_mm=tolerance_mm).nsd[1]
    return float(value.value) if value.value is not None else float("nan")


def first_prompt(truth: np.ndarray, variant: str, *, spacing, seed: int = 0) -> Prompt:
    """The first prompt of ``variant`` for the reference ``truth`` (bool, model grid)."""
    if variant == "box":
        voxels = np.argwhere(truth)
        return Prompt("box", [voxels.min(0), voxels.max(0)])
    from experts.scribbles import simulate_scribbles

    partial = simulate_scribbles(truth.astype(np.uint8), ignore_label=2, style="line", seed=seed, spacing=tuple(spacing), mode="3d", thickness_mm=float(min(spacing)))
    return Prompt("scribble", np.argwhere(partial == 1), positive=True, connected=False)


def run_protocol(session, truth: np.ndarray, *, variant: str = "box", clicks: int = 5, spacing: Sequence[float], tolerance_mm: float = 2.0, seed: int = 0,
                 replay: Sequence[Prompt | None] | None = None) -> dict:
    """Run the protocol on a fresh ``session`` against ``truth`` (bool ``[D, H, W]``, model grid).

    ``replay``: the ``1 + clicks`` prompts to give (None where a step had none) instead of the
    protocol's own.

    Returns:
        ``{"automatic": {dice, nsd}, "steps": [{step, prompt, dice, nsd, seconds, network_voxels}],
        "prompts", "dice_auc", "nsd_auc", "final_dice", "final_nsd"}``; ``prompts`` is what a
        replay takes.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if replay is not None and len(replay) != clicks + 1:
        raise ValueError(f"replay: {len(replay)} prompts for 1 + {clicks} steps")
    truth = np.asarray(truth, bool)
    auto = session.prob > 0.5
    result = {"automatic": {"dice": dice(auto, truth), "nsd": _nsd(auto, truth, spacing, tolerance_mm)}, "steps": [], "prompts": []}
    prompt = replay[0] if replay is not None else first_prompt(truth, variant, spacing=spacing, seed=seed)
    for step in range(clicks + 1):
        out = session.add(prompt) if prompt is not None else {"seconds": 0.0, "network_voxels": 0}
        pred = session.prob > 0.5
        result["prompts"].append(prompt)
        result["steps"].append({"step": step, "prompt": "none" if prompt is None else prompt.kind + ("+" if prompt.positive else "-"),
                                "dice": dice(pred, truth), "nsd": _nsd(pred, truth, spacing, tolerance_mm), "seconds": out["seconds"], "network_voxels": out["network_voxels"]})
        if step < clicks:
            prompt = replay[step + 1] if replay is not None else error_click(pred, truth, spacing=spacing)
    dices = [s["dice"] for s in result["steps"]]
    nsds = [s["nsd"] for s in result["steps"]]
    result.update(dice_auc=float(np.trapezoid(dices)), nsd_auc=float(np.trapezoid(nsds)), final_dice=dices[-1], final_nsd=nsds[-1])
    return result


def summarise(results: list[dict]) -> dict:
    """Means over cases of one expert and variant: per-step Dice/NSD, AUCs, finals, seconds."""
    if not results:
        return {}
    steps = len(results[0]["steps"])
    timed = [s for r in results for s in r["steps"] if s["prompt"] != "none"]
    seconds = [s["seconds"] for s in timed] or [0.0]
    mean = lambda xs: float(np.nanmean(xs))  # noqa: E731
    return {
        "cases": len(results),
        "automatic_dice": mean([r["automatic"]["dice"] for r in results]),
        "automatic_nsd": mean([r["automatic"]["nsd"] for r in results]),
        "dice": [mean([r["steps"][i]["dice"] for r in results]) for i in range(steps)],
        "nsd": [mean([r["steps"][i]["nsd"] for r in results]) for i in range(steps)],
        "dice_auc": mean([r["dice_auc"] for r in results]),
        "nsd_auc": mean([r["nsd_auc"] for r in results]),
        "final_dice": mean([r["final_dice"] for r in results]),
        "final_nsd": mean([r["final_nsd"] for r in results]),
        "seconds_median": float(np.median(seconds)),
        "seconds_p95": float(np.percentile(seconds, 95)),
        "network_voxels_median": float(np.median([s["network_voxels"] for s in timed] or [0])),
    }
