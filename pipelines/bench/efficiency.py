"""Label efficiency: how many of a new expert's cases adaptation needs, dense or scribbled.

Held-out experts: the dataset's new doctor (base: pretraining without it; oracle: pretraining with
it) and one pretraining expert left out (the one with the most dense training labels; base:
pretraining without it; oracle: the pretraining that had it). For each K, label kind and seed the
adapted row is scored on the expert's test labels, beside the zero-shot mean row, the nearest
existing expert (chosen on the K given cases) and the oracle; at K = 3 and all, also a network
trained from scratch on the same cases and fine-tuning everything.
"""

from __future__ import annotations

import copy

import numpy as np

__all__ = ["run", "zero_shot_mean_row"]


def zero_shot_mean_row(model_dir: str, data, expert: str) -> dict:
    """Test Dice of the mean of the existing rows, without any training."""
    from experts.adaptation import initial_rows
    from experts.data.manifest import scan_dataset
    from pipelines.runtime.models import load_model
    from experts.training.validation import score_test_cases

    base = load_model(model_dir)
    manifest = scan_dataset(data)
    rows, _ = initial_rows(base.network, "mean", experts=base.experts)
    net = copy.deepcopy(base.network)
    row, _ = net.add_expert(rows)
    return score_test_cases(net, manifest, base.plan, {expert: row}, device="cpu").get(expert, {})


def _held_out_pretraining_expert(manifest, pretraining: list[str]) -> str:
    counts = {e: len(manifest.labels_of(expert=e, split="train", kind="dense")) for e in pretraining}
    return max(pretraining, key=lambda e: (counts[e], -pretraining.index(e)))


def run(ctx) -> dict:
    from experts.data.manifest import scan_dataset
    from experts.adaptation import choose_cases

    manifest = scan_dataset(ctx.data)
    new = manifest.new_experts[0]
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    x = _held_out_pretraining_expert(manifest, pre)
    cin = ctx.pretrain("cin", include=pre)
    oracle_new = ctx.pretrain("oracle-new", include=pre + [new])
    without_x = ctx.pretrain(f"without-{x}", include=[e for e in pre if e != x])
    settings = ctx.settings
    out = {"held_out": {}, "ks": [str(k) for k in settings["ks"]]}
    for h, base, oracle, seeds in ((new, cin, oracle_new, settings["seeds"]), (x, without_x, cin, 1 if ctx.mode == "full" else settings["seeds"])):
        available = [lf.case for lf in manifest.labels_of(expert=h, split="train", kind="dense")]
        entry = {
            "base": base["out"],
            "oracle": oracle["test_dice"].get(h),
            "mean_row": zero_shot_mean_row(base["model"], ctx.data, h),
            "seeds": seeds,
            "adapted": {},
            "nearest": {},
            "scratch": {},
            "finetune_all": {},
            "seconds": [],
            "adapter_bytes": [],
        }
        for k in settings["ks"]:
            shots = len(available) if k == "all" else k
            for kind in ("dense", "scribbles"):
                key = f"{kind}/{k}"
                for seed in range(seeds):
                    s = ctx.adapt(f"adapt-{h}-{kind}-k{k}-s{seed}", model=base["model"], expert=h, shots=shots, scribbles=kind == "scribbles", overrides=(f"seed={seed}",))
                    entry["adapted"].setdefault(key, []).append(s["test_dice"])
                    entry["nearest"].setdefault(key, []).append({**(s["test_dice_before"] or {}), "expert": s["init_source"]})
                    entry["seconds"].append(s["seconds"])
                    entry["adapter_bytes"].append(s["adapter_bytes"])
            if k in (3, "all"):
                cases = choose_cases(available, cases=None, shots=shots, seed=0)
                steps = settings["scratch_steps"]
                scratch = ctx.pretrain(f"scratch-{h}-k{k}", include=[h], cases=cases, overrides=((f"train.steps={steps}",) if steps else ()))
                entry["scratch"][str(k)] = scratch["test_dice"].get(h)
                ft = ctx.adapt(f"finetune-{h}-k{k}", model=base["model"], expert=h, shots=shots, overrides=("seed=0", "adapt.trainable.name=all"))
                entry["finetune_all"][str(k)] = ft["test_dice"]
        out["held_out"][h] = entry
    return out


def summarise(values: list[dict], key: str = "mean") -> tuple[float | None, float | None]:
    """Mean and standard deviation over seeds of one Dice entry."""
    xs = [v[key] for v in values if v and v.get(key) is not None]
    if not xs:
        return None, None
    return float(np.mean(xs)), float(np.std(xs))
