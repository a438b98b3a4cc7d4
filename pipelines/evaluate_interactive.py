"""``expertseg evaluate-interactive``: the interactive 3D challenge's protocol per expert, class and case.

For every requested expert, each held-out case that expert labelled densely (or, with ``split``
"train" and ``cases``, training cases a model never trained on: a pretraining's validation cases,
to choose settings without the test cases) and each foreground
class present: a fresh session in that expert's style, the box-first and the scribble-first runs
of :func:`experts.interactive.protocol.run_protocol`. Writes ``interactive.json`` (per expert and
variant: Dice and NSD after each step, their AUCs, final values, seconds per interaction, the
automatic model's Dice), ``interactive.csv`` (one row per case, class, variant, arm and step) and
``dice_per_interaction.png`` (Dice against interactions, one line per expert, the non-interactive
model as a flat line).

Does the expert's row matter? Unless ``other_row`` is off, two more arms run per session on the
nearest other expert's row (for each expert, class and case: the other row whose automatic answer
scores best against this expert's label): the own row's prompts given again (``same_prompts``), and
the protocol on that row's own errors (``own_clicks``); both are scored against this expert's label.
The box variant runs once more from an empty mask (``box_alone``), the challenge's setting.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

__all__ = ["evaluate_interactive"]


def evaluate_interactive(*, model: str, data: str, experts: str = "all", classes: list[str] | None = None, clicks: int = 5, max_cases: int | None = None, tolerance: float = 2.0,
                         other_row: bool = True, split: str = "test", cases: list[str] | None = None, out: str = "evaluate_interactive", device: str = "cpu", progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from experts.data.manifest import scan_dataset
    from experts.errors import ConfigError
    from pipelines.runtime.models import load_model

    manifest = scan_dataset(data)
    bundle = load_model(model, device=device)
    if not getattr(bundle.network, "prompt_channels", 0):
        raise ConfigError(f"--model {model}: takes no prompts; pass an interactive model (expertseg pretrain --interactive)")
    wanted = bundle.experts if experts == "all" else [e.strip() for e in experts.split(",") if e.strip()]
    unknown = [e for e in wanted if e not in bundle.experts]
    if unknown:
        raise ConfigError(f"--expert: {', '.join(unknown)} not in the model; it knows {', '.join(bundle.experts)}")
    names = bundle.plan.class_names[1:]
    targets = names if not classes else classes
    bad = [c for c in targets if c not in names]
    if bad:
        raise ConfigError(f"--classes: {', '.join(bad)} not among the model's classes {', '.join(names)}")
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    folder = "labelsTs" if split == "test" else "labelsTr"
    known = {lf.case for lf in manifest.labels_of(split=split)}
    stray = sorted(set(cases or []) - known)
    if stray:
        raise ConfigError(f"--cases: {', '.join(stray)} not among the {split} cases of {data}")
    by_case: dict[str, list] = {}
    for expert in wanted:
        labels = [lf for lf in manifest.labels_of(expert=expert, split=split) if lf.kind == "dense" and (cases is None or lf.case in cases)][:max_cases]
        if not labels:
            raise ConfigError(f"{data}: expert {expert} has no dense {split} labels ({folder}/{expert}/" + (f", cases {', '.join(cases)}" if cases else "") + "); the protocol needs them")
        for lf in labels:
            by_case.setdefault(lf.case, []).append((expert, lf))
    results: dict = {e: {} for e in wanted}
    rows: list[dict] = []
    for case in tqdm(sorted(by_case), desc="evaluate-interactive", unit="case", disable=not progress, leave=False):
        _case_runs(bundle, manifest, case, by_case[case], targets, results, rows, clicks=clicks, tolerance=tolerance, other_row=other_row and len(bundle.experts) > 1, device=device)
    summary = {expert: {key: _summary(arms) for key, arms in per.items()} for expert, per in results.items()}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": model, "data": str(data), "split": split, "cases": sorted(by_case), "clicks": clicks, "tolerance_mm": tolerance, "grid": "model", "experts": summary}
    (out_dir / "interactive.json").write_text(json.dumps(report, indent=2))
    _write_csv(out_dir / "interactive.csv", rows)
    _plot(out_dir / "dice_per_interaction.png", summary, clicks=clicks)
    for expert, per in summary.items():
        for key, s in per.items():
            other = s.get("other_row")
            click.echo(f"{expert} {key}: automatic Dice {s['automatic_dice']:.3f}, after the first prompt {s['dice'][0]:.3f}, final {s['final_dice']:.3f}, "
                       f"AUC {s['dice_auc']:.2f}, {s['seconds_median']:.2f} s per interaction (p95 {s['seconds_p95']:.2f})"
                       + (f"; nearest other row, same prompts: final {other['same_prompts']['final_dice']:.3f}" if other else ""))
    click.echo(f"results: {out_dir / 'interactive.json'}")
    return report


def _case_runs(bundle, manifest, case, pairs, targets, results, rows, *, clicks, tolerance, other_row, device) -> None:
    """Every (expert, class, variant) session of one held-out case. The automatic answer of every
    row is computed once; the nearest other row (per expert and class: the other row whose
    automatic answer scores best against this expert's label on this case) answers the own row's
    prompts again (``same_prompts``) and runs the protocol on its own errors (``own_clicks``). The
    box variant also runs from an empty mask (``box_alone``: the box is all the model is told, as in
    the challenge, where no automatic answer exists)."""
    import numpy as np
    import torch

    from experts.inference import predict_experts
    from experts.interactive.grid import label_to_model_grid, to_model_grid
    from experts.interactive.protocol import VARIANTS, dice, run_protocol
    from experts.interactive.session import InteractiveSession

    paths = [str(p) for p in manifest.cases[case].images]
    image = paths if len(paths) > 1 else paths[0]
    _, input_affine, image_t, _ = to_model_grid(bundle.plan, image)
    with torch.no_grad():
        auto = predict_experts(bundle.network, image_t.float(), list(range(len(bundle.experts))), patch_size=bundle.plan.patch_size, device=device).numpy()
    names = bundle.plan.class_names
    for expert, lf in pairs:
        label = label_to_model_grid(bundle.plan, lf.path, input_affine=input_affine)
        own = bundle.experts.index(expert)
        for target in targets:
            c = names.index(target)
            truth = label == c
            if not truth.any() or truth.shape != auto.shape[2:]:
                continue
            others = [r for r in range(len(bundle.experts)) if r != own] if other_row else []
            near = max(others, key=lambda r: dice(auto[r, c] > 0.5, truth)) if others else None
            for variant in VARIANTS:
                key = f"{target}/{variant}"
                arms = results[expert].setdefault(key, {"own": [], "same_prompts": [], "own_clicks": [], "rows": [], "box_alone": []})
                run = lambda row, start=None, **kw: run_protocol(InteractiveSession(bundle, image, bundle.experts[row], target=target, device=device, start=auto[row, c] if start is None else start),  # noqa: E731
                                                                 truth, variant=variant, clicks=clicks, spacing=bundle.plan.spacing, tolerance_mm=tolerance, **kw)
                r = run(own)
                done = [("own", own, r)]
                if variant == "box":
                    done.append(("box_alone", own, run(own, start=np.zeros_like(auto[own, c]))))
                if near is not None:
                    done += [("same_prompts", near, run(near, replay=r["prompts"])), ("own_clicks", near, run(near))]
                    arms["rows"].append(bundle.experts[near])
                for arm, row, res in done:
                    arms[arm].append(res)
                    rows += [{"expert": expert, "case": case, "class": target, "variant": variant, "arm": arm, "row": bundle.experts[row],
                              "automatic_dice": res["automatic"]["dice"], **step} for step in res["steps"]]


def _summary(arms: dict) -> dict:
    from collections import Counter

    from experts.interactive.protocol import summarise

    out = summarise(arms["own"])
    if arms["box_alone"]:
        out["box_alone"] = summarise(arms["box_alone"])
    if arms["same_prompts"]:
        out["other_row"] = {"rows": dict(Counter(arms["rows"])), "same_prompts": summarise(arms["same_prompts"]), "own_clicks": summarise(arms["own_clicks"])}
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["expert", "case", "class", "variant", "arm", "row", "step", "prompt", "dice", "nsd", "seconds", "network_voxels", "automatic_dice"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _plot(path: Path, summary: dict, *, clicks: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for per in summary.values() for k in per})
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.5 * max(len(keys), 1), 3.6), squeeze=False)
    steps = list(range(clicks + 1))
    for ax, key in zip(axes[0], keys):
        for i, (expert, per) in enumerate(summary.items()):
            if key in per:
                colour = f"C{i % 10}"
                ax.plot(steps, per[key]["dice"], marker="o", color=colour, label=expert)
                ax.axhline(per[key]["automatic_dice"], color=colour, linestyle=":", linewidth=1)
                if "other_row" in per[key]:
                    ax.plot(steps, per[key]["other_row"]["same_prompts"]["dice"], color=colour, linestyle="--", linewidth=1)
        ax.set(title=f"{key} (dotted: automatic; dashed: nearest other row, same prompts)", xlabel="interactions after the first prompt", ylabel="Dice", ylim=(0, 1), xticks=steps)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
