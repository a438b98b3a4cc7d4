"""Adapter capacity: does ``auto`` learn a doctor who draws differently, and never do worse than not adapting?

Held out in turn: the dataset's new doctors (the demo's ``drnew``, a boundary style, and ``drfar``,
another definition of the structures) and one pretraining expert (left out of its own pretraining).
For each: ``auto`` from K = 1, 3, 5 and all of their dense cases; at K = 3 dense every rung of the
ladder (``rows``, ``rows+head``, ``rows+lowrank``, ``decoder``, ``all``: fine-tuning everything); from
5 scribbled cases ``auto`` and every rung (the doctor's own partial labels where the dataset has
them, else scribbles simulated in the ``contour`` style, which no setting was tuned on); and ``auto``
from 5 cases scribbled in each of the prompt styles (``styles``: simulated from the doctor's dense
labels with each style's own defaults, ``contour`` last). Beside them: the nearest and the mean
existing row (zero-shot), the pooled model (one row trained on every other expert's labels pooled),
the dedicated model (a) the pretraining that had the doctor's full labels and (b) the network
trained from scratch on all their dense training cases, and from scratch on the same 3 cases at
about an adaptation's compute and at the pretraining's budget. Seeds draw the cases and seed
training.

Options (``--option capacity.KEY=VALUE``): ``seeds`` (default: the mode's), ``config`` (``demo``, the
default in full mode: ``configs/demo.yaml``; ``bench``: the bench's shorter settings, about a third
of the time), ``experts`` (comma-separated held-out experts instead of the new doctors and one
pretraining expert), ``styles`` (comma-separated scribble styles for the ``auto`` rows from 5
scribbled cases; empty: none), ``structures`` (``tissue``: the bench's demo data, grey and white
matter; ``nuclei``: the deep grey nuclei demo of the interactive suite, where ``drfar`` labels the
lentiform nucleus as the putamen alone, trained with that suite's config). A run on one kind of
structures keeps the experts already measured on the other (in its folder, else in the committed
results beside the report).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run", "RUNGS", "SHORT_STEPS"]

RUNGS = ("rows", "rows+head", "rows+lowrank", "decoder", "all")
#: the prompt styles ``auto`` adapts from (5 simulated-scribble cases each), the held-out one last
STYLES = "line,centreline,slices,contour"
STRUCTURES = ("tissue", "nuclei")
SHORT_STEPS = 300  #: from scratch with about an adaptation's compute (demo config)
#: the scribble style used where the doctor has no scribbles of their own; kept out of all tuning
HELD_OUT_STYLE = "contour"


def settings(ctx) -> dict:
    """The mode's sizes with the ``capacity.*`` options applied."""
    from pipelines.bench.runner import suite_options

    return suite_options(ctx, "capacity", {"seeds": ctx.settings["seeds"], "config": "demo" if ctx.mode == "full" else "bench", "experts": "", "styles": STYLES, "structures": "tissue"})


def _config(ctx, s: dict) -> str | None:
    from experts.errors import ConfigError

    if s["config"] not in ("demo", "bench"):
        raise ConfigError(f"--option capacity.config={s['config']}: demo or bench")
    return str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml") if s["config"] == "demo" else ctx.config


def _keep(summary: dict) -> dict:
    return {k: summary.get(k) for k in ("cases", "test_dice", "test_dice_before", "init_source", "rung", "steps", "seconds", "adapter_bytes", "cv")}


def _where(ctx, s: dict) -> tuple[Path, str | None, str]:
    """The data, the training config and the run names' prefix of the ``structures`` option."""
    from experts.errors import ConfigError

    if s["structures"] not in STRUCTURES:
        raise ConfigError(f"--option capacity.structures={s['structures']}: one of {', '.join(STRUCTURES)}")
    if s["structures"] == "nuclei":
        from pipelines.bench.interactive import nuclei_config, nuclei_data

        return nuclei_data(ctx), nuclei_config(ctx), "capacity-nuclei"
    return ctx.data, _config(ctx, s), "capacity"


