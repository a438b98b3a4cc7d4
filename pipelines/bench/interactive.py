"""Interactive refinement on compact structures: Dice per interaction, does the row matter, latency.

The data are the deep grey nuclei demo (``expertseg data demo --structures nuclei``: thalamus,
caudate, lentiform; 2 mm in full mode, the bench's case counts). A base model pretrains on the
pretraining experts (full mode: ``configs/demo.yaml``, the README's setting), the interactive model
trains from it (``pretrain --interactive``), and ``evaluate-interactive`` runs the challenge's
protocol for every expert of the model on their held-out cases: a box (from the automatic mask, and
from an empty one: ``box_alone``) or a scribble, then 5 clicks; the same prompts on the nearest
other expert's row, and that row's own corrections.

Latency: seconds per interaction (median, p95) on the demo's volumes (from the evaluation: every
interaction of the own rows) and on a 1 mm brain-sized volume: the same pseudo-subjects rebuilt at
1 mm (182 x 218 x 182), the model's plan set to 1 mm. Its weights learnt at 2 mm, so at 1 mm only
the time and the crop sizes mean something; the 1 mm Dice is kept in ``results.json`` but not
reported. Beside each time: the FLOPs the interaction ran (the network's FLOPs per voxel, counted
once on a patch, times the voxels of its crops) divided by the machine's measured fp32 matmul peak,
the time it would take at that peak. Options: ``interactive.cases_1mm`` (2; 0 skips the fine
volume), ``interactive.fine_mm`` (1.0: its spacing), ``interactive.max_cases`` (all held-out
cases per expert).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["run", "section", "settings", "plot", "nuclei_data", "nuclei_config", "TARGETS"]

OPTIONS = {"cases_1mm": 2, "max_cases": 0, "fine_mm": 1.0}
#: the issue's targets: seconds per interaction (compact: median, p95; 1 mm: median) and Dice gains
TARGETS = {"median_s": 0.3, "p95_s": 0.6, "median_1mm_s": 1.0, "weakest_gain": 0.05, "box_clicks": 3}
SPACING = {"full": 2.0}  #: the nuclei demo's spacing per mode (others: the mode's own)


def settings(ctx) -> dict:
    from pipelines.bench.runner import suite_options

    return suite_options(ctx, "interactive", OPTIONS)


def run(ctx) -> dict:
    import torch

    from experts.data.manifest import scan_dataset
    from pipelines.bench.speed import matmul_peak_gflops
    from pipelines.runtime.models import load_model
    from pipelines.runtime.stages import stage_runner

    s = settings(ctx)
    data = nuclei_data(ctx)
    manifest = scan_dataset(data)
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    config = nuclei_config(ctx)
    base = ctx.pretrain("interactive-base", data=data, config=config, include=pre)
    inter = ctx.pretrain("interactive-model", data=data, config=config, include=pre, interactive=str(ctx.out / "runs" / "interactive-base"))
    model = str(ctx.out / "runs" / "interactive-model")
    ev_dir = ctx.out / "interactive" / "eval"
    report = stage_runner("evaluate-interactive")(model=model, data=str(data), experts="all", max_cases=s["max_cases"] or None, out=str(ev_dir), progress=False)
    bundle = load_model(model)
    peak = matmul_peak_gflops()
    per_voxel = _flops_per_voxel(bundle)
    rows = _csv(ev_dir / "interactive.csv")
    own = [r for r in rows if r["arm"] == "own" and r["prompt"] != "none"]
    compact = _latency([(float(r["seconds"]), int(r["network_voxels"])) for r in own], per_voxel, peak)
    compact["per_class"] = {c: _latency([(float(r["seconds"]), int(r["network_voxels"])) for r in own if r["class"] == c], per_voxel, peak) for c in sorted({r["class"] for r in own})}
    one_mm = _fine(bundle, data, cases=s["cases_1mm"], spacing=s["fine_mm"], per_voxel=per_voxel, peak=peak) if s["cases_1mm"] else None
    return {"data": str(data), "experts": bundle.experts, "classes": bundle.plan.class_names[1:], "spacing": bundle.plan.spacing, "shape": _shape(data),
            "settings": s, "threads": torch.get_num_threads(), "matmul_peak_gflops": peak, "gflop_per_voxel": per_voxel / 1e9,
            "base_seconds": base.get("train_seconds"), "interactive_seconds": inter.get("train_seconds"), "config": config,
            "evaluation": report["experts"], "clicks": report["clicks"], "latency": {"compact": compact, "1mm": one_mm}}


def nuclei_data(ctx) -> Path:
    """The bench's deep grey nuclei demo (made once in ``<out>/nuclei``, shared by the suites)."""
    from experts.data.demo import make_demo_dataset

    data = ctx.out / "nuclei"
    if not (data / "dataset.json").is_file():
        make_demo_dataset(data, seed=0, n_train=ctx.settings["n_train"], n_test=ctx.settings["n_test"], spacing=SPACING.get(ctx.mode, ctx.settings["spacing"]),
                          structures="nuclei", overwrite=True, progress=False)
    return data


