"""The learn-from-corrections loop: clicks per case fall as the doctor's row learns from their saves?

Each new doctor of the dataset (the demo's ``drnew`` and ``drfar``; ``annotation.experts`` picks)
is simulated on the annotation page's library (:func:`experts.annotation.loop.correction_loop`):
their dense labels are the truth the clicks aim at, the saves go under another id in a copy of the
data. Case 1 starts from the nearest expert's prediction (nearest on case 1's truth, as
adaptation's ``nearest`` init chooses); the simulator clicks until the mean Dice reaches 0.95 of
the dedicated model's test Dice for that doctor or ``max_clicks``; saves; the row adapts; cases
2..N follow. The control never adapts. The dedicated model is the better of (a) the multi-expert
pretraining that had the doctor's full labels and (b) the same network trained from scratch on all
their dense training cases with the pretraining's budget (as the adapter-capacity suite defines it);
both are reported. Options: ``annotation.experts`` (comma-separated; default every new doctor),
``annotation.cases`` (5), ``annotation.max_clicks`` (10), ``annotation.learn_steps`` (60),
``annotation.seed`` (0: which cases, in which order), ``annotation.structures`` (``tissue``: the
bench's demo data, grey and white matter; ``nuclei``: the deep grey nuclei demo of the interactive
suite, compact structures where clicks are known to help). A run on one kind of structures keeps
the doctors already measured on the other (in its folder, else in the committed results beside
the report).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["run", "section", "settings", "plot", "verdict"]

OPTIONS = {"experts": "", "cases": 5, "max_clicks": 10, "learn_steps": 60, "seed": 0, "structures": "tissue"}
STRUCTURES = ("tissue", "nuclei")
FRACTION = 0.95  #: of the dedicated model's Dice: the simulated doctor's goal
TARGET_DROP = 0.40  #: clicks' fall from case 1 to case 4 the issue asks for, and the margin over the control on cases 2..N


@dataclass(frozen=True)
class _Setting:
    """What every doctor of one run shares: the data and config, the run names' prefix, the
    interactive model's run name, the multi-expert dedicated model's summary and the options."""

    data: Path
    config: str | None
    tag: str
    interactive: str
    multi: dict
    options: dict


def settings(ctx) -> dict:
    from pipelines.bench.runner import suite_options

    return suite_options(ctx, "annotation", OPTIONS)


def run(ctx) -> dict:
    from experts.data.manifest import scan_dataset
    from experts.errors import ConfigError

    s = settings(ctx)
    if s["structures"] not in STRUCTURES:
        raise ConfigError(f"--option annotation.structures: {s['structures']!r}; one of {', '.join(STRUCTURES)}")
    nuclei = s["structures"] == "nuclei"
    if nuclei:  # the interactive suite's data, config and (shared by name) base and interactive models
        from pipelines.bench.interactive import nuclei_config, nuclei_data

        data, config, names = nuclei_data(ctx), nuclei_config(ctx), ("interactive-base", "interactive-model")
    else:
        data, config, names = ctx.data, None, ("annotation-base", "annotation-interactive")
    manifest = scan_dataset(data)
    new = list(manifest.new_experts)
    doctors = [e.strip() for e in s["experts"].split(",") if e.strip()] or new
    unknown = [e for e in doctors if e not in new]
    if unknown:
        raise ConfigError(f"--option annotation.experts: {', '.join(unknown)} not a new doctor of the dataset ({', '.join(new)})")
    pre = [e for e in manifest.experts if e not in new]
    tag = "annotation-nuclei" if nuclei else "annotation"
    base = ctx.pretrain(names[0], data=data, config=config, include=pre)
    inter = ctx.pretrain(names[1], data=data, config=config, include=pre, interactive=str(ctx.out / "runs" / names[0]), overrides=("interactive.rounds=2",) if ctx.mode != "full" and not nuclei else ())
    multi = ctx.pretrain(f"{tag}-dedicated-all", data=data, config=config, include=pre + new)
    previous = ctx.earlier("annotation")
    earlier = {k: e for k, e in previous.get("experts", {}).items() if e.get("structures", "tissue") != s["structures"]}
    commands = list(dict.fromkeys(c for c in [*previous.get("commands", []), previous.get("command")] if c)) if earlier else []  # the runs the kept doctors came from
    learning = LEARNING if not earlier or previous.get("learning") == LEARNING else "mixed"
    out = {"settings": s, "fraction": FRACTION, "base_seconds": base.get("train_seconds"), "interactive_seconds": inter.get("train_seconds"), "experts": dict(earlier), "commands": commands, "learning": learning}
    setting = _Setting(data=data, config=config, tag=tag, interactive=names[1], multi=multi, options=s)
    for doctor in doctors:
        entry = _doctor(ctx, manifest, setting, doctor)
        out["experts"][f"{doctor} (nuclei)" if nuclei else doctor] = {**entry, "doctor": doctor, "structures": s["structures"]}
        ctx.results["annotation"] = out  # a finished doctor is kept, should a later one be interrupted
        ctx.save()
    return out


def _doctor(ctx, manifest, setting: _Setting, doctor: str) -> dict:
    import numpy as np

    from experts.adaptation import LabelledCase
    from experts.annotation.learning import nearest_expert
    from experts.annotation.loop import correction_loop
    from experts.bundle import load_bundle

    source, s = setting.data, setting.options
    dense = sorted(lf.case for lf in manifest.labels_of(expert=doctor, split="train", kind="dense"))
    scratch = ctx.pretrain(f"{setting.tag}-scratch-all-{doctor}", data=source, config=setting.config, include=[doctor], cases=dense)
    dedicated = {"multi_expert": setting.multi["test_dice"][doctor]["mean"], "scratch_all": scratch["test_dice"][doctor]["mean"]}
    used = max(dedicated, key=dedicated.get)
    goal = FRACTION * dedicated[used]
    cases = [dense[i] for i in np.random.default_rng(s["seed"]).permutation(len(dense))[: s["cases"]]]
    model = load_bundle(ctx.out / "runs" / setting.interactive / "model")
    first = manifest.cases[cases[0]]
    start, scores = nearest_expert(model, [LabelledCase(case=cases[0], images=first.images, label=manifest.label(cases[0], doctor).path)])
    entry = {"cases": cases, "goal": goal, "dedicated": dedicated, "dedicated_used": used, "dedicated_dice": dedicated[used], "start": start, "start_scores": scores, "arms": {}}
    for arm, learn in (("adapting", True), ("control", False)):
        data = ctx.out / "annotation" / arm / "data"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(source, data)
        rows = correction_loop(model, data, truth=doctor, as_expert=f"{doctor}-page", cases=cases, goal=goal, start=start, max_clicks=s["max_clicks"], learn=learn, learn_steps=s["learn_steps"])
        entry["arms"][arm] = {"rows": rows, "drop_1_to_4": _drop(rows)}
        shutil.rmtree(data, ignore_errors=True)
    return entry


def _drop(rows: list[dict]) -> float | None:
    """Clicks' fall from case 1 to case 4, as a fraction of case 1's (None: fewer than 4 cases or no click on case 1)."""
    if len(rows) < 4 or not rows[0]["clicks"]:
        return None
    return (rows[0]["clicks"] - rows[3]["clicks"]) / rows[0]["clicks"]


def _change(rows: list[dict]) -> str:
    gains = [r["dice_after"] - r["dice_before"] for r in rows if r["clicks"]]
    return "no clicks" if not gains else f"mean {sum(gains) / len(gains):+.3f} (from {min(gains):+.3f} to {max(gains):+.3f}, {len(gains)} cases)"


def verdict(adapting: list[dict], control: list[dict]) -> str:
    """Whether adapting made the fall: clicks fall by >= ``TARGET_DROP`` from case 1 to case 4 AND,
    summed over cases 2..N (the cases after the first save), adapting needs >= ``TARGET_DROP``
    fewer clicks than the control. A fall the control shows as well is the cases', not the
    adaptation's."""
    drop = _drop(adapting)
    if drop is None:
        return "not measurable: case 1 needed no click"
    later_a, later_c = sum(r["clicks"] for r in adapting[1:]), sum(r["clicks"] for r in control[1:])
    if drop < TARGET_DROP:
        return f"not met: clicks fell {100 * drop:.0f} %"
    if later_a > (1 - TARGET_DROP) * later_c:
        return f"not met: the fall is not the adaptation's (cases 2..{len(adapting)}: {later_a} clicks adapting, {later_c} control)"
    return f"met (cases 2..{len(adapting)}: {later_a} clicks adapting, {later_c} control)"