def _adapt_all(ctx, *, h: str, base: dict, data: Path, tag: str, dense: list[str], partial: list[str], config, seeds: int, styles: list[str]) -> dict:
    """Every adaptation of one held-out expert: ``{arm: [summary per seed]}``."""
    from experts.adaptation import choose_cases

    runs: dict[str, list] = {}
    for seed in range(seeds):
        def go(arm, cases, *extra, scribbles=False):
            s = ctx.adapt(f"{tag}-{h}-{arm}-s{seed}", model=base["model"], data=data, expert=h, cases=cases, scribbles=scribbles, config=config, overrides=(f"seed={seed}", *extra))
            runs.setdefault(arm, []).append(_keep(s))

        for k in (1, 3, 5):
            if k <= len(dense):
                go(f"auto-dense-{k}", choose_cases(dense, cases=None, shots=k, seed=seed))
        if len(dense) > 5:
            go("auto-dense-all", sorted(dense))
        three = choose_cases(dense, cases=None, shots=min(3, len(dense)), seed=seed)
        for rung in RUNGS:
            go(f"{rung}-dense-3", three, f"adapt.trainable.name={rung}")
        own = len(partial) >= 5
        five = choose_cases(partial if own else dense, cases=None, shots=min(5, len(partial if own else dense)), seed=seed)
        style = () if own else (f"scribbles.name={HELD_OUT_STYLE}",)
        for rung in ("auto",) + RUNGS:
            go(f"{rung}-scribbles-5", five, f"adapt.trainable.name={rung}", *style, scribbles=not own)
        simulated = choose_cases(dense, cases=None, shots=min(5, len(dense)), seed=seed)
        for name in styles:
            go(f"auto-style-{name}-5", simulated, f"scribbles.name={name}", "scribbles.params={}", scribbles=True)
    return runs


def run(ctx) -> dict:
    from experts.adaptation import choose_cases
    from experts.data.manifest import scan_dataset
    from pipelines.bench.efficiency import _held_out_pretraining_expert, zero_shot_mean_row
    from pipelines.bench.runner import known_experts

    s = settings(ctx)
    data, config, tag = _where(ctx, s)
    manifest = scan_dataset(data)
    new = list(manifest.new_experts)
    pre = [e for e in manifest.experts if e not in new]
    held = [e.strip() for e in s["experts"].split(",") if e.strip()] or new + [_held_out_pretraining_expert(manifest, pre)]
    known_experts("capacity.experts", held, manifest)
    styles = _styles(s["styles"])
    previous = ctx.earlier("capacity")
    earlier = {k: e for k, e in previous.get("experts", {}).items() if e.get("structures", "tissue") != s["structures"]}
    commands = list(dict.fromkeys(c for c in [*previous.get("commands", []), previous.get("command")] if c)) if earlier else []  # the runs the kept experts came from
    base = ctx.pretrain(f"{tag}-base", data=data, include=pre, config=config)
    dedicated = ctx.pretrain(f"{tag}-dedicated", data=data, include=pre + new, config=config)
    shown = None if config is None else "configs/" + Path(config).name
    out = {"config": shown, "seeds": s["seeds"], "styles": styles, "experts": dict(earlier), "commands": commands, "pretrain_seconds": base["train_seconds"]}
    for h in held:
        others = [e for e in pre if e != h]
        own_base = base if h in new else ctx.pretrain(f"{tag}-without-{h}", data=data, include=others, config=config)
        pooled = ctx.pretrain(f"{tag}-pooled" if h in new else f"{tag}-pooled-without-{h}", data=data, include=others, config=config, overrides=("sampling.pool_experts=true",))
        dense = [lf.case for lf in manifest.labels_of(expert=h, split="train", kind="dense")]
        partial = [lf.case for lf in manifest.labels_of(expert=h, split="train", kind="partial")]
        three = choose_cases(dense, cases=None, shots=min(3, len(dense)), seed=0)
        scratch_all = ctx.pretrain(f"{tag}-scratch-all-{h}", data=data, include=[h], cases=dense, config=config)
        short = ctx.pretrain(f"{tag}-scratch3-short-{h}", data=data, include=[h], cases=three, config=config, overrides=(f"train.steps={SHORT_STEPS}",) if ctx.mode == "full" else ())
        long = ctx.pretrain(f"{tag}-scratch3-long-{h}", data=data, include=[h], cases=three, config=config)
        out["experts"][h if s["structures"] == "tissue" else f"{h} ({s['structures']})"] = {
            "expert": h,
            "structures": s["structures"],
            "config": shown,
            "role": "new" if h in new else "pretraining",
            "dedicated_pretraining": (dedicated if h in new else base)["test_dice"].get(h),
            "dedicated_scratch": scratch_all["test_dice"].get(h),
            "scratch3_short": short["test_dice"].get(h),
            "scratch3_long": long["test_dice"].get(h),
            "scratch3_cases": three,
            "mean_row": zero_shot_mean_row(own_base["model"], data, h),
            "pooled": pooled_score(pooled["model"], data, h),
            "n_dense": len(dense),
            "scribbles": "own" if len(partial) >= 5 else HELD_OUT_STYLE,
            "runs": _adapt_all(ctx, h=h, base=own_base, data=data, tag=tag, dense=dense, partial=partial, config=config, seeds=s["seeds"], styles=styles),
        }
        ctx.results["capacity"] = out  # a finished expert is kept, should a later one be interrupted
        ctx.save()
    return out


