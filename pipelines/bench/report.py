"""BENCHMARKS.md and its plots, made from ``results.json``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipelines.bench import annotation, capacity, interactive, selection, speed
from pipelines.bench.efficiency import summarise

__all__ = ["plots", "markdown"]


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ms(values: list[dict], key: str = "mean") -> str:
    m, s = summarise(values, key)
    if m is None:
        return "-"
    return f"{m:.3f} ± {s:.3f}" if len(values) > 1 else f"{m:.3f}"


def plots(ctx) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = ctx.out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    eff = ctx.results.get("efficiency")
    if eff:
        fig, axes = plt.subplots(1, len(eff["held_out"]), figsize=(6.5 * len(eff["held_out"]), 4.6), constrained_layout=True, squeeze=False)
        for ax, (h, entry) in zip(axes.flat, eff["held_out"].items()):
            ks = eff["ks"]
            xs = np.arange(len(ks))
            for kind, color in (("dense", "#377eb8"), ("scribbles", "#ff7f00")):
                stats = [summarise(entry["adapted"].get(f"{kind}/{k}", [])) for k in ks]
                m = np.array([np.nan if s[0] is None else s[0] for s in stats])
                sd = np.array([0 if s[1] is None else s[1] for s in stats])
                ax.errorbar(xs, m, yerr=sd, marker="o", color=color, capsize=3, label=f"adapted row, {kind}")
                near = [summarise(entry["nearest"].get(f"{kind}/{k}", []))[0] for k in ks]
                ax.plot(xs, [np.nan if v is None else v for v in near], ls=":", marker="x", color=color, alpha=0.7, label=f"nearest expert ({kind} cases)")
            if entry.get("oracle"):
                ax.axhline(entry["oracle"]["mean"], color="#4daf4a", ls="--", label="oracle (expert in pretraining)")
            if entry.get("mean_row"):
                ax.axhline(entry["mean_row"]["mean"], color="#999999", ls="-.", label="zero-shot mean row")
            for k, v in entry["scratch"].items():
                if v:
                    ax.scatter([ks.index(k)], [v["mean"]], marker="s", color="#e41a1c", zorder=3, label="from scratch" if k == "3" else None)
            for k, v in entry["finetune_all"].items():
                if v:
                    ax.scatter([ks.index(k)], [v["mean"]], marker="^", color="#984ea3", zorder=3, label="fine-tune everything" if k == "3" else None)
            ax.set_xticks(xs, [f"K={k}" for k in ks])
            ax.set_ylabel("test Dice (mean over classes)")
            ax.set_title(f"held-out expert: {h}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        path = folder / "label_efficiency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    mod = ctx.results.get("modelling")
    if mod:
        experts = mod["experts"]
        fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(experts) + 2), 4.4), constrained_layout=True)
        width = 0.2
        for i, (name, color) in enumerate((("cin", "#377eb8"), ("separate", "#4daf4a"), ("pooled", "#ff7f00"), ("staple", "#984ea3"))):
            vals = [(mod[name].get(e) or {}).get("mean", np.nan) for e in experts]
            ax.bar(np.arange(len(experts)) + (i - 1.5) * width, vals, width, color=color, label={"cin": "CIN (one row per expert)", "separate": "one model per expert", "pooled": "pooled labels", "staple": "STAPLE consensus"}[name])
        ax.set_xticks(range(len(experts)), experts)
        lo = np.nanmin([(mod[n].get(e) or {}).get("mean", np.nan) for n in ("cin", "separate", "pooled", "staple") for e in experts])
        ax.set_ylim(max(0, lo - 0.05), 1)
        ax.set_ylabel("test Dice vs the expert's labels")
        ax.legend(fontsize=8)
        path = folder / "multi_expert_modelling.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made + _suite_plots(ctx, folder)


def _suite_plots(ctx, folder: Path) -> list[Path]:
    """The figures the extra suites draw themselves."""
    made = [p for p in [capacity.plot(ctx, folder)] if p is not None] + _regulariser_plots(ctx, folder)
    made += [selection.plot(ctx.results["selection"], folder)] if ctx.results.get("selection") else []
    made += [annotation.plot(ctx.results["annotation"], folder)] if ctx.results.get("annotation", {}).get("experts") else []
    return made + ([interactive.plot(ctx.results["interactive"], folder)] if ctx.results.get("interactive") else [])


def _regulariser_plots(ctx, folder: Path) -> list[Path]:
    if not ctx.results.get("regularisers", {}).get("summary"):
        return []
    from pipelines.bench.regularisers import plot

    return plot(ctx.results["regularisers"], folder)


def _targets(tg: dict, rel: list[str], command: str) -> list[str]:
    runs = tg["runs"]
    oracle = tg["oracle"] or {}
    classes = [c for c in oracle if c != "mean"] + ["mean"]
    sc = tg["scratch"]

    def ratio(values, c):
        m, _ = summarise([v["test_dice"] for v in values], c)
        return "-" if m is None or not oracle.get(c) else f"{m / oracle[c]:.1%}"

    lines = ["## Stage-2 targets: the new doctor", "", f"Command: `{tg.get('command', '')}`.", "",
             (f"`{tg['config']}` with {', '.join(f'`{o}`' for o in tg['overrides']) or 'no change'}" if tg.get("config") else "The bench's settings") + f" for the pretrainings; expert `{tg['expert']}`,",
             f"adapted from 3 dense and from 5 scribbled training cases ({len(runs['dense-3'])} seed(s): each draws the cases and seeds training).",
             "Nearest expert: the existing row that best matches the doctor's given cases, zero-shot. From scratch: the same",
             f"network trained on the seed-0 cases ({', '.join(sc['cases'])}) only, for {sc['short']['steps'] or 'the configured'} steps (about the adaptation's time) and",
             f"for {sc['long']['steps'] or 'as many'} steps (the pretraining's budget).", "",
             "| class | adapted, 3 dense | adapted, 5 scribbled | nearest expert (3 dense) | zero-shot mean row | scratch, short | scratch, long | oracle |",
             "|---|---|---|---|---|---|---|---|"]
    for c in classes:
        lines.append(
            f"| {c} | {_ms([r['test_dice'] for r in runs['dense-3']], c)} ({ratio(runs['dense-3'], c)}) | {_ms([r['test_dice'] for r in runs['scribbles-5']], c)} ({ratio(runs['scribbles-5'], c)}) | "
            f"{_ms([r['test_dice_before'] for r in runs['dense-3']], c)} | {_f((tg['mean_row'] or {}).get(c))} | {_f((sc['short']['test_dice'] or {}).get(c))} | "
            f"{_f((sc['long']['test_dice'] or {}).get(c))} | {_f(oracle.get(c))} |"
        )
    secs = [r["seconds"] for rs in runs.values() for r in rs]
    size = max(r["adapter_bytes"] for rs in runs.values() for r in rs)
    lines += ["", "Percentages: of the oracle. Per-seed runs: " + "; ".join(f"{k} " + ", ".join(f"{r['test_dice']['mean']:.3f} (init {r['init_source']}, {r['steps']} steps)" for r in rs) for k, rs in runs.items()) + ".",
              f"Adaptation took {min(secs):.0f}-{max(secs):.0f} s on this machine (the pretraining took {tg['pretrain_seconds'] / 60:.0f} min); adapters are at most {size / 1024:.1f} KB.", ""]
    return lines


def _shown(path: str) -> str:
    """A config path as a reader of the repository types it (``configs/bench.yaml``, also for a
    ``configs/`` folder of another checkout), else as given."""
    root = Path(__file__).resolve().parents[2]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return f"configs/{Path(path).name}" if Path(path).parent.name == "configs" else str(path)


#: suite -> its section's heading in BENCHMARKS.md, in the order sections appear
HEADINGS = {
    "capacity": "## Adapter capacity",
    "targets": "## Stage-2 targets",
    "efficiency": "## Label efficiency",
    "modelling": "## Multi-expert modelling",
    "scribbles": "## Scribbles versus dense",
    "speed": "## Speed and memory",
    "prompts": "## Prompt styles",
    "selection": "## Case selection",
    "regularisers": "## Scribble regularisers",
    "annotation": "## Learning from corrections",
    "interactive": "## Interactive refinement",
}
RESULTS_FILE = "results.json"


def markdown(ctx, path: Path, *, figures: list[Path], command: str, suites: tuple[str, ...] | None = None) -> Path:
    """Write the sections of ``suites`` (default: every suite with results) into BENCHMARKS.md.

    Sections of other suites already in the file are kept as they are, and so are their numbers in
    ``benchmarks/results.json`` beside it (committed with the report): one suite can be rerun
    without rerunning, or losing, the others. Figures are copied into ``benchmarks/``.
    """
    path = Path(path)
    fig_dir = path.parent / "benchmarks"
    fig_dir.mkdir(parents=True, exist_ok=True)
    rel = []
    for f in figures:
        shutil.copy2(f, fig_dir / f.name)
        rel.append(f"benchmarks/{f.name}")
    suites = tuple(s for s in (suites if suites is not None else HEADINGS) if ctx.results.get(s))
    committed = _update_committed_results(fig_dir / RESULTS_FILE, ctx, suites)
    here = __import__("pipelines.bench.runner", fromlist=["machine"]).machine()
    sections = _read_sections(path.read_text()) if path.is_file() else {}
    for suite in suites:
        lines = SECTIONS[suite](ctx.results[suite], rel, command)
        lines.insert(3, _machine_line(ctx.results[suite].get("machine") or here, ctx, ctx.results[suite].get("config")))
        sections[HEADINGS[suite]] = lines
    kept = [line.split("`")[1] for body in sections.values() for line in body if line.startswith("Command: `")]
    commands = list(dict.fromkeys(kept + [c["command"] for c in committed["sections"].values() if c.get("command")]))
    lines = [
        "# Benchmarks",
        "",
        "Each section names the command that produced it and the machine it ran on; rerunning one suite with",
        "`--write` replaces that section alone, and `benchmarks/results.json` holds every number of the sections it wrote.",
        "Dice is on the held-out test cases (`labelsTs`) of the demo data (`expertseg data demo --seed 0`), mean over the",
        "foreground classes (gm, wm) unless a class is named; nothing was tuned on these cases.",
        "",
    ]
    for heading in HEADINGS.values():
        if heading in sections:
            lines += sections.pop(heading)
    for heading, body in sections.items():  # sections this writer does not know: kept, before Reproduce
        if heading != "## Reproduce":
            lines += body
    lines += ["## Reproduce", "", "```bash", *(commands or [command]), "```", ""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


def _machine_line(m: dict, ctx, own_config: str | None = None) -> str:
    """Where a suite ran and with which config: ``own_config`` where the suite trained with a config
    of its own (e.g. ``--option capacity.config=demo``), else the bench's (and its overrides)."""
    if own_config:
        config = f"`{_shown(own_config)}`"
    else:
        config = f"`{_shown(ctx.config)}`" if ctx.config else "embedded defaults"
        if ctx.overrides:
            config += " with " + ", ".join(f"`{o}`" for o in ctx.overrides)
    return (f"Machine: {m.get('cpu')}, {m.get('cpu_count')} cores ({m.get('threads')} torch threads), {m.get('memory_gb')} GB, "
            f"{m.get('gpu') or 'no GPU'}; Python {m.get('python')}, torch {m.get('torch')}; {ctx.mode} mode, config {config}.")