def nuclei_config(ctx) -> str | None:
    """The nuclei's training config: the demo's in full mode (the bench's shorter one leaves these
    small structures near Dice 0.2), else the mode's own."""
    return str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml") if ctx.mode == "full" else None


def _shape(data: Path) -> list[int]:
    import nibabel as nib

    return list(nib.load(next(iter(sorted((data / "imagesTs").glob("*.nii.gz"))))).shape)


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _latency(pairs: list[tuple[float, int]], per_voxel: float, peak: float) -> dict:
    """Median and p95 of seconds per interaction, with the FLOPs each ran at the matmul peak."""
    if not pairs:
        return {}
    seconds = np.array([p[0] for p in pairs])
    at_peak = np.array([p[1] * per_voxel / (peak * 1e9) for p in pairs])
    return {"n": len(pairs), "median_s": float(np.median(seconds)), "p95_s": float(np.percentile(seconds, 95)), "median_gflop": float(np.median(at_peak) * peak),
            "median_at_peak_s": float(np.median(at_peak)), "p95_at_peak_s": float(np.percentile(at_peak, 95)), "median_voxels": float(np.median([p[1] for p in pairs]))}


def _flops_per_voxel(bundle) -> float:
    """Forward FLOPs of the promptable network per input voxel, counted on one patch (convolutions
    scale with the voxels, so a crop's FLOPs are this times its voxels)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net, patch = bundle.network, bundle.plan.patch_size
    x = torch.zeros(1, net.in_channels, *patch)
    p = torch.zeros(1, net.prompt_channels, *patch)
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x, torch.tensor([0]), prompts=p, target=torch.tensor([1]))
    return fc.get_total_flops() / float(np.prod(patch))


def _fine(bundle, data: Path, *, cases: int, spacing: float, per_voxel: float, peak: float) -> dict:
    """The box-first protocol for the first expert's row on ``cases`` held-out subjects rebuilt at
    ``spacing`` mm, the model's plan at that spacing; seconds of each interaction and of the
    automatic answer."""
    import copy
    import tempfile
    import time

    import torch

    from experts.data.demo.anatomy import make_subject
    from experts.data.demo.build import DEMO_EXPERTS, PARAMS_FILE, _label
    from experts.data.nifti import save_volume
    from experts.inference import predict_experts
    from experts.interactive.grid import label_to_model_grid, to_model_grid
    from experts.interactive.protocol import run_protocol
    from experts.interactive.session import InteractiveSession

    fine = copy.copy(bundle)
    fine.plan = copy.deepcopy(bundle.plan)
    fine.plan.spacing = [float(spacing)] * 3
    params = json.loads((data / PARAMS_FILE).read_text())
    expert = bundle.experts[0]
    tests = [c for c, e in sorted(params["cases"].items()) if e["split"] == "test" and e["labels"].get(expert, {}).get("kind") == "dense"][:cases]
    experts = {e.id: e for e in DEMO_EXPERTS}
    pairs, automatic, dice, shapes = [], [], [], []
    for case in tests:
        entry = params["cases"][case]
        subject = make_subject(entry["subject"], spacing=float(spacing), nuclei_contrast=True)
        label = _label(subject, entry["labels"][expert], experts, expert, spacing=float(spacing), structures="nuclei")
        with tempfile.TemporaryDirectory() as tmp:
            path = save_volume(Path(tmp) / "label.nii.gz", label, subject.affine, dtype=np.uint8)
            _, input_affine, image_t, _ = to_model_grid(fine.plan, subject.image, affine=subject.affine)
            truth_all = label_to_model_grid(fine.plan, path, input_affine=input_affine)
        t0 = time.perf_counter()
        with torch.no_grad():
            auto = predict_experts(fine.network, image_t.float(), [0], patch_size=fine.plan.patch_size).numpy()[0]
        automatic.append(time.perf_counter() - t0)
        shapes.append(list(image_t.shape[1:]))
        for c, name in enumerate(fine.plan.class_names[1:], 1):
            truth = truth_all == c
            if not truth.any():
                continue
            session = InteractiveSession(fine, subject.image, expert, target=name, affine=subject.affine, start=auto[c])
            r = run_protocol(session, truth, variant="box", spacing=fine.plan.spacing)
            pairs += [(st["seconds"], st["network_voxels"]) for st in r["steps"] if st["prompt"] != "none"]
            dice.append({"case": case, "class": name, "automatic": r["automatic"]["dice"], "final": r["final_dice"]})
    return {**_latency(pairs, per_voxel, peak), "spacing": float(spacing), "expert": expert, "cases": tests, "shapes": shapes, "automatic_seconds": automatic, "dice_untrained_scale": dice}


def _box_reaches(s: dict, clicks: int) -> int | None:
    """The first step (0: the box) whose mean Dice reaches the automatic model's; None if none."""
    for i, d in enumerate(s["dice"][: clicks + 1]):
        if d >= s["automatic_dice"]:
            return i
    return None


