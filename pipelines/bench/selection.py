"""Case selection: which K of a held-out expert's cases to adapt on, chosen by each strategy.

Held-out experts: the dataset's new doctor (base: the pretraining without it, ``cin``) and the
pretraining experts with the most dense training labels, each left out of a pretraining in turn
(``without-<id>``, shared with the efficiency suite). For each, every registered strategy ranks the
expert's densely labelled training cases from the base model's other experts (the expert's labels
are hidden from it, :func:`experts.selection.suggest_cases`); the first K of the ranking are adapted
on with the bench's adaptation settings (the efficiency suite's), and the adapted row is scored on
the expert's test labels. Random strategies run ``seeds`` draws (a draw's seed also seeds its
training); deterministic ones run ``train_seeds`` trainings on their one choice. Intervals: 95 %
Student t over those runs. Nothing is chosen on the test cases: every strategy is reported.

Sizes: ``--option selection.KEY=VALUE`` (see :data:`OPTIONS`) reduces a run, e.g.
``expertseg bench --suite selection --option selection.seeds=2 --option selection.experts=drnew``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from experts.errors import ConfigError

__all__ = ["run", "OPTIONS", "SIZES", "settings", "interval", "plot", "section", "TARGET_KS", "MARGIN"]

#: option -> (type, help) for ``--option selection.<name>=<value>``
OPTIONS = {
    "seeds": (int, "draws of each random strategy"),
    "train_seeds": (int, "trainings of each deterministic strategy's choice"),
    "ks": (list, "numbers of cases, e.g. 1,2,3,5"),
    "experts": (list, "held-out experts, e.g. drnew,ref (default: the new doctor and the top pretraining experts)"),
    "held_out_pretraining": (int, "how many pretraining experts are held out (when experts is not given)"),
    "strategies": (list, "strategies to compare (default: every registered one)"),
    "adapt_steps": (int, "adaptation steps (default: the bench's adapt.steps)"),
}
#: mode -> default sizes (modes not listed take ``quick``)
SIZES = {
    "full": {"seeds": 5, "train_seeds": 3, "ks": [1, 2, 3, 5], "experts": None, "held_out_pretraining": 2, "strategies": None, "adapt_steps": None},
    "quick": {"seeds": 2, "train_seeds": 1, "ks": [1, 3], "experts": None, "held_out_pretraining": 1, "strategies": None, "adapt_steps": None},
}
#: the target of the issue: beat foreground-random's mean at these K for every held-out expert ...
TARGET_KS = (1, 3)
#: ... by at least this much Dice
MARGIN = 0.01
BASELINE = "foreground-random"


def settings(ctx) -> dict:
    """The mode's sizes with the ``selection.*`` options of ``ctx.options`` applied."""
    out = dict(SIZES.get(ctx.mode, SIZES["quick"]))
    for key, value in (getattr(ctx, "options", None) or {}).items():
        suite, _, name = key.partition(".")
        if suite != "selection":
            continue
        if name not in OPTIONS:
            raise ConfigError(f"--option {key}: unknown; known: {', '.join(f'selection.{k}' for k in OPTIONS)}")
        kind = OPTIONS[name][0]
        try:
            out[name] = [v.strip() for v in str(value).split(",") if v.strip()] if kind is list else int(value)
        except ValueError:
            raise ConfigError(f"--option {key}={value}: must be a whole number") from None
    out["ks"] = [int(k) for k in out["ks"]]
    return out


def _held_out(manifest, s: dict) -> list[str]:
    from pipelines.bench.runner import known_experts

    new = manifest.new_experts[0]
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    if s["experts"]:
        return known_experts("selection.experts", s["experts"], manifest)
    counts = {e: len(manifest.labels_of(expert=e, split="train", kind="dense")) for e in pre}
    return [new] + sorted(pre, key=lambda e: (-counts[e], pre.index(e)))[: s["held_out_pretraining"]]


def run(ctx) -> dict:
    from experts.data.manifest import scan_dataset
    from experts.selection import STRATEGIES

    manifest = scan_dataset(ctx.data)
    s = settings(ctx)
    strategies = s["strategies"] or ["random", BASELINE] + [n for n in STRATEGIES.names() if n not in ("random", BASELINE)]
    unknown = [n for n in strategies if n not in STRATEGIES]
    if unknown:
        raise ConfigError(f"--option selection.strategies: unknown {', '.join(unknown)}; known: {', '.join(STRATEGIES.names())}")
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    out = {"settings": {**s, "strategies": strategies}, "held_out": {}}
    memo: dict = {}
    for h in _held_out(manifest, s):
        base = ctx.pretrain("cin", include=pre) if h not in pre else ctx.pretrain(f"without-{h}", include=[e for e in pre if e != h])
        out["held_out"][h] = _expert(ctx, manifest, h, base, out["settings"], memo)
        out["verdict"] = verdict(out)
        ctx.results["selection"] = out  # each finished expert is kept, should a later one be interrupted
        ctx.save()
    return out