def _read_sections(text: str) -> dict[str, list[str]]:
    """``{heading: lines}`` of a Markdown file's ``## `` sections (a heading's key is its first words
    as in :data:`HEADINGS`, so a changed title still matches)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = next((h for h in list(HEADINGS.values()) + ["## Reproduce"] if line.startswith(h)), line)
            sections[current] = []
        if current is not None:
            sections[current].append(line)
    return sections


def setting(ctx) -> dict:
    """The mode, config and overrides a committed section ran in (what a rerun must match to add to it)."""
    return {"mode": ctx.mode, "config": _shown(ctx.config) if ctx.config else None, "overrides": list(ctx.overrides)}


def _update_committed_results(path: Path, ctx, suites: tuple[str, ...]) -> dict:
    """Merge the written suites' numbers into the committed results file and return its content."""
    import datetime
    import json

    from pipelines.bench.runner import machine

    data = json.loads(path.read_text()) if path.is_file() else {"sections": {}}
    for suite in suites:
        data["sections"][suite] = {
            "command": ctx.results[suite].get("command", ""),
            **setting(ctx),
            "machine": ctx.results[suite].get("machine") or machine(),  # where the suite ran, not where the report is written
            "seconds": ctx.seconds.get(suite),
            "written": datetime.date.today().isoformat(),
            "results": ctx.results[suite],
        }
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    return data