def _styles(option: str) -> list[str]:
    from experts.errors import ConfigError
    from experts.scribbles import list_scribble_styles

    names = [n.strip() for n in option.split(",") if n.strip()]
    unknown = [n for n in names if n not in list_scribble_styles()]
    if unknown:
        raise ConfigError(f"--option capacity.styles: unknown scribble style(s) {', '.join(unknown)}; known: {', '.join(list_scribble_styles())}")
    return names


def pooled_score(model_dir: str, data, expert: str) -> dict:
    """Test Dice of the pooled model's one row against ``expert``'s labels."""
    from experts.data.manifest import scan_dataset
    from experts.training.validation import score_test_cases
    from pipelines.runtime.models import load_model

    model = load_model(model_dir)
    return score_test_cases(model.network, scan_dataset(data), model.plan, {expert: 0}, device="cpu").get(expert, {})


# --- the report --------------------------------------------------------------------------------
def _mean(runs: list[dict], key: str = "test_dice") -> tuple[float | None, float | None]:
    import numpy as np

    vals = [r[key]["mean"] for r in runs if r.get(key)]
    return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)


def _cell(runs, dedicated: float | None, key: str = "test_dice") -> str:
    m, s = _mean(runs, key)
    if m is None:
        return "-"
    text = f"{m:.3f} ± {s:.3f}" if len(runs) > 1 else f"{m:.3f}"
    return text + (f" ({m / dedicated:.0%})" if dedicated else "")


def section(result: dict, rel: list[str], command: str) -> list[str]:
    """The ``## Adapter capacity`` section of BENCHMARKS.md."""
    ran = [c for c in result.get("commands", []) if c != result.get("command", command)] + [result.get("command", command)]
    configs = list(dict.fromkeys(e.get("config", result.get("config")) for e in result["experts"].values())) or [result.get("config")]
    shown = " and ".join(f"`{c}`" if c else "the bench settings" for c in configs)
    lines = ["## Adapter capacity", "", "Commands: " + ", then ".join(f"`{c}`" for c in ran) + "." if len(ran) > 1 else f"Command: `{ran[0]}`.", "",
             f"{shown[0].upper() + shown[1:]} for every pretraining and adaptation{' (each heading names the data and its config)' if len(configs) > 1 else ''}, "
             f"{result['seeds']} seed(s) (the cases and training).",
             "Each held-out expert is adapted onto a pretraining without it. Dedicated: (a) the pretraining that had the expert's full labels,",
             "(b) the same network from scratch on all their dense training cases. In brackets: of the better dedicated model.", ""]
    for key, e in result["experts"].items():
        h = e.get("expert", key)
        ded = [v["mean"] for v in (e["dedicated_pretraining"], e["dedicated_scratch"]) if v]
        best = max(ded) if ded else None
        near, _ = _mean(e["runs"].get("rows-dense-3", []), "test_dice_before")
        runs = e["runs"]
        with_all = bool(runs.get("auto-dense-all"))
        pooled = f"; pooled model {_fmt(e['pooled'])}" if "pooled" in e else ""
        where = f" on the deep grey nuclei demo (thalamus, caudate, lentiform; `{e.get('config')}`)" if e.get("structures") == "nuclei" else ""
        lines += [f"### `{h}`{where} ({e['role']} expert; scribbles: {e['scribbles']})", "",
                  f"Dedicated (a) {_fmt(e['dedicated_pretraining'])}, (b) {_fmt(e['dedicated_scratch'])}; nearest row (zero-shot, chosen on 3 cases) {_fmt1(near)}; mean row {_fmt(e['mean_row'])}{pooled};",
                  f"from scratch on 3 cases ({', '.join(e['scratch3_cases'])}): {_fmt(e['scratch3_short'])} at about an adaptation's compute, {_fmt(e['scratch3_long'])} at the pretraining's budget.", ""]
        every = f" | dense, K = all ({e.get('n_dense')})" if with_all else ""
        lines += [f"| arm | dense, K = 1 | dense, K = 3 | dense, K = 5{every} | scribbled, K = 5 | seconds (K = 3) | adapter KB (K = 3) | auto chose (K = 3) |", "|---|---|---|---|" + "---|" * with_all + "---|---|---|---|"]
        for arm in ("auto",) + RUNGS:
            three = runs.get(f"{arm}-dense-3", [])
            chose = ", ".join(f"{r['rung']}@{r['steps']}" for r in three) if arm == "auto" else ""
            secs = f"{sum(r['seconds'] for r in three) / len(three):.0f}" if three else "-"
            size = f"{max(r['adapter_bytes'] for r in three) / 1024:.0f}" if three else "-"
            everything = f" | {_cell(runs.get(f'{arm}-dense-all', []), best)}" if with_all else ""
            lines.append(f"| {arm} | {_cell(runs.get(f'{arm}-dense-1', []), best)} | {_cell(three, best)} | {_cell(runs.get(f'{arm}-dense-5', []), best)}{everything} | {_cell(runs.get(f'{arm}-scribbles-5', []), best)} | {secs} | {size} | {chose} |")
        lines.append("")
        styles = [n for n in result.get("styles", []) if runs.get(f"auto-style-{n}-5")]
        if styles:
            lines += ["`auto` from 5 cases scribbled in each prompt style (simulated from the doctor's dense labels, each style's defaults; "
                      f"`{HELD_OUT_STYLE}` was kept out of all tuning):", "",
                      "| style | test Dice (of dedicated) | nearest row on those cases | auto chose |", "|---|---|---|---|"]
            for n in styles:
                r = runs[f"auto-style-{n}-5"]
                chose = ", ".join(f"{x['rung']}@{x['steps']}" for x in r)
                lines.append(f"| {n} | {_cell(r, best)} | {_fmt1(_mean(r, 'test_dice_before')[0])} | {chose} |")
            lines.append("")
    return lines + [f"![adapter capacity]({p})" for p in rel if p.endswith("adapter_capacity.png")] + [""]


