"""The learn-from-corrections loop with a simulated doctor: does each next case need fewer clicks?

The doctor's dense labels are the truth the simulated clicks aim at; what the loop saves goes under
another expert id (``as_expert``), so the truth is never overwritten. Case by case: a session per
foreground class starts from the doctor's own row once the model has one, else from ``start`` (the
nearest expert); the simulator clicks at the distance-transform maximum of the largest error
component (:func:`experts.interactive.corrections.error_click`) of the class with the lowest Dice,
until the mean Dice over classes reaches ``goal`` or ``max_clicks`` clicks; the corrected mask is
saved as a dense label (:class:`~experts.annotation.store.AnnotationStore`, as the page saves), and
with ``learn`` the doctor's row is learned from every case saved so far, from the starting
model's rows (:func:`~experts.annotation.learning.learn_style`). ``learn=False`` is the control that never adapts.
Dice is on the model grid, as in ``evaluate-interactive``.

Example:
    >>> rows = correction_loop(bundle, "data_copy", truth="drnew", as_expert="drnew-page", cases=five, goal=0.80, start="ref")
    >>> [r["clicks"] for r in rows]
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from experts.interactive.protocol import dice

__all__ = ["correction_loop", "dice"]


def correction_loop(model, data, *, truth: str, as_expert: str, cases: Sequence[str], goal: float, start: str, max_clicks: int = 10, learn: bool = True,
                    learn_steps: int = 60, device: str = "cpu", on_case: Callable[[dict], None] | None = None) -> list[dict]:
    """Run the loop; returns one record per case: ``case``, ``start`` (the row the session used),
    ``clicks``, ``reached`` (goal met), ``dice_before``, ``dice_after``, ``dice_per_click`` (the mean
    Dice before and after each click), ``model_seconds`` (the
    interactions' network time), ``learn_seconds`` (adaptation after the case)."""
    from experts.annotation.labels import compose_label
    from experts.annotation.learning import learn_style
    from experts.annotation.store import AnnotationStore
    from experts.interactive.corrections import error_click
    from experts.interactive.grid import label_to_model_grid, to_input_grid
    from experts.interactive.session import InteractiveSession

    store = AnnotationStore(data, as_expert)
    plan, rows, start_model = model.plan, [], model
    for case in cases:
        files = store.case(case)
        row = as_expert if as_expert in model.experts else start
        sessions = {c: InteractiveSession(model, [str(p) for p in files.images], row, target=c, device=device) for c in range(1, plan.num_classes)}
        first = sessions[1]
        truth_path = store.manifest.label(case, truth).path
        target = label_to_model_grid(plan, truth_path, input_affine=first.input_affine)

        def scores():
            return {c: dice(s.prob > 0.5, target == c) for c, s in sessions.items()}

        before = scores()
        now, clicks = before, 0
        trace = [float(np.mean(list(before.values())))]
        while np.mean(list(now.values())) < goal and clicks < max_clicks:
            prompt = None
            for c in sorted(now, key=lambda k: now[k]):
                prompt = error_click(sessions[c].prob > 0.5, target == c, spacing=plan.spacing)
                if prompt is not None:
                    sessions[c].add(prompt)
                    break
            if prompt is None:
                break
            clicks += 1
            now = scores()
            trace.append(float(np.mean(list(now.values()))))

        def back(a):
            return to_input_grid(a, model_affine=first.model_affine, input_affine=first.input_affine, input_shape=first.input_shape)

        label = compose_label({c: s.prob for c, s in sessions.items()}, to_input=back, mode="dense")
        store.save(case, label, mode="dense", record={"simulated": True, "truth": truth, "start_expert": row, "clicks": clicks})
        record = {"case": case, "start": row, "clicks": clicks, "reached": bool(np.mean(list(now.values())) >= goal), "dice_before": float(np.mean(list(before.values()))),
                  "dice_after": float(np.mean(list(now.values()))), "dice_per_click": trace, "model_seconds": round(float(sum(sum(s.seconds_) for s in sessions.values())), 3), "learn_seconds": 0.0}
        if learn:
            t0 = time.perf_counter()
            model, _ = learn_style(start_model, as_expert, store.labelled_cases(), steps=learn_steps, device=device)  # every saved case, from the start's rows
            record["learn_seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(record)
        if on_case is not None:
            on_case(record)
    return rows