def plot(result: dict, folder):
    """``learning_from_corrections.png``: per doctor, clicks per case and the Dice each case starts and ends at, both arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    docs = result["experts"]
    fig, axes = plt.subplots(len(docs), 2, figsize=(10, 3.6 * len(docs)), constrained_layout=True, squeeze=False)
    for (left, right), (doctor, entry) in zip(axes, docs.items()):
        xs = np.arange(1, len(entry["cases"]) + 1)
        for i, (arm, color) in enumerate((("adapting", "#377eb8"), ("control", "#999999"))):
            rows = entry["arms"][arm]["rows"]
            left.bar(xs + (i - 0.5) * 0.38, [r["clicks"] for r in rows], 0.38, color=color, label=arm)
            right.plot(xs, [r["dice_before"] for r in rows], marker="o", color=color, label=f"{arm}: before clicks")
            right.plot(xs, [r["dice_after"] for r in rows], marker="x", ls=":", color=color, label=f"{arm}: after clicks")
        right.axhline(entry["goal"], color="#4daf4a", ls="--", label=f"goal ({result['fraction']:.2f} x dedicated)")
        left.set_ylim(0, result["settings"]["max_clicks"] + 0.5)
        left.set_ylabel("clicks to reach the goal")
        right.set_ylabel("Dice before / after the clicks (mean over classes)")
        for ax in (left, right):
            ax.set_xticks(xs, [f"{i}\n{c}" for i, c in zip(xs, entry["cases"])])
            ax.set_xlabel("case, in the order corrected")
            ax.set_title(f"simulated doctor: {doctor}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    path = folder / "learning_from_corrections.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: how "learn my style" learned when the suite ran (results without it predate the left-out step choice)
LEARNING = "from-start"
_LEARNING_TEXT = {
    LEARNING: "after each save the doctor's row is learned from every saved case, from the starting model, with a budget of {steps} steps "
              "whose count the saved cases choose by leaving one out (step 0, the nearest expert's row, included)",
    "cumulative": "after each save the learned row trained {steps} more steps on every saved case (measured before learning started from "
                  "the starting model and chose its steps on a left-out case)",
    "mixed": "some doctors below were measured with each save training the learned row {steps} more steps, the others learning from the "
             "starting model with the step count chosen on a left-out case",
}


def section(result: dict, rel: list[str], command: str) -> list[str]:
    """The ``## Learning from corrections`` section of BENCHMARKS.md."""
    s = result["settings"]
    fmt = lambda v: "-" if v is None else f"{100 * v:.0f} %"  # noqa: E731
    runs = [c for c in result.get("commands", []) if c != result.get("command", command)] + [result.get("command", command)]
    lines = ["## Learning from corrections", "", "Commands: " + ", then ".join(f"`{c}`" for c in runs) + "." if len(runs) > 1 else f"Command: `{runs[0]}`.", "",
             "A simulated new doctor corrects five of their training cases in turn, with clicks at the largest error, until the mean",
             f"Dice over classes reaches {result['fraction']:.2f} x the dedicated model's test Dice or {s['max_clicks']} clicks; case 1 starts from the nearest expert.",
             "Dedicated: the better of the multi-expert pretraining that had the doctor's full labels and the network trained from scratch",
             f"on all their dense training cases. Adapting: {_LEARNING_TEXT[result.get('learning', 'cumulative')].format(steps=s['learn_steps'])};",
             "control: never adapts. Dice on the model grid against the doctor's own labels. A `+` marks a case that did not reach the goal."]
    if any(e.get("structures") == "nuclei" for e in result["experts"].values()):
        lines.append("The nuclei demo is the interactive suite's (2 mm), its models trained with `configs/demo.yaml` in full mode.")
    lines.append("")
    for doctor, e in result["experts"].items():
        d = e["dedicated"]
        where = {"tissue": "grey and white matter (the bench's demo data)", "nuclei": "the deep grey nuclei demo"}[e.get("structures", "tissue")]
        lines += [f"### `{e.get('doctor', doctor)}` on {where}: goal {e['goal']:.3f} (dedicated {e['dedicated_dice']:.3f}: multi-expert {d['multi_expert']:.3f}, from scratch on all cases {d['scratch_all']:.3f}); starts from `{e['start']}`", "",
                  "| case | adapting: clicks | Dice before | after | model s | learn s | control: clicks | Dice before | after | model s |", "|---|---|---|---|---|---|---|---|---|---|"]
        a, c = e["arms"]["adapting"]["rows"], e["arms"]["control"]["rows"]
        for i, (ra, rc) in enumerate(zip(a, c), 1):
            lines.append(f"| {i} ({ra['case']}) | {ra['clicks']}{'' if ra['reached'] else '+'} | {ra['dice_before']:.3f} | {ra['dice_after']:.3f} | {ra['model_seconds']:.1f} | {ra['learn_seconds']:.0f} | "
                         f"{rc['clicks']}{'' if rc['reached'] else '+'} | {rc['dice_before']:.3f} | {rc['dice_after']:.3f} | {rc['model_seconds']:.1f} |")
        drop_a, drop_c = e["arms"]["adapting"]["drop_1_to_4"], e["arms"]["control"]["drop_1_to_4"]
        lines += ["", f"Clicks from case 1 to case 4: adapting {fmt(drop_a)} fewer, control {fmt(drop_c)} fewer (target: >= {100 * TARGET_DROP:.0f} % fewer with adaptation, "
                  f"and >= {100 * TARGET_DROP:.0f} % fewer than the control over cases 2..N): {verdict(a, c)}.", ""]
        lines += [f"What the clicks did (Dice after minus before, on the cases that had clicks): adapting {_change(a)}, control {_change(c)}.", ""]
    return lines + [f"![learning from corrections]({r})" for r in rel if "learning_from_corrections" in r] + [""]