def _fmt(d) -> str:
    return "-" if not d else f"{d['mean']:.3f}"


def _fmt1(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def plot(ctx, folder: Path) -> Path | None:
    """Test Dice against K for ``auto`` per held-out expert, with the references as lines."""
    import matplotlib.pyplot as plt

    res = ctx.results.get("capacity")
    if not res:
        return None
    experts = res["experts"]
    fig, axes = plt.subplots(1, len(experts), figsize=(5.5 * len(experts), 4.2), constrained_layout=True, squeeze=False)
    for ax, (h, e) in zip(axes.flat, experts.items()):
        ks = {k: k for k in (1, 3, 5)} | ({"all": e["n_dense"]} if e.get("n_dense") else {})
        for arm, color in (("auto", "#377eb8"), ("rows", "#ff7f00")):
            pts = [(x, _mean(e["runs"][f"{arm}-dense-{k}"])) for k, x in ks.items() if e["runs"].get(f"{arm}-dense-{k}")]
            if pts:
                ax.errorbar([k for k, _ in pts], [m for _, (m, _) in pts], yerr=[s for _, (_, s) in pts], marker="o", capsize=3, color=color, label=f"{arm}, dense")
        scribbled = _mean(e["runs"].get("auto-scribbles-5", []))[0]
        if scribbled is not None:
            ax.scatter([5], [scribbled], marker="*", s=90, color="#e41a1c", zorder=3, label="auto, 5 scribbled")
        lines = ((e["dedicated_pretraining"], "--", "#555555", "dedicated (a): in pretraining"), (e["dedicated_scratch"], "-.", "#555555", "dedicated (b): scratch, all cases"),
                 (_mean(e["runs"].get("rows-dense-3", []), "test_dice_before")[0], ":", "#555555", "nearest row"), (e.get("pooled"), ":", "#ff7f00", "pooled model"),
                 (e.get("scratch3_long"), "--", "#984ea3", "scratch on the 3 cases, pretraining budget"), (e.get("scratch3_short"), ":", "#984ea3", "scratch on the 3 cases, short"))
        for value, style, color, label in lines:
            v = value["mean"] if isinstance(value, dict) else value
            if v is not None:
                ax.axhline(v, ls=style, color=color, lw=1, label=label)
        ax.set_xticks(sorted({1, 3, 5, *ks.values()}))
        ax.set_xlabel("the doctor's cases K")
        ax.set_ylabel("test Dice (mean over classes)")
        ax.set_title(f"held out: {h}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    path = folder / "adapter_capacity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
