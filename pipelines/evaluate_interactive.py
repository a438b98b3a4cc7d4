"""``expertseg evaluate-interactive``: the interactive 3D challenge's protocol per expert, class and case.

For every requested expert, each held-out case that expert labelled densely and each foreground
class present: a fresh session in that expert's style, the box-first and the scribble-first runs
of :func:`experts.interactive.protocol.run_protocol`. Writes ``interactive.json`` (per expert and
variant: Dice and NSD after each step, their AUCs, final values, seconds per interaction, the
automatic model's Dice), ``interactive.csv`` (one row per case, class, variant and step) and
``dice_per_interaction.png`` (Dice against interactions, one line per expert, the non-interactive
model as a flat line).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

__all__ = ["evaluate_interactive"]


def evaluate_interactive(*, model: str, data: str, experts: str = "all", classes: list[str] | None = None, clicks: int = 5, max_cases: int | None = None, tolerance: float = 2.0, out: str = "evaluate_interactive", device: str = "cpu") -> dict:
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
    rows, summary = [], {}
    for expert in wanted:
        labels = [lf for lf in manifest.labels_of(expert=expert, split="test") if lf.kind == "dense"][:max_cases]
        if not labels:
            raise ConfigError(f"{data}: expert {expert} has no dense held-out labels (labelsTs/{expert}/); the protocol needs them")
        summary[expert] = _expert_runs(bundle, manifest, expert, labels, targets, rows, clicks=clicks, tolerance=tolerance, device=device)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": model, "data": str(data), "clicks": clicks, "tolerance_mm": tolerance, "grid": "model", "experts": summary}
    (out_dir / "interactive.json").write_text(json.dumps(report, indent=2))
    _write_csv(out_dir / "interactive.csv", rows)
    _plot(out_dir / "dice_per_interaction.png", summary, clicks=clicks)
    for expert, per in summary.items():
        for key, s in per.items():
            click.echo(f"{expert} {key}: automatic Dice {s['automatic_dice']:.3f}, after the first prompt {s['dice'][0]:.3f}, final {s['final_dice']:.3f}, "
                       f"AUC {s['dice_auc']:.2f}, {s['seconds_median']:.2f} s per interaction (p95 {s['seconds_p95']:.2f})")
    click.echo(f"results: {out_dir / 'interactive.json'}")
    return report


def _expert_runs(bundle, manifest, expert, labels, targets, rows, *, clicks, tolerance, device) -> dict:
    from experts.interactive.grid import label_to_model_grid
    from experts.interactive.protocol import VARIANTS, run_protocol, summarise
    from experts.interactive.session import InteractiveSession

    results: dict[str, list] = {}
    names = bundle.plan.class_names
    for lf in labels:
        images = [str(p) for p in manifest.cases[lf.case].images]
        for target in targets:
            for variant in VARIANTS:
                session = InteractiveSession(bundle, images if len(images) > 1 else images[0], expert, target=target, device=device)
                truth = label_to_model_grid(bundle.plan, lf.path, input_affine=session.input_affine) == names.index(target)
                if not truth.any() or truth.shape != session.prob.shape:
                    continue
                r = run_protocol(session, truth, variant=variant, clicks=clicks, spacing=bundle.plan.spacing, tolerance_mm=tolerance)
                results.setdefault(f"{target}/{variant}", []).append(r)
                rows += [{"expert": expert, "case": lf.case, "class": target, "variant": variant, "automatic_dice": r["automatic"]["dice"], **s} for s in r["steps"]]
    return {key: summarise(rs) for key, rs in results.items()}


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["expert", "case", "class", "variant", "step", "prompt", "dice", "nsd", "seconds", "automatic_dice"]
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
        ax.set(title=f"{key} (dotted: automatic)", xlabel="interactions after the first prompt", ylabel="Dice", ylim=(0, 1), xticks=steps)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