def _efficiency(eff: dict, rel: list[str], command: str) -> list[str]:
    lines = ["## Label efficiency", "", f"Command: `{eff.get('command', command)}`.", "", "Adapting a new row from K of an expert's training cases (mean ± std over seeds of the case draw and",
             "training; the nearest expert is chosen on the same K cases). Oracle: the pretraining that had this expert's", "full labels.", ""]
    for h, e in eff["held_out"].items():
        lines += [f"### Held-out expert `{h}` ({e['seeds']} seed{'s' if e['seeds'] > 1 else ''})", "",
                  f"Oracle {_f((e['oracle'] or {}).get('mean'))}, zero-shot mean row {_f((e['mean_row'] or {}).get('mean'))}.", "",
                  "| K | dense: adapted | dense: nearest expert | scribbles: adapted | scribbles: nearest expert | from scratch | fine-tune all |",
                  "|---|---|---|---|---|---|---|"]
        for k in eff["ks"]:
            lines.append(
                f"| {k} | {_ms(e['adapted'].get(f'dense/{k}', []))} | {_ms(e['nearest'].get(f'dense/{k}', []))} | {_ms(e['adapted'].get(f'scribbles/{k}', []))} | "
                f"{_ms(e['nearest'].get(f'scribbles/{k}', []))} | {_f((e['scratch'].get(k) or {}).get('mean'))} | {_f((e['finetune_all'].get(k) or {}).get('mean'))} |"
            )
        if e["oracle"]:
            lines += ["", "Per class, K = 3 dense: " + ", ".join(f"{c}: adapted {_ms(e['adapted'].get('dense/3', []), c)}, nearest {_ms(e['nearest'].get('dense/3', []), c)}, "
                                                                f"mean row {_f((e['mean_row'] or {}).get(c))}, scratch {_f((e['scratch'].get('3') or {}).get(c))}, oracle {_f(e['oracle'].get(c))}" for c in e["oracle"] if c != "mean")]
        lines += ["", f"Adaptation took {np.median(e['seconds']):.0f} s (median, max {max(e['seconds']):.0f} s); adapters are {max(e['adapter_bytes']) / 1024:.1f} KB.", ""]
    return lines + [f"![label efficiency]({r})" for r in rel if "efficiency" in r] + [""]


