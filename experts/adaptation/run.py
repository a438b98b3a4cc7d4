"""One adaptation training run: the left-out cases scored every ``eval_every`` steps, the best
state kept (of the weight average, with ``average``), checkpoints written and resumed from.

:class:`~experts.adaptation.fitting.Adapter` builds one per training (each fold of ``auto``, the
final training on all cases, an update of an existing row).
"""

from __future__ import annotations

import contextlib

import torch

from experts.errors import ConfigError
from experts.training.averaging import WeightAverage

__all__ = ["TrainingRun"]


class TrainingRun:
    """The state of one adaptation training run: scoring, best state, checkpoints, resume."""

    def __init__(self, *, net, row, expert, optimizers, setup, loss, score_cache, score_cases, plan, device, steps, on_score, run_id=None, average: float = 0.0):
        self.net, self.row, self.expert, self.optimizers, self.setup, self.loss = net, row, expert, optimizers, setup, loss
        self.score_cache, self.score_cases, self.plan, self.device, self.steps, self.on_score = score_cache, score_cases, plan, device, steps, on_score
        self.history: list[tuple[int, float]] = []
        self.best = {"score": -1.0, "step": steps, "state": None}
        self.trainable = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        self.run_id = run_id
        self.average = WeightAverage(self.trainable, average) if average else None

    def validate(self, step: int):
        from experts.training.validation import Target

        targets = {c: [Target(self.expert, self.row, self.expert)] for c in self.score_cases}
        with self.average.applied() if self.average is not None else contextlib.nullcontext():
            scores = self._scores(targets)
        value = scores.get(self.expert, {}).get("mean", 0.0)
        self.history.append((step, value))
        if value > self.best["score"]:
            self.best.update(score=value, step=step, state=[p.detach().clone() for p in (self.average.average if self.average is not None else self.trainable)])
        if self.on_score is not None:
            self.on_score(step, value)
        return scores

    def _scores(self, targets) -> dict:
        from experts.training.validation import expert_dice

        return expert_dice(self.net, cache=self.score_cache, targets=targets, class_names=self.plan.class_names, patch_size=self.plan.patch_size, device=self.device, partial="accuracy")

    def state(self, step: int) -> dict:
        from experts.training.checkpoint import rng_state

        return {"net": self.net.state_dict(), "loss": self.setup.loss.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers], "step": step, "history": [list(h) for h in self.history], "best": self.best, "rng": rng_state(), "run_uid": self.run_id, "average": self.average.state_dict() if self.average is not None else None}

    def restore(self, checkpoints) -> int:
        from experts.training.checkpoint import set_rng_state

        state, _ = checkpoints.latest_valid()
        if state is None:
            return 0
        if state.get("run_uid") not in (None, self.run_id):
            raise ConfigError(f"{checkpoints.folder}: holds checkpoints of another run; start anew with --overwrite")
        self.net.load_state_dict(state["net"])
        self.setup.loss.load_state_dict(state.get("loss", {}))
        for opt, st in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(st)
        self.history[:] = [tuple(h) for h in state["history"]]
        self.best.update(state["best"])
        if self.average is not None and state.get("average") is not None:
            self.average.load_state_dict(state["average"])
        set_rng_state(state["rng"])
        return int(state["step"])

    def go(self, *, checkpoints, checkpoint_every: int, resume: bool, progress: bool, on_log, eval_every: int, desc: str, score_initial: bool = False) -> None:
        from experts.training.loop import Callbacks, fit

        start = self.restore(checkpoints) if resume and checkpoints is not None else 0
        if score_initial and self.score_cases and start == 0:
            self.validate(0)
        save = (lambda step: checkpoints.save(step, self.state(step))) if checkpoints is not None and checkpoint_every else None
        callbacks = Callbacks(on_step=(lambda step: self.average.update()) if self.average is not None else None, on_log=on_log, on_validate=self.validate if self.score_cases else None, on_checkpoint=save, log_every=10, val_every=eval_every, checkpoint_every=checkpoint_every)
        fit(model=self.net, loss_fn=self.loss, optimizers=self.optimizers, schedules=[], batches=self.setup.loader(start, self.steps), start_step=start, steps=self.steps, device=torch.device(self.device), callbacks=callbacks, progress=progress, desc=desc)
        if self.best["state"] is None and self.average is not None:
            self.average.copy_to_params()
        if self.best["state"] is not None:
            with torch.no_grad():
                for p, v in zip(self.trainable, self.best["state"]):
                    p.copy_(v)
