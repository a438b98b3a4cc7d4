"""Scribble regularisers against partial losses alone (issue 18's ablation).

Scribble-only pretraining on the demo data (every pretraining expert's training labels replaced by
simulated scribbles), the same budget and seeds for every arm: partial Dice+CE alone; + masked CRF;
+ CRF + attentive similarity (with the attention block); + EM class ratio and shape prior;
+ mixing and occlusion; all together. Per arm: test Dice and HD95 per expert against that expert's
dense test labels, the ratio to dense pretraining's Dice, seconds and peak MB of one training step
(a fresh process per arm), over seeds. Term weights are chosen on validation cases (the held-out
fold of the training cases, scored against their dense labels), never on the test cases: in full
mode each term's weight grid is tried with seed 0 and the best validation Dice wins; in quick
mode the default weights are used as they are.

``expertseg bench --suite regularisers`` (full: configs/bench.yaml, 3 seeds, weight search);
``expertseg bench --quick --suite regularisers`` is the reduced size (toy data, 1 seed, no search).
Options (``--option regularisers.KEY=VALUE``): ``seeds`` (of the main arms, :data:`MAIN_ARMS`),
``other_seeds`` (of the other arms), ``search`` (1: choose the weights on validation cases; 0: the
defaults), ``arms`` (a comma-separated subset of :data:`ARMS`; ``partial`` always runs).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

__all__ = ["run", "ARMS", "TERMS", "section", "plot"]

#: arm -> the components it adds to the partial loss ("augment": mixing and occlusion)
ARMS = {
    "partial": (),
    "crf": ("masked_crf",),
    "crf+attention": ("masked_crf", "attentive_similarity"),
    "em+priors": ("em_class_ratio", "shape_prior"),
    "augmentation": ("augment",),
    "all": ("masked_crf", "attentive_similarity", "em_class_ratio", "shape_prior", "augment"),
}
#: the arms the comparison rests on: partial losses alone and everything together
MAIN_ARMS = ("partial", "all")
#: term -> (default weight, weight grid searched on validation cases in full mode, or None)
TERMS = {
    "masked_crf": (0.1, [0.03, 0.1, 0.3]),
    "attentive_similarity": (0.1, [0.03, 0.1, 0.3]),
    "em_class_ratio": (0.3, [0.1, 0.3, 1.0]),
    "shape_prior": (0.1, None),
}
#: the arm whose pretraining picks each searched term's weight, in search order
SEARCH = (("masked_crf", "crf"), ("attentive_similarity", "crf+attention"), ("em_class_ratio", "em+priors"))
ATTENTION = {"level": 2, "heads": 4, "radius": [2, 2, 2]}
AUGMENT = {"mix": 0.5, "occlusion": 0.3}


def arm_overrides(arm: str, weights: dict, *, steps: int, levels: int) -> tuple[str, ...]:
    """``--set`` values of an arm: its terms (warm-up: start at 1/6 of the budget, ramp over 1/3),
    the attention block and the augmentation."""
    parts = ARMS[arm]
    terms = [{"name": "partial_dice_ce"}]
    for name in (p for p in parts if p in TERMS):
        terms.append({"name": name, "weight": weights[name], "start_step": steps // 6, "ramp_steps": steps // 3})
    out = [f"loss.terms={json.dumps(terms)}"]
    if "attentive_similarity" in parts:
        out += [f"network.attention={json.dumps({**ATTENTION, 'level': min(ATTENTION['level'], levels - 2)})}", "network.features=[decoder.0, attention]"]
    if "augment" in parts:
        out += [f"augment.{k}={v}" for k, v in AUGMENT.items()]
    return tuple(out)


def _cases(ctx, scrib_data, cfg):
    """Validation (the held-out fold of the scribbled training cases) and test cases, each as the
    images and dense labels of the original data."""
    from experts.data.manifest import scan_dataset
    from experts.data.splits import case_split

    original, scrib = scan_dataset(ctx.data), scan_dataset(scrib_data)
    labels = scrib.labels_of(split="train")
    _, val = case_split([(lf.case, lf.expert) for lf in labels], n_folds=cfg.data.n_folds, fold=cfg.data.fold)
    experts = sorted({lf.expert for lf in labels})

    def pick(cases, split):
        lab = {(c, e): original.label(c, e).path for c in cases for e in experts if original.label(c, e) is not None and original.label(c, e).kind == "dense" and original.label(c, e).split == split}
        return {"images": {c: original.cases[c].images for c, _ in lab}, "labels": lab}

    return pick(val, "train"), pick(original.case_ids("test"), "test"), experts


def _score(summary: dict, cases: dict) -> dict:
    from experts.bundle import load_bundle
    from experts.training.surface_scores import dice_and_hd95

    b = load_bundle(summary["model"])
    return dice_and_hd95(b.network.eval(), b.plan, images=cases["images"], labels=cases["labels"], rows={e: i for i, e in enumerate(b.experts)}, sw_batch_size=1)


def _mean(scores: dict, key: str = "dice") -> float | None:
    xs = [v[key] for v in scores.values() if v.get(key) is not None]
    return float(np.mean(xs)) if xs else None


def _train(ctx, arm: str, weights: dict, seed: int, scrib_data, cfg, cases) -> dict:
    name = f"reg-{arm}-" + "-".join(f"{weights[t]:g}" for t in TERMS if t in ARMS[arm]) + f"-s{seed}"
    sets = arm_overrides(arm, weights, steps=cfg.train.steps, levels=len(cfg.network.channels)) + (f"seed={seed}",)
    summary = ctx.pretrain(name.replace("--", "-"), data=scrib_data, overrides=sets)
    return {"val": _score(summary, cases[0]), "test": _score(summary, cases[1]), "train_seconds": summary.get("train_seconds"), "model": summary["model"]}


def _choose_weights(ctx, scrib_data, cfg, cases, search: bool) -> tuple[dict, dict]:
    """Each searched term's weight by validation Dice (seed 0), in :data:`SEARCH` order."""
    weights = {t: w for t, (w, _) in TERMS.items()}
    tried: dict = {}
    if not search:
        return weights, tried
    for term, arm in SEARCH:
        if not TERMS[term][1]:
            continue
        scores = {w: _mean(_train(ctx, arm, {**weights, term: w}, 0, scrib_data, cfg, cases)["val"]) for w in TERMS[term][1]}
        tried[term] = {str(w): s for w, s in scores.items()}
        weights[term] = max(scores, key=lambda w: -1.0 if scores[w] is None else scores[w])
    return weights, tried


