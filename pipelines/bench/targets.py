"""Stage-2 targets on the demo's new doctor, with the demo network and a longer pretraining.

The demo pretrains for 1,500 steps so that it finishes in minutes; at that budget the multi-expert
model is still far from converged. Here the same network pretrains for 4,500 steps (the only
difference from ``configs/demo.yaml``), and the new doctor is adapted from 3 dense and from 5
scribbled cases (3 seeds each), against the oracle (a pretraining that had the doctor's full
labels), the zero-shot mean row, the nearest existing expert, and networks trained from scratch on
the same 3 cases: one with about the adaptation's wall time (300 steps), one with the
pretraining's budget (4,500 steps).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run", "LONG", "LONG_STEPS", "SHORT_STEPS"]

LONG_STEPS = 4500  #: pretraining (and long from-scratch) budget in full mode
SHORT_STEPS = 300  #: from scratch with about an adaptation's wall time
LONG = (f"train.steps={LONG_STEPS}", f"train.val_every={LONG_STEPS // 3}", f"train.checkpoint_every={LONG_STEPS // 3}")


def run(ctx) -> dict:
    from experts.data.manifest import scan_dataset
    from experts.adaptation import choose_cases
    from pipelines.bench.efficiency import zero_shot_mean_row

    manifest = scan_dataset(ctx.data)
    new = manifest.new_experts[0]
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    full_mode = ctx.mode == "full"
    config = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml") if full_mode else ctx.config
    long = LONG if full_mode else ()
    base = ctx.pretrain("targets-pretrain", include=pre, config=config, overrides=long)
    oracle = ctx.pretrain("targets-oracle", include=pre + [new], config=config, overrides=long)
    out = {"expert": new, "config": "configs/demo.yaml" if full_mode else None, "overrides": list(long), "oracle": oracle["test_dice"].get(new), "mean_row": zero_shot_mean_row(base["model"], ctx.data, new), "runs": {}}
    for label, shots, scribbles in (("dense-3", 3, False), ("scribbles-5", 5, True)):
        for seed in range(ctx.settings["seeds"]):
            s = ctx.adapt(f"targets-{label}-s{seed}", model=base["model"], expert=new, shots=shots, scribbles=scribbles, config=config, overrides=(f"seed={seed}",))
            out["runs"].setdefault(label, []).append({k: s[k] for k in ("cases", "test_dice", "test_dice_before", "init_source", "steps", "seconds", "adapter_bytes")})
    available = [lf.case for lf in manifest.labels_of(expert=new, split="train", kind="dense")]
    cases = choose_cases(available, cases=None, shots=3, seed=0)
    steps = LONG_STEPS if full_mode else None
    short = ctx.pretrain("targets-scratch-short", include=[new], cases=cases, config=config, overrides=(f"train.steps={SHORT_STEPS}",) if full_mode else ())
    full = ctx.pretrain("targets-scratch-long", include=[new], cases=cases, config=config, overrides=long)
    out["scratch"] = {"cases": cases, "short": {"steps": SHORT_STEPS if full_mode else None, "seconds": short["train_seconds"], "test_dice": short["test_dice"].get(new)}, "long": {"steps": steps, "seconds": full["train_seconds"], "test_dice": full["test_dice"].get(new)}}
    out["pretrain_seconds"] = base["train_seconds"]
    return out
