"""Prompt styles: which kind of sparse annotation teaches the most per annotated voxel.

For the demo's new doctor, adaptation from 5 cases annotated in each registered style (and one
habit) at a matched annotation budget, 3 seeds, against dense labels at K = 1 and K = 3; then
scribble-only pretraining in the two best styles against dense pretraining. The budget is matched
on a pretraining expert's training labels, never the new doctor's: each style's budget knob
(slice density, clicks per class, dense slices) takes the grid value whose annotated fraction comes
closest to that of the default slice-wise scribbles; box and habit have no knob and are reported
at their own budget. The annotated fraction actually reached on the doctor's cases is reported
beside each Dice.
"""

from __future__ import annotations

import numpy as np

__all__ = ["run", "ARMS"]

#: arm -> (style, fixed params, budget knob, grid of knob values)
ARMS = {
    "slicewise": ("slicewise", {"thickness": 1, "axis": -1}, "density", [0.1, 0.2, 0.3, 0.5, 0.8]),
    "line": ("line", {}, "density", [0.1, 0.2, 0.3, 0.5, 0.8]),
    "centreline": ("centreline", {}, "density", [0.1, 0.2, 0.3, 0.5, 0.8]),
    "contour": ("contour", {}, "density", [0.1, 0.2, 0.3, 0.5, 0.8]),
    "clicks": ("clicks", {"mode": "centre"}, "n_positive", [4, 16, 64, 256]),
    "slices": ("slices", {}, "n_slices", [1, 2, 3, 5, 8]),
    "box": ("box", {}, None, [None]),
    "habit:contour-tracer": ("habit", {"habit": "contour-tracer"}, None, [None]),
}
SHOTS = 5


def _fraction(label: np.ndarray, ignore: int) -> float:
    return float((label != ignore).mean())


def _calibrate(manifest, expert: str, *, cases: int = 3) -> tuple[float, dict]:
    """The target budget (default slice-wise scribbles' annotated fraction) and each arm's knob
    value closest to it, both measured on ``expert``'s first dense training labels."""
    from experts.data.nifti import load_volume, spacing_of
    from experts.scribbles import simulate_scribbles

    ignore = manifest.spec.num_classes
    files = manifest.labels_of(expert=expert, split="train", kind="dense")[:cases]
    vols = [load_volume(lf.path, kind="label") for lf in files]
    labels = [(np.asarray(v.array).astype(np.int64), spacing_of(v.affine)) for v in vols]

    def fraction(style, params):
        return float(np.mean([_fraction(simulate_scribbles(lab, ignore_label=ignore, style=style, seed=i, spacing=sp, **params), ignore) for i, (lab, sp) in enumerate(labels)]))

    target = fraction("slicewise", {"density": 0.5, "thickness": 1, "axis": -1})
    chosen = {}
    for arm, (style, fixed, knob, grid) in ARMS.items():
        tries = {v: fraction(style, {**fixed, **({knob: v} if knob else {}), **({"n_negative": v} if knob == "n_positive" else {})}) for v in grid}
        best = min(tries, key=lambda v: abs(tries[v] - target))
        chosen[arm] = {"knob": knob, "value": best, "calibration_fraction": tries[best]}
    return target, chosen


def _overrides(arm: str, value) -> tuple[str, ...]:
    import json

    style, fixed, knob, _ = ARMS[arm]
    params = {**fixed, **({knob: value} if knob else {}), **({"n_negative": value} if knob == "n_positive" else {})}
    return (f"scribbles.name={style}", f"scribbles.params={json.dumps(params)}")


def _annotated(run_dir, ignore: int) -> float:
    from pathlib import Path

    from experts.data.nifti import load_volume

    files = sorted((Path(run_dir) / "scribbles").glob("*.nii*"))
    return float(np.mean([_fraction(np.asarray(load_volume(f, kind="label").array), ignore) for f in files])) if files else float("nan")