_STEP_PROBE = """
import json, statistics, sys, time, torch
from experts.losses import TermContext, build_loss
from experts.networks import create_network
from experts.records import Batch
def rss_mb(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024
c = json.loads(sys.argv[1])
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
net = create_network("cin_unet", in_channels=1, num_classes=c["k"], num_experts=2, channels=c["channels"], features=c["features"], attention=c["attention"] or None).to(dev)
loss = build_loss(c["terms"], TermContext(ignore_label=c["k"], num_classes=c["k"], spacing=(2.0, 2.0, 2.0)), network_features=net.returned_features).to(dev)
opt = torch.optim.AdamW(net.parameters())
g = torch.Generator().manual_seed(0)
label = torch.randint(0, c["k"], (c["batch"], 1, *c["patch"]), generator=g); label[:, :, 1::2] = c["k"]; label[:, :, :, 1::2] = c["k"]
batch = Batch(image=torch.randn(c["batch"], 1, *c["patch"], generator=g), label=label, expert=torch.arange(c["batch"]) % 2, spacing=torch.full((c["batch"], 3), 2.0)).to(dev)
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
before = rss_mb("VmRSS")
times = []
for i in range(5):
    t0 = time.perf_counter(); opt.zero_grad(); loss(net(batch.image, batch.expert), batch, step=10**6)["loss"].backward(); opt.step()
    torch.cuda.synchronize() if dev.type == "cuda" else None; times.append(time.perf_counter() - t0)
peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else rss_mb("VmHWM") - before
print(json.dumps({"seconds": statistics.median(times[2:]), "peak_mb": peak}))
"""