def _expert(ctx, manifest, h: str, base: dict, s: dict, memo: dict) -> dict:
    """One held-out expert: signals once, every strategy's ranking, an adaptation per K and run."""
    from experts.selection import SIGNALS, case_signals, create_strategy, suggest_cases
    from pipelines.runtime.models import load_model

    bundle = load_model(base["model"])
    candidates = [lf.case for lf in manifest.labels_of(expert=h, split="train", kind="dense")]
    ks = [k for k in s["ks"] if k <= len(candidates)]
    asked = [e for e in bundle.experts if e != h]
    signals = case_signals(bundle, {c: manifest.cases[c].images for c in candidates}, experts=asked, needs=SIGNALS)
    entry = {"base": base["out"], "candidates": candidates, "experts_asked": asked, "signals": [x.to_dict() for x in signals], "strategies": {}}
    steps = (f"adapt.steps={s['adapt_steps']}",) if s["adapt_steps"] else ()
    for name in s["strategies"]:
        strategy = create_strategy(name)
        draws = list(range(s["seeds"])) if strategy.seeded else [0]
        runs = {str(k): [] for k in ks}
        for seed in draws:
            ranking = suggest_cases(bundle, manifest, expert=h, k=max(ks), strategy=strategy, candidates=candidates, seed=seed, signals=signals).ranking
            for k in ks:
                cases = [r.case for r in ranking[:k]]
                for t in [seed] if strategy.seeded else range(s["train_seeds"]):
                    runs[str(k)].append({"cases": cases, "seed": seed, "train_seed": t, **_adapt(ctx, memo, h=h, base=base, cases=cases, seed=t, steps=steps)})
        entry["strategies"][name] = {"seeded": strategy.seeded, "runs": runs, "summary": {k: interval([r["test_dice"]["mean"] for r in v if r["test_dice"]]) for k, v in runs.items()}}
    return entry


def _adapt(ctx, memo: dict, *, h: str, base: dict, cases: list[str], seed: int, steps: tuple) -> dict:
    """Adapt on ``cases`` with training seed ``seed`` (once per distinct choice: strategies that
    pick the same cases share the run)."""
    key = (h, base["out"], tuple(cases), seed, steps)
    if key not in memo:
        tag = hashlib.sha1(",".join(cases).encode()).hexdigest()[:8]
        s = ctx.adapt(f"select-{h}-{len(cases)}-{tag}-t{seed}", model=base["model"], expert=h, cases=cases, overrides=(f"seed={seed}",) + steps)
        memo[key] = {"test_dice": s["test_dice"], "nearest": s["test_dice_before"], "init_source": s["init_source"], "steps": s["steps"], "rung": s.get("rung"), "seconds": s["seconds"]}
    return memo[key]


def interval(values: list[float]) -> dict:
    """Mean and 95 % Student t interval (``low``/``high`` ``None`` for fewer than 2 values)."""
    from scipy import stats

    xs = np.asarray([v for v in values if v is not None], dtype=float)
    if xs.size == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    mean = float(xs.mean())
    if xs.size < 2:
        return {"n": 1, "mean": mean, "low": None, "high": None}
    half = float(stats.t.ppf(0.975, xs.size - 1) * xs.std(ddof=1) / np.sqrt(xs.size))
    return {"n": int(xs.size), "mean": mean, "low": mean - half, "high": mean + half}


def verdict(out: dict) -> dict:
    """For each strategy: its mean minus foreground-random's at :data:`TARGET_KS` per held-out
    expert, and whether it beats it by :data:`MARGIN` at all of them (the issue's target)."""
    gaps: dict[str, dict] = {}
    for h, entry in out["held_out"].items():
        base = entry["strategies"].get(BASELINE, {}).get("summary", {})
        for name, st in entry["strategies"].items():
            if name == BASELINE:
                continue
            for k in map(str, TARGET_KS):
                a, b = st["summary"].get(k, {}).get("mean"), base.get(k, {}).get("mean")
                gaps.setdefault(name, {}).setdefault(h, {})[k] = None if a is None or b is None else a - b
    meets = [n for n, per in gaps.items() if per and all(g is not None and g >= MARGIN for ks in per.values() for g in ks.values()) and all(len(ks) == len(TARGET_KS) for ks in per.values())]
    return {"baseline": BASELINE, "ks": list(TARGET_KS), "margin": MARGIN, "gaps": gaps, "meets_target": meets}