def run(ctx) -> dict:
    from experts.data.manifest import scan_dataset
    from pipelines.bench.scribbles import derived_dataset

    manifest = scan_dataset(ctx.data)
    new = manifest.new_experts[0]
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    calibrator = max(pre, key=lambda e: len(manifest.labels_of(expert=e, split="train", kind="dense")))
    target, chosen = _calibrate(manifest, calibrator)
    base = ctx.pretrain("cin", include=pre)
    seeds = ctx.settings["seeds"]
    ignore = manifest.spec.num_classes
    out = {"expert": new, "shots": SHOTS, "seeds": seeds, "calibrated_on": calibrator, "target_fraction": target, "arms": {}, "dense": {}}
    for k in (1, 3):
        runs = [ctx.adapt(f"prompts-dense-k{k}-s{s}", model=base["model"], expert=new, shots=k, overrides=(f"seed={s}",)) for s in range(seeds)]
        out["dense"][str(k)] = {"test_dice": [r["test_dice"] for r in runs], "nearest": [r["test_dice_before"] for r in runs]}
    for arm, knob in chosen.items():
        runs = [ctx.adapt(f"prompts-{arm.replace(':', '-')}-s{s}", model=base["model"], expert=new, shots=SHOTS, scribbles=True, overrides=_overrides(arm, knob["value"]) + (f"seed={s}",)) for s in range(seeds)]
        fractions = [_annotated(ctx.out / "runs" / f"prompts-{arm.replace(':', '-')}-s{s}", ignore) for s in range(seeds)]
        out["arms"][arm] = {**knob, "test_dice": [r["test_dice"] for r in runs], "nearest": [r["test_dice_before"] for r in runs], "annotated_fraction": fractions, "seconds": [r["seconds"] for r in runs]}
    out["ranking"] = _ranking(out)
    dense_data = derived_dataset(manifest, pre, ctx.out / "data-dense", scribbles=False, scribble_cfg=None)
    dense = ctx.pretrain("dense-only", data=dense_data)
    out["pretraining"] = {"dense": dense["test_dice"], "styles": {}}
    for arm in out["ranking"][:2]:
        cfg = _scribble_cfg(arm, chosen[arm]["value"])
        data = derived_dataset(manifest, pre, ctx.out / f"data-prompts-{arm.replace(':', '-')}", scribbles=True, scribble_cfg=cfg)
        scrib = ctx.pretrain(f"prompts-pretrain-{arm.replace(':', '-')}", data=data)
        out["pretraining"]["styles"][arm] = {"test_dice": scrib["test_dice"], "ratio": _ratio(scrib["test_dice"], dense["test_dice"])}
    return out


def _scribble_cfg(arm: str, value):
    from pipelines.runtime.config import ScribbleConfig

    style, fixed, knob, _ = ARMS[arm]
    return ScribbleConfig(name=style, params={**fixed, **({knob: value} if knob else {}), **({"n_negative": value} if knob == "n_positive" else {})})


def _mean_dice(values: list[dict]) -> float | None:
    xs = [v["mean"] for v in values if v and v.get("mean") is not None]
    return float(np.mean(xs)) if xs else None


def _ranking(out: dict) -> list[str]:
    """Arms by Dice gained over the zero-shot nearest row per 1 % of voxels annotated (best first)."""
    def gain(arm):
        a = out["arms"][arm]
        d, n, f = _mean_dice(a["test_dice"]), _mean_dice(a["nearest"]), float(np.nanmean(a["annotated_fraction"]))
        return -np.inf if d is None or n is None or not f > 0 else (d - n) / (100 * f)

    for arm in out["arms"]:
        out["arms"][arm]["gain_per_percent"] = gain(arm)
    return sorted(out["arms"], key=gain, reverse=True)


def _ratio(scribbled: dict, dense: dict) -> dict:
    return {e: scribbled[e]["mean"] / dense[e]["mean"] for e in scribbled if e in dense and dense[e].get("mean")}