def step_cost(arm: str, weights: dict, cfg) -> dict:
    """Seconds (median of 3 after 2 warm-up) and peak MB of one training step of ``arm``, in a
    fresh process: the demo's 3 classes, the config's widths, patch and batch, half the voxels unannotated."""
    import torch

    levels = len(cfg.network.channels)
    sets = dict(s.split("=", 1) for s in arm_overrides(arm, weights, steps=cfg.train.steps, levels=levels))
    probe = {"k": 3, "channels": list(cfg.network.channels), "patch": list(cfg.data.patch_size or [32, 32, 32]), "batch": cfg.train.batch_size,
             "terms": [{**t, "start_step": 0, "ramp_steps": 0} for t in json.loads(sets["loss.terms"])],
             "attention": json.loads(sets["network.attention"]) if "network.attention" in sets else None,
             "features": ["decoder.0", "attention"] if "network.attention" in sets else ["decoder.0"]}
    env = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    import os

    out = subprocess.run([sys.executable, "-c", _STEP_PROBE, json.dumps(probe)], capture_output=True, text=True, check=True, env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(ctx) -> dict:
    from experts.data.manifest import scan_dataset
    from pipelines.bench.scribbles import derived_dataset
    from pipelines.runtime.config import load_config

    manifest = scan_dataset(ctx.data)
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    experts = [e for e in pre if len(manifest.labels_of(expert=e, split="train", kind="dense")) >= 2]
    from pipelines.bench.runner import suite_options

    s = suite_options(ctx, "regularisers", {"seeds": ctx.settings["seeds"], "other_seeds": ctx.settings["seeds"], "search": int(ctx.settings.get("regulariser_search", ctx.mode == "full")), "arms": ",".join(ARMS)})
    arms = _arms(s["arms"])
    cfg = load_config(ctx.config, ctx.overrides)
    scrib_data = derived_dataset(manifest, experts, ctx.out / "data-scribbles", scribbles=True, scribble_cfg=cfg.scribbles)
    dense = ctx.pretrain("dense-only", data=derived_dataset(manifest, experts, ctx.out / "data-dense", scribbles=False, scribble_cfg=cfg.scribbles))
    cases = _cases(ctx, scrib_data, cfg)
    dense_test = _score(dense, cases[1])
    weights, tried = _choose_weights(ctx, scrib_data, cfg, cases, search=bool(s["search"]))
    out = {"experts": cases[2], "steps": cfg.train.steps, "seeds": s["seeds"], "other_seeds": s["other_seeds"], "weights": weights, "search": tried, "dense": dense_test, "arms": {}}
    for arm in arms:
        runs = [_train(ctx, arm, weights, seed, scrib_data, cfg, cases) for seed in range(s["seeds"] if arm in MAIN_ARMS else s["other_seeds"])]
        ratio = {e: float(np.mean([r["test"][e]["dice"] for r in runs if e in r["test"]])) / dense_test[e]["dice"] for e in dense_test if dense_test[e]["dice"]}
        out["arms"][arm] = {"runs": runs, "ratio": ratio, "step": step_cost(arm, weights, cfg)}
    out["stage2"] = _stage2(ctx, manifest, out)
    out["summary"] = summarise(out)
    return out


def _stage2(ctx, manifest, out: dict) -> dict:
    """Each arm's seed-0 pretraining adapted to the first new doctor from 5 of their cases, as
    scribbles simulated from their dense labels, with the arm's own terms (adaptation trains with
    its pretraining's loss) and the ``rows`` rung, so that only the loss differs between arms."""
    from experts.adaptation import choose_cases

    if not manifest.new_experts:
        return {}
    new = manifest.new_experts[0]
    dense = [lf.case for lf in manifest.labels_of(expert=new, split="train", kind="dense")]
    five = choose_cases(dense, cases=None, shots=min(5, len(dense)), seed=0)
    res = {"expert": new, "cases": five, "arms": {}}
    for arm, a in out["arms"].items():
        s = ctx.adapt(f"reg-adapt-{arm}", model=a["runs"][0]["model"], expert=new, cases=five, scribbles=True, overrides=("adapt.trainable.name=rows", "seed=0"))
        res["arms"][arm] = {k: s.get(k) for k in ("test_dice", "test_dice_before", "steps", "seconds")}
    return res


def _arms(text: str) -> list[str]:
    """The ``arms`` option: a comma-separated subset of :data:`ARMS`, ``partial`` always included."""
    from experts.errors import ConfigError

    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"--option regularisers.arms: unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    return [a for a in ARMS if a in arms or a == "partial"]


def summarise(out: dict) -> dict:
    """Per arm: mean test Dice and HD95 over experts and seeds, the mean ratio to dense, HD95 and
    step time relative to partial losses alone."""
    rows = {}
    for arm, a in out["arms"].items():
        dice = [_mean(r["test"]) for r in a["runs"]]
        hd = [_mean(r["test"], "hd95") for r in a["runs"]]
        rows[arm] = {"dice": float(np.mean([d for d in dice if d is not None])) if any(d is not None for d in dice) else None,
                     "dice_sd": float(np.std([d for d in dice if d is not None])) if len(dice) > 1 else None,
                     "hd95": float(np.mean([h for h in hd if h is not None])) if any(h is not None for h in hd) else None,
                     "ratio": float(np.mean(list(a["ratio"].values()))) if a["ratio"] else None,
                     "step_seconds": a["step"]["seconds"], "peak_mb": a["step"]["peak_mb"]}
    base = rows.get("partial", {})
    for r in rows.values():
        r["hd95_change"] = (r["hd95"] / base["hd95"] - 1) if r["hd95"] and base.get("hd95") else None
        r["step_ratio"] = r["step_seconds"] / base["step_seconds"] if base.get("step_seconds") else None
    return rows


def plot(result: dict, folder) -> list:
    """Test Dice (with the dense pretraining's line) and HD95 per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["summary"]
    arms = list(rows)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    a1.bar(arms, [rows[a]["dice"] or np.nan for a in arms], yerr=[rows[a]["dice_sd"] or 0 for a in arms], color="#377eb8", capsize=3)
    dense = _mean(result["dense"])
    if dense:
        a1.axhline(dense, color="#4daf4a", ls="--", label="dense pretraining")
        a1.legend(fontsize=8)
    shown = [v for v in [*(rows[a]["dice"] for a in arms), dense] if v]
    if shown:  # bars from 0 would hide differences of a few hundredths
        a1.set_ylim(max(0.0, min(shown) - 0.05), min(1.0, max(shown) + 0.02))
    a1.set_ylabel("test Dice (mean over experts, classes, seeds)")
    a2.bar(arms, [rows[a]["hd95"] or np.nan for a in arms], color="#ff7f00")
    a2.set_ylabel("test HD95 (mm)")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3, axis="y")
    path = folder / "scribble_regularisers.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _seeds(result: dict) -> str:
    main, other = result["seeds"], result.get("other_seeds", result["seeds"])
    return f"{main} seed(s) per arm" if main == other else f"{main} seed(s) for {' and '.join(MAIN_ARMS)}, {other} for the other arms"


def section(result: dict, rel: list[str], command: str) -> list[str]:
    """The BENCHMARKS.md section."""
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = ["## Scribble regularisers", "", f"Command: `{result.get('command', command)}`.", "",
             f"Scribble-only pretraining of {', '.join(result['experts'])} ({result['steps']} steps, {_seeds(result)}); "
             f"{'weights chosen on validation cases' if result.get('search') else 'the default weights, not searched'}: {', '.join(f'{k} {v:g}' for k, v in result['weights'].items())}. Dense pretraining: Dice {f(_mean(result['dense']))}.", "",
             "| arm | test Dice | ratio to dense | HD95 (mm) | HD95 vs partial | s / step | x partial | peak MB |", "|---|---|---|---|---|---|---|---|"]
    for arm, r in result["summary"].items():
        change = "-" if r["hd95_change"] is None else f"{100 * r['hd95_change']:+.0f}%"
        lines.append(f"| {arm} | {f(r['dice'])}{'' if r['dice_sd'] is None else ' ± ' + f(r['dice_sd'])} | {f(r['ratio'])} | {f(r['hd95'], 1)} | {change} | {f(r['step_seconds'])} | {f(r['step_ratio'], 2)} | {f(r['peak_mb'], 0)} |")
    if result.get("search"):
        tried = "; ".join(f"{t} " + ", ".join(f"{w} -> {f(v)}" for w, v in scores.items()) for t, scores in result["search"].items())
        lines += ["", f"Validation Dice (seed 0, the held-out fold of the training cases against their dense labels) per weight tried: {tried}."]
    lines += ["", *[f"![scribble regularisers]({p})" for p in rel if p.endswith("scribble_regularisers.png")]]
    st = result.get("stage2") or {}
    if st.get("arms"):
        base = (st["arms"].get("partial", {}).get("test_dice") or {}).get("mean")
        lines += ["", f"Stage 2: each arm's seed-0 model adapted to `{st['expert']}` from 5 scribbled cases ({', '.join(st['cases'])}; scribbles simulated from their dense labels), "
                  "rows only, with the arm's own terms; test Dice against their dense test labels.", "",
                  "| arm | zero-shot nearest row | adapted | vs partial | best step | seconds |", "|---|---|---|---|---|---|"]
        for arm, r in st["arms"].items():
            after, before = (r.get("test_dice") or {}).get("mean"), (r.get("test_dice_before") or {}).get("mean")
            lines.append(f"| {arm} | {f(before)} | {f(after)} | {'-' if after is None or base is None else f'{after - base:+.3f}'} | {r.get('steps', '-')} | {f(r.get('seconds'), 0)} |")
    return lines + [""]
