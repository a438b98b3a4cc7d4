""""Learn my style": the doctor's saved cases train their row of an interactive model.

An interactive model (:class:`~experts.networks.promptable.PromptableNetwork`) holds the automatic
network, whose answer a session starts from, and the interactive copy that answers prompts. The
saved cases train the automatic network's row for the doctor with the ordinary adaptation
(:class:`~experts.adaptation.Adapter`, rows only, so the model stays stackable): ``fit`` when the
model has no row for them yet (initialised from the nearest expert's rows on their cases),
``update`` of their existing row otherwise (partial labels welcome). Each call learns from every
saved case at once, from ``model``'s rows: callers pass the model the session started with, not
the last learned one, so a row does not drift further save after save. With two or more saved
cases, a new doctor's cases choose the step count by leaving a case out, step 0 (the nearest
expert's row) included (``adapt.trainable: auto`` restricted to ``rows``): learning never ends
worse than the start on the doctor's own cases. With one case nothing can be held out and the
full budget trains. A new doctor's interactive row
is a copy of that nearest expert's interactive row: the session then starts from the doctor's own
automatic answer and is refined the way their nearest colleague's corrections are. The model passed
in is not changed; a new :class:`~experts.bundle.ModelBundle` comes back.

Example:
    >>> new, info = learn_style(bundle, "drme", store.labelled_cases(), steps=60)
    >>> info   # {"expert": "drme", "how": "fit", "init": "ref", "steps": 40, "budget": 60, "seconds": 41.2, ...}
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from experts.bundle import ModelBundle
from experts.errors import ConfigError
from experts.interactive.building import automatic_bundle, with_automatic

__all__ = ["learn_style", "automatic_bundle", "nearest_expert"]


def learn_style(model: ModelBundle, expert: str, cases: Sequence, *, steps: int = 60, lr: float = 0.01, batch_size: int = 2, seed: int = 0, device: str = "cpu",
                on_progress: Callable[[int, int], None] | None = None) -> tuple[ModelBundle, dict]:
    """Train ``expert``'s row on ``cases`` (:class:`~experts.adaptation.LabelledCase`).

    Args:
        model: an interactive model bundle (not changed).
        expert: the doctor's id; a new row when ``model`` has none for them.
        cases: their saved cases (dense or partial labels).
        steps / lr / batch_size / seed / device: of the adaptation.
        on_progress: ``(step, steps)`` every 10 steps and at the end.

    Returns:
        ``(the updated model, {"expert", "how": "fit" | "update", "init", "steps" (trained; 0: the
        nearest expert's row kept), "budget", "cases", "seconds"[, "left_out_scores": {step: score}]})``.
    """
    from experts.adaptation import Adapter

    if not cases:
        raise ConfigError(f"no saved case of {expert!r} to learn from; save a case first")
    t0 = time.perf_counter()
    auto = automatic_bundle(model)

    def log(step, parts):
        if on_progress is not None:
            on_progress(int(step), int(steps))

    new = expert not in model.experts
    choose = new and len(cases) >= 2  # leave a case out to choose the steps, step 0 included
    trainable = {"name": "auto", "params": {"rungs": ["rows"], "folds": 2}} if choose else "rows"
    adapter = Adapter(auto, expert, init="nearest", trainable=trainable, steps=steps, lr=lr, batch_size=batch_size, eval_every=max(steps // 3 if choose else steps, 1),
                      holdout="none", seed=seed, device=device, on_log=log)
    adapter = adapter.fit(list(cases)) if new else adapter.update(expert, list(cases))
    bundle = with_automatic(model, adapter.bundle(), source=getattr(adapter, "init_source_", None))
    if on_progress is not None:
        on_progress(int(steps), int(steps))
    chosen = int(getattr(adapter, "steps_", steps))
    info = {"expert": expert, "how": "fit" if new else "update", "init": getattr(adapter, "init_source_", expert) if new else expert, "steps": chosen, "budget": int(steps),
            "cases": [c.case for c in cases], "seconds": round(time.perf_counter() - t0, 2)}
    if getattr(adapter, "cv_", None) is not None:
        info["left_out_scores"] = {int(k): float(v) for k, v in adapter.cv_.mean_curves().get("rows", {}).items()}
    return bundle, info


def nearest_expert(model: ModelBundle, cases: Sequence, *, device: str = "cpu") -> tuple[str, dict[str, float]]:
    """The expert whose automatic answer agrees best with ``cases`` (mean Dice over classes, on
    the voxels each label annotates); returns ``(expert, {expert: Dice})``."""
    import numpy as np

    from experts.inference import predict_experts
    from experts.interactive.grid import label_to_model_grid, to_model_grid

    plan, rows = model.plan, list(range(len(model.experts)))
    totals = np.zeros(len(rows))
    for case in cases:
        _, affine, image, _ = to_model_grid(plan, [str(p) for p in case.images])
        label = label_to_model_grid(plan, case.label, input_affine=affine)
        probs = predict_experts(model.network, image, rows, patch_size=plan.patch_size, device=device).numpy()
        annotated = label != plan.ignore_label if plan.ignore_label is not None else np.ones(label.shape, bool)
        for i in rows:
            pred = probs[i].argmax(0)
            dice = [2 * ((pred == c) & (label == c) & annotated).sum() / max(((pred == c) & annotated).sum() + ((label == c) & annotated).sum(), 1) for c in range(1, plan.num_classes)]
            totals[i] += float(np.mean(dice))
    scores = {e: float(totals[i] / len(cases)) for i, e in enumerate(model.experts)}
    return max(scores, key=lambda e: scores[e]), scores