def plot(result: dict, folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev, classes = result["evaluation"], result["classes"]
    steps = list(range(result["clicks"] + 1))
    fig, axes = plt.subplots(1, len(classes), figsize=(4.6 * len(classes), 3.8), squeeze=False, constrained_layout=True)
    for ax, c in zip(axes[0], classes):
        for i, (expert, per) in enumerate(ev.items()):
            s = per.get(f"{c}/box")
            if not s:
                continue
            colour = f"C{i % 10}"
            ax.plot(steps, s["dice"], marker="o", color=colour, label=expert)
            ax.axhline(s["automatic_dice"], color=colour, linestyle=":", linewidth=1)
            if "other_row" in s:
                ax.plot(steps, s["other_row"]["same_prompts"]["dice"], color=colour, linestyle="--", linewidth=1)
        ax.set(title=f"{c}: box, then clicks", xlabel="clicks after the box", ylabel="Dice", ylim=(0, 1), xticks=steps)
        ax.legend(fontsize=7)
    fig.suptitle("solid: own row; dashed: nearest other row, same prompts; dotted: automatic", fontsize=9)
    path = folder / "interactive_dice.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def section(result: dict, rel: list[str], command: str) -> list[str]:
    """The ``## Interactive refinement`` section of BENCHMARKS.md."""
    ev, classes = result["evaluation"], result["classes"]
    lines = ["## Interactive refinement", "", f"Command: `{result.get('command', command)}`.", "",
             f"Data: the deep grey nuclei demo (`expertseg data demo --structures nuclei`), {result['spacing'][0]:g} mm, {' x '.join(map(str, result['shape']))} voxels; "
             f"base and interactive models pretrained on {', '.join(result['experts'])}" + (f" with `{_shown(result['config'])}`" if result.get("config") else "") +
             f" ({_min(result['base_seconds'])} and {_min(result['interactive_seconds'])} of training). "
             "Protocol: the reference's bounding box, then 5 clicks at the distance-transform maximum of the largest error, Dice on the model grid, "
             "mean over the expert's held-out cases. `box alone`: the same from an empty mask (no automatic answer). "
             "`other row`: the nearest other expert's row (best automatic Dice against this expert's label, per case and structure), given the same prompts.", "",
             "| structure | expert | automatic | after box | +1 | +3 | +5 clicks | gain | box alone: box, +3, +5 | other row, same prompts: box, +5 | other row, own clicks: +5 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in classes:
        for expert, per in ev.items():
            s = per.get(f"{c}/box")
            if not s:
                continue
            alone, other = s.get("box_alone"), s.get("other_row")
            lines.append(f"| {c} | {expert} | {s['automatic_dice']:.3f} | {s['dice'][0]:.3f} | {s['dice'][1]:.3f} | {s['dice'][3]:.3f} | {s['dice'][5]:.3f} | {s['dice'][5] - s['automatic_dice']:+.3f} | "
                         + (f"{alone['dice'][0]:.3f}, {alone['dice'][3]:.3f}, {alone['dice'][5]:.3f}" if alone else "-") + " | "
                         + (f"{other['same_prompts']['dice'][0]:.3f}, {other['same_prompts']['dice'][5]:.3f} ({', '.join(other['rows'])})" if other else "-") + " | "
                         + (f"{other['own_clicks']['dice'][5]:.3f}" if other else "-") + " |")
    lines += ["", "Scribble first (a `line` scribble through the reference, then 5 clicks):", "", "| structure | expert | automatic | after the scribble | +5 clicks | other row, same prompts: +5 |", "|---|---|---|---|---|---|"]
    for c in classes:
        for expert, per in ev.items():
            s = per.get(f"{c}/scribble")
            if s:
                other = s.get("other_row")
                lines.append(f"| {c} | {expert} | {s['automatic_dice']:.3f} | {s['dice'][0]:.3f} | {s['dice'][5]:.3f} | " + (f"{other['same_prompts']['dice'][5]:.3f}" if other else "-") + " |")
    lines += [""] + _verdicts(result) + [""] + _latency_lines(result) + [""]
    return lines + [f"![Dice per interaction]({r})" for r in rel if "interactive" in r] + [""]


def _verdicts(result: dict) -> list[str]:
    ev, classes, t = result["evaluation"], result["classes"], TARGETS
    boxes = {(c, e): per[f"{c}/box"] for e, per in ev.items() for c in classes if f"{c}/box" in per}
    below = [f"{c}/{e} ({s['final_dice'] - s['automatic_dice']:+.3f})" for (c, e), s in boxes.items() if s["final_dice"] < s["automatic_dice"]]
    auto = {c: np.mean([s["automatic_dice"] for (cc, _), s in boxes.items() if cc == c]) for c in classes}
    weakest = min(auto, key=auto.get)
    gain = float(np.mean([s["final_dice"] - s["automatic_dice"] for (c, _), s in boxes.items() if c == weakest]))
    reach = {(c, e): _box_reaches(s["box_alone"], t["box_clicks"]) for (c, e), s in boxes.items() if "box_alone" in s}
    missed = [f"{c}/{e}" for k, v in reach.items() for c, e in [k] if v is None]
    other = [s["final_dice"] - s["other_row"]["same_prompts"]["final_dice"] for s in boxes.values() if "other_row" in s]
    ok = lambda b: "met" if b else "not met"  # noqa: E731
    return ["Targets (box first):",
            f"- Never below the automatic model after 5 clicks (mean per structure and expert): {ok(not below)}" + (f"; below: {', '.join(below)}." if below else "."),
            f"- Weakest structure ({weakest}, automatic {auto[weakest]:.3f} averaged over experts): {gain:+.3f} Dice after 5 clicks (target >= +{t['weakest_gain']:.2f}): {ok(gain >= t['weakest_gain'])}.",
            f"- From a box alone, the automatic model's Dice within {t['box_clicks']} clicks: {ok(reach and not missed)} for {len(reach) - len(missed)} of {len(reach)} structure/expert pairs" + (f"; not reached: {', '.join(missed)}." if missed else "."),
            f"- Does the row matter? Own row minus the nearest other row with the same prompts, after 5 clicks: mean {np.mean(other):+.3f} (range {min(other):+.3f} to {max(other):+.3f}) over {len(other)} structure/expert pairs." if other else "- Other rows: not run."]


def _latency_lines(result: dict) -> list[str]:
    lat, t = result["latency"], TARGETS
    c, m = lat["compact"], lat["1mm"]
    lines = [f"Seconds per interaction, {result['threads']} threads, fp32 matmul peak {result['matmul_peak_gflops']:.0f} GFLOP/s measured in the same run; "
             f"the promptable network's forward pass costs {result['gflop_per_voxel'] * 1e6:.1f} kFLOP per voxel of its crop.", "",
             "| volume | interactions | median s | p95 s | median voxels run | median GFLOP | median at the matmul peak | target | verdict |", "|---|---|---|---|---|---|---|---|---|",
             f"| demo nuclei, {' x '.join(map(str, result['shape']))} at {result['spacing'][0]:g} mm | {c['n']} | {c['median_s']:.3f} | {c['p95_s']:.3f} | {c['median_voxels']:.0f} | {c['median_gflop']:.1f} | {c['median_at_peak_s']:.3f} s | "
             f"median <= {t['median_s']} s, p95 <= {t['p95_s']} s | {'met' if c['median_s'] <= t['median_s'] and c['p95_s'] <= t['p95_s'] else 'not met'} |"]
    for name, s in c.get("per_class", {}).items():
        lines.append(f"| of which {name} | {s['n']} | {s['median_s']:.3f} | {s['p95_s']:.3f} | {s['median_voxels']:.0f} | {s['median_gflop']:.1f} | {s['median_at_peak_s']:.3f} s | | |")
    if m:
        lines.append(f"| {m['spacing']:g} mm, {' x '.join(map(str, m['shapes'][0]))} ({len(m['cases'])} subjects, row {m['expert']}) | {m['n']} | {m['median_s']:.3f} | {m['p95_s']:.3f} | {m['median_voxels']:.0f} | {m['median_gflop']:.1f} | {m['median_at_peak_s']:.3f} s | "
                     f"median <= {t['median_1mm_s']} s | {'met' if m['median_s'] <= t['median_1mm_s'] else 'not met'} |")
        lines += ["", f"At {m['spacing']:g} mm the automatic answer of the whole volume (once, when a scan opens) took {np.mean(m['automatic_seconds']):.0f} s per subject; "
                  f"the model learnt at {result['spacing'][0]:g} mm, so this run measures time, not Dice."]
    return lines


def _min(seconds) -> str:
    return "-" if seconds is None else f"{seconds / 60:.0f} min"


def _shown(path: str) -> str:
    from pipelines.bench.report import _shown as shown

    return shown(path)