def _modelling(mod: dict, rel: list[str], command: str) -> list[str]:
    lines = ["## Multi-expert modelling", "", f"Command: `{mod.get('command', command)}`.", "",
             f"Same network and budget ({mod['steps']} steps) for the CIN model, the pooled-labels model and the STAPLE model; one",
             f"model per expert gets {mod['separate_steps']} steps each (the same total budget).", "",
             "| expert | CIN | one model per expert | pooled labels | STAPLE consensus |", "|---|---|---|---|---|"]
    for ex in mod["experts"]:
        lines.append(f"| {ex} | " + " | ".join(_f((mod[n].get(ex) or {}).get("mean")) for n in ("cin", "separate", "pooled", "staple")) + " |")
    return lines + [""] + [f"![multi-expert modelling]({r})" for r in rel if "modelling" in r] + [""]


def _scribbles(sc: dict, rel: list[str], command: str) -> list[str]:
    af = sc.get("annotated_fraction") or {}
    lines = ["## Scribbles versus dense", "", f"Command: `{sc.get('command', command)}`.", "",
             f"The same experts' training cases, pretrained from simulated scribbles ({', '.join(f'{k} {v}' for k, v in sc['scribble_settings'].items() if k != 'axis')};",
             f"{_f(100 * af.get('mean', 0), 2)}% of voxels annotated on average) or from the dense labels.", "",
             "| expert | dense | scribbles | ratio |", "|---|---|---|---|"]
    for ex in sc["experts"]:
        lines.append(f"| {ex} | {_f((sc['dense'].get(ex) or {}).get('mean'))} | {_f((sc['scribbles'].get(ex) or {}).get('mean'))} | {_f(sc['ratio'].get(ex))} |")
    return lines + ["", f"Mean ratio {_f(sc['mean_ratio'])} (published for partial losses in nnU-Net: roughly 0.92-0.96).", ""]


