"""The learn-from-corrections loop: clicks per case fall as the doctor's row learns from their saves?

The demo's new doctor (the first ``role: new`` expert) is simulated on the annotation page's
library (:func:`experts.annotation.loop.correction_loop`): their dense labels are the truth the
clicks aim at, the saves go under another id in a copy of the data. Case 1 starts from the nearest
expert's prediction (nearest on case 1's truth, as adaptation's ``nearest`` init chooses); the
simulator clicks until the mean Dice reaches 0.95 of the dedicated model's test Dice for that
doctor (the pretraining that had their labels) or ``max_clicks``; saves; the row adapts; cases
2..N follow. The control never adapts. Options: ``annotation.cases`` (5), ``annotation.max_clicks``
(10), ``annotation.learn_steps`` (60), ``annotation.seed`` (0: which cases, in which order).
"""

from __future__ import annotations

import shutil

__all__ = ["run", "section", "settings"]

OPTIONS = {"cases": 5, "max_clicks": 10, "learn_steps": 60, "seed": 0}
FRACTION = 0.95  #: of the dedicated model's Dice: the simulated doctor's goal


def settings(ctx) -> dict:
    from pipelines.bench.runner import suite_options

    return suite_options(ctx, "annotation", OPTIONS)


def run(ctx) -> dict:
    import numpy as np

    from experts.adaptation import LabelledCase
    from experts.annotation.learning import nearest_expert
    from experts.annotation.loop import correction_loop
    from experts.bundle import load_bundle
    from experts.data.manifest import scan_dataset

    s = settings(ctx)
    manifest = scan_dataset(ctx.data)
    doctor = manifest.new_experts[0]
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    base = ctx.pretrain("annotation-base", include=pre)
    inter = ctx.pretrain("annotation-interactive", include=pre, interactive=str(ctx.out / "runs" / "annotation-base"), overrides=("interactive.rounds=2",) if ctx.mode != "full" else ())
    dedicated = ctx.pretrain("annotation-dedicated", include=pre + [doctor])
    goal = FRACTION * dedicated["test_dice"][doctor]["mean"]
    dense = sorted(lf.case for lf in manifest.labels_of(expert=doctor, split="train", kind="dense"))
    cases = [dense[i] for i in np.random.default_rng(s["seed"]).permutation(len(dense))[: s["cases"]]]
    model = load_bundle(ctx.out / "runs" / "annotation-interactive" / "model")
    first = manifest.cases[cases[0]]
    start, scores = nearest_expert(model, [LabelledCase(case=cases[0], images=first.images, label=manifest.label(cases[0], doctor).path)])
    out = {"expert": doctor, "cases": cases, "goal": goal, "fraction": FRACTION, "dedicated_dice": dedicated["test_dice"][doctor]["mean"], "start": start,
           "start_scores": scores, "settings": s, "base_seconds": base.get("train_seconds"), "interactive_seconds": inter.get("train_seconds"), "arms": {}}
    for arm, learn in (("adapting", True), ("control", False)):
        data = ctx.out / "annotation" / arm / "data"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(ctx.data, data)
        rows = correction_loop(model, data, truth=doctor, as_expert=f"{doctor}-page", cases=cases, goal=goal, start=start, max_clicks=s["max_clicks"], learn=learn, learn_steps=s["learn_steps"])
        out["arms"][arm] = {"rows": rows, "drop_1_to_4": _drop(rows)}
        shutil.rmtree(data, ignore_errors=True)
        ctx.save()
    return out


def _drop(rows: list[dict]) -> float | None:
    """Clicks' fall from case 1 to case 4, as a fraction of case 1's (None: fewer than 4 cases or no click on case 1)."""
    if len(rows) < 4 or not rows[0]["clicks"]:
        return None
    return (rows[0]["clicks"] - rows[3]["clicks"]) / rows[0]["clicks"]


def section(result: dict, rel: list[str], command: str) -> list[str]:
    """The ``## Learning from corrections`` section of BENCHMARKS.md."""
    lines = ["## Learning from corrections", "", f"Command: `{result.get('command', command)}`.", "",
             f"A simulated `{result['expert']}` corrects cases {', '.join(result['cases'])} in turn with clicks at the largest error until the mean Dice",
             f"reaches {result['fraction']:.2f} x the dedicated model's {result['dedicated_dice']:.3f} = {result['goal']:.3f} or {result['settings']['max_clicks']} clicks; case 1 starts from the nearest expert `{result['start']}`.",
             f"Adapting: after each save the doctor's row learns from every saved case ({result['settings']['learn_steps']} steps); control: never adapts.", "",
             "| case | adapting: clicks | Dice before | model s | learn s | control: clicks | Dice before | model s |", "|---|---|---|---|---|---|---|---|"]
    a, c = result["arms"]["adapting"]["rows"], result["arms"]["control"]["rows"]
    for i, (ra, rc) in enumerate(zip(a, c), 1):
        lines.append(f"| {i} ({ra['case']}) | {ra['clicks']}{'' if ra['reached'] else '+'} | {ra['dice_before']:.3f} | {ra['model_seconds']:.1f} | {ra['learn_seconds']:.0f} | {rc['clicks']}{'' if rc['reached'] else '+'} | {rc['dice_before']:.3f} | {rc['model_seconds']:.1f} |")
    fmt = lambda v: "-" if v is None else f"{100 * v:.0f} %"  # noqa: E731
    return lines + ["", f"Clicks from case 1 to case 4: adapting {fmt(result['arms']['adapting']['drop_1_to_4'])} fewer, control {fmt(result['arms']['control']['drop_1_to_4'])} fewer (target: >= 40 % fewer with adaptation).",
                    "A `+` marks a case that did not reach the goal within the clicks.", ""]