def plot(sel: dict, folder):
    """``case_selection.png``: per held-out expert, test Dice against K per strategy (95 % intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = sel["held_out"]
    fig, axes = plt.subplots(1, len(held), figsize=(5.5 * len(held), 4.4), constrained_layout=True, squeeze=False)
    colors = dict(zip(sel["settings"]["strategies"], ["#377eb8", "#ff7f00", "#4daf4a", "#e41a1c", "#984ea3", "#a65628", "#999999"]))
    for ax, (h, entry) in zip(axes.flat, held.items()):
        for i, (name, st) in enumerate(entry["strategies"].items()):
            ks = sorted(st["summary"], key=int)
            xs = np.array([int(k) for k in ks]) + 0.06 * (i - len(entry["strategies"]) / 2)
            m = np.array([np.nan if st["summary"][k]["mean"] is None else st["summary"][k]["mean"] for k in ks])
            lo = np.array([0 if st["summary"][k]["low"] is None else m[j] - st["summary"][k]["low"] for j, k in enumerate(ks)])
            hi = np.array([0 if st["summary"][k]["high"] is None else st["summary"][k]["high"] - m[j] for j, k in enumerate(ks)])
            ax.errorbar(xs, m, yerr=[lo, hi], marker="o", capsize=3, color=colors.get(name), ls="--" if st["seeded"] else "-", label=name)
        ax.set_xticks(sorted({int(k) for st in entry["strategies"].values() for k in st["summary"]}))
        ax.set_xlabel("K (cases the doctor labels)")
        ax.set_ylabel("test Dice of the adapted row (mean over classes)")
        ax.set_title(f"held-out expert: {h}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    path = folder / "case_selection.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(summary: dict | None) -> str:
    if not summary or summary.get("mean") is None:
        return "-"
    if summary.get("low") is None:
        return f"{summary['mean']:.3f}"
    return f"{summary['mean']:.3f} [{summary['low']:.3f}, {summary['high']:.3f}]"


def section(sel: dict, rel: list[str], command: str) -> list[str]:
    """The BENCHMARKS.md section: a table per held-out expert, then the verdict on the target."""
    s = sel["settings"]
    lines = ["## Case selection", "", f"Command: `{sel.get('command', command)}`.", "",
             "Adapting a held-out expert's new row on the first K cases of each strategy's ranking of that expert's training",
             "cases; the strategies see the images and the base model's other experts only. Mean test Dice and 95 % t interval",
             f"over {s['seeds']} draws (random strategies; a draw also seeds training) or {s['train_seeds']} trainings of the one choice (the others).", ""]
    for h, entry in sel["held_out"].items():
        ks = sorted({k for st in entry["strategies"].values() for k in st["summary"]}, key=int)
        lines += [f"### Held-out expert `{h}` ({len(entry['candidates'])} candidate cases; experts asked: {', '.join(entry['experts_asked'])})", "",
                  "| strategy | " + " | ".join(f"K = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for name, st in entry["strategies"].items():
            lines.append(f"| {name} | " + " | ".join(_cell(st["summary"].get(k)) for k in ks) + " |")
        lines.append("")
    v = sel["verdict"]
    lines.append(f"Target: a strategy whose mean beats `{v['baseline']}`'s by at least {v['margin']} Dice at K = {', '.join(map(str, v['ks']))} for every held-out expert.")
    for name, per in v["gaps"].items():
        gaps = "; ".join(f"{h}: " + ", ".join(f"K={k} {g:+.3f}" if g is not None else f"K={k} -" for k, g in ks.items()) for h, ks in per.items())
        lines.append(f"- `{name}` minus `{v['baseline']}`: {gaps}.")
    lines += ["", ("Met by: " + ", ".join(f"`{n}`" for n in v["meets_target"]) + ".") if v["meets_target"] else "No strategy meets the target.", ""]
    return lines + [f"![case selection]({r})" for r in rel if "case_selection" in r] + [""]