def _prompts(pr: dict, rel: list[str], command: str) -> list[str]:
    from pipelines.bench.efficiency import summarise

    def ms(values):
        m, sd = summarise(values)
        return "-" if m is None else (f"{m:.3f} ± {sd:.3f}" if len(values) > 1 else f"{m:.3f}")

    lines = ["## Prompt styles", "", f"Command: `{pr.get('command', command)}`.", "",
             f"Adapting the new doctor `{pr['expert']}` from {pr['shots']} cases annotated in each style ({pr['seeds']} seed(s): the cases and training),",
             f"budgets matched on `{pr['calibrated_on']}`'s training labels to the default slice-wise scribbles ({100 * pr['target_fraction']:.2f}% of voxels):",
             "each style's knob takes the grid value closest to it; box and the habit keep their own budget. Gain: test Dice above the",
             "zero-shot nearest row, per 1 % of the voxels annotated on the doctor's cases.", "",
             "| annotation | knob | annotated (doctor's cases) | test Dice | nearest row | gain per 1 % annotated |", "|---|---|---|---|---|---|"]
    for k, d in pr["dense"].items():
        lines.append(f"| dense, K = {k} | - | 100% | {ms(d['test_dice'])} | {ms(d['nearest'])} | - |")
    for arm in pr["ranking"]:
        a = pr["arms"][arm]
        knob = f"{a['knob']} = {a['value']}" if a["knob"] else "-"
        lines.append(f"| {arm}, K = {pr['shots']} | {knob} | {100 * float(np.nanmean(a['annotated_fraction'])):.2f}% | {ms(a['test_dice'])} | {ms(a['nearest'])} | {a['gain_per_percent']:+.4f} |")
    best = pr["ranking"][:2]
    pt = pr.get("pretraining") or {}
    lines += ["", f"Rows are ordered by gain per annotated voxel; the best two, {', '.join(f'`{b}`' for b in best)}, were used for scribble-only pretraining", "(every pretraining expert's training labels replaced by that style at the same budget) against dense pretraining:", "",
              "| expert | dense | " + " | ".join(best) + " |", "|---|---|" + "---|" * len(best)]
    for e, d in (pt.get("dense") or {}).items():
        cells = [f"{pt['styles'][b]['test_dice'][e]['mean']:.3f} ({pt['styles'][b]['ratio'].get(e, float('nan')):.2f})" if e in pt["styles"].get(b, {}).get("test_dice", {}) else "-" for b in best]
        lines.append(f"| {e} | {d['mean']:.3f} | " + " | ".join(cells) + " |")
    return lines + ["", "In brackets: the ratio to dense pretraining.", ""]


SECTIONS = {"interactive": interactive.section, "annotation": annotation.section, "capacity": capacity.section, "selection": selection.section, "regularisers": lambda r, rel, command: __import__("pipelines.bench.regularisers", fromlist=["section"]).section(r, rel, command), "prompts": _prompts, "targets": _targets, "efficiency": _efficiency, "modelling": _modelling, "scribbles": _scribbles, "speed": speed.section}
