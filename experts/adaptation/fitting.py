"""Stage 2 as a library: adapt a pretrained model to a new expert, or keep training an existing one.

:class:`Adapter` follows scikit-learn's convention: ``__init__`` stores the settings,
:meth:`Adapter.fit` validates and trains a NEW expert's row (and whatever ``trainable`` names) on
their labelled cases, :meth:`Adapter.update` continues training an EXISTING expert's row from new
(possibly partial) labels; what was learned ends in ``_`` (``network_``, ``row_``, ``history_``,
``best_step_``, ...). ``get_params()`` goes straight into ``mlflow.log_params``.

Capacity and stopping (Hu & Qin's stage 2 trains a fixed set for a fixed budget; here the
doctor's own cases choose both). With ``trainable="auto"`` (the default) and 2 or more cases, each
candidate rung (:mod:`experts.adaptation.trainable`) is trained with one case left out and scored
on it every ``eval_every`` steps and before training (:mod:`experts.adaptation.crossval`); the best
mean (rung, step count) is then trained on all cases, or, when no training beat the initial row,
the initial row is kept. With a fixed rung, 3 or more cases and ``holdout="auto"``, the last case is
held back to choose the step count alone. With explicit ``validation`` cases, the best state seen
on them is kept instead. A held-back dense label is scored by Dice; a partial one by the accuracy
per class on the voxels the doctor marked (foreground and background strokes alike), which an
over-segmentation cannot game.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from experts.adaptation.crossval import cross_validate
from experts.adaptation.rows import create_init
from experts.adaptation.run import TrainingRun
from experts.adaptation.trainable import Auto, PenalisedLoss, create_trainable, select_trainable
from experts.bundle import ModelBundle
from experts.errors import ConfigError
from experts.training.setup import DEFAULT_LOSS_TERMS

__all__ = ["Adapter", "LabelledCase", "choose_cases"]


def choose_cases(available: Sequence[str], *, cases: Sequence[str] | None, shots: int | None, seed: int) -> list[str]:
    """The new doctor's cases to adapt on: the named ones (in order, duplicates dropped), or
    ``shots`` of ``available`` drawn by ``seed`` (sorted).

    Raises:
        ConfigError: both or neither of ``cases`` and ``shots``, or ``shots`` out of range.
        DatasetError: a named case the doctor did not label.
    """
    import numpy as np

    from experts.errors import DatasetError

    if (cases is None) == (shots is None):
        raise ConfigError("pass exactly one of --cases c1,c2,... or --shots K")
    if cases is not None:
        missing = [c for c in cases if c not in available]
        if missing:
            raise DatasetError(f"the new doctor has no training label for case(s) {', '.join(missing)}; labelled: {', '.join(available)}")
        return list(dict.fromkeys(cases))
    if not 1 <= shots <= len(available):
        raise ConfigError(f"--shots must be between 1 and {len(available)} (the doctor's labelled training cases), got {shots}")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(sorted(available), size=shots, replace=False).tolist())


@dataclass(frozen=True)
class LabelledCase:
    """One case of the expert: its channel files, their label file, and the label's kind."""

    case: str
    images: tuple[Path, ...]
    label: Path
    kind: str = "dense"  #: "dense" or "partial"


class Adapter:
    """Train an expert's rows on a pretrained multi-expert model.

    Args:
        base: the pretrained :class:`~experts.bundle.ModelBundle` (never changed).
        expert: the expert's id (new for :meth:`fit`).
        init: initial rows: a registered init strategy (``"mean"``, ``"nearest"``, ``"expert:<id>"``,
            ``{name, params}`` or an instance).
        trainable: what trains besides the rows: a registered trainable set (name, ``{name,
            params}`` or instance), or ``"auto"`` to let the cases choose among rungs.
        steps: optimisation steps (the budget the held-back case chooses within).
        lr: learning rate of the rows; head_lr: of shared parts, when trainable includes them.
        average: decay of a moving average of the trained weights
            (:class:`~experts.training.averaging.WeightAverage`) that is scored and kept instead
            of the last iterate; 0 turns it off.
        batch_size: patches per step.
        eval_every: steps between scorings of held-back or validation cases.
        holdout: ``"auto"`` (hold one case back when there are 3 or more) or ``"none"``.
        seed: seeds the held-back search (``seed``) and the final training (``seed + 1``).
        loss_terms: the pretraining's ``loss.terms``; augment: its ``augment`` section.
        init_scores: precomputed ``{expert: Dice}`` on the cases for ``nearest`` (else computed).
        device: where training runs.
        workdir: folder for checkpoints (``checkpoints/holdout``, ``checkpoints/final``) and the
            held-back search's result (``holdout.json``); None keeps nothing on disk.
        checkpoint_every: steps between checkpoints (0: none).
        resume: continue from the newest valid checkpoints in ``workdir``.
        progress: show progress bars.
        on_log: ``(step, parts)`` every 10 steps; on_score: ``(step, Dice)`` after each scoring
            (a pruning hook may raise).
        run_id: written into checkpoints; resuming from a checkpoint of another run is refused.

    Attributes (after fitting):
        network_: the adapted network (a copy; ``base`` is untouched).
        row_: the expert's row in ``network_``.
        forks_: whether shared weights changed (trainable ``decoder`` / ``all``).
        rung_: the trainable set that trained (``"initial"`` when ``auto`` kept the initial row).
        cv_: the :class:`~experts.adaptation.crossval.CrossValidation` of ``auto`` (else None).
        init_source_ / init_scores_ / rows_init_: where the initial rows came from.
        history_: ``[(step, Dice)]`` of the held-back or validation scoring.
        best_step_: the step count chosen (or the budget, without scoring).
        steps_: the steps the returned network was trained for.
        held_back_: the held-back case, or None.
    """

    def __init__(
        self,
        base: ModelBundle,
        expert: str,
        *,
        init: str = "nearest",
        trainable: str = "auto",
        steps: int = 200,
        lr: float = 0.01,
        head_lr: float = 1e-3,
        average: float = 0.0,
        batch_size: int = 2,
        eval_every: int = 25,
        holdout: str = "auto",
        seed: int = 0,
        loss_terms: Sequence = DEFAULT_LOSS_TERMS,
        augment: dict | None = None,
        init_scores: dict[str, float] | None = None,
        device: torch.device | str = "cpu",
        workdir: str | Path | None = None,
        checkpoint_every: int = 0,
        resume: bool = False,
        progress: bool = False,
        on_log: Callable[[int, dict], None] | None = None,
        on_score: Callable[[int, float], None] | None = None,
        run_id: str | None = None,
    ):
        self.base = base
        self.expert = expert
        self.init = init
        self.trainable = trainable
        self.steps = steps
        self.lr = lr
        self.head_lr = head_lr
        self.average = average
        self.batch_size = batch_size
        self.eval_every = eval_every
        self.holdout = holdout
        self.seed = seed
        self.loss_terms = loss_terms
        self.augment = augment
        self.init_scores = init_scores
        self.device = device
        self.workdir = workdir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.progress = progress
        self.on_log = on_log
        self.on_score = on_score
        self.run_id = run_id

    def get_params(self) -> dict:
        """The settings that decide the result (for ``mlflow.log_params``)."""
        keys = ("steps", "lr", "head_lr", "average", "batch_size", "eval_every", "holdout", "seed")
        return {"init": create_init(self.init).describe(), "trainable": create_trainable(self.trainable).name, **{k: getattr(self, k) for k in keys}}

    # --- stage 2 for a new expert ---------------------------------------------------------------
    def fit(self, cases: Sequence[LabelledCase], *, validation: Sequence[LabelledCase] = ()) -> "Adapter":
        """Add the expert as a new row and train it on ``cases``.

        Raises:
            ConfigError: the expert is already in the model, the model was forked for another
                expert, no case is given, or a setting is invalid.
        """
        self._check(cases)
        if self.expert in self.base.experts:
            raise ConfigError(f"expert {self.expert!r} is already in the model ({', '.join(self.base.experts)}); adaptation adds a new expert (use update() to keep training an existing one)")
        chosen = [c.case for c in cases]
        init = create_init(self.init)
        train_cache, score_cache = self._caches(cases, also_scored=validation)
        caches = (train_cache, score_cache)
        self.init_scores_ = self._init_scores(score_cache, chosen) if init.needs_scores else None
        self.rows_init_, self.init_source_ = init(self.base.network.row_tables(), experts=self.base.experts, scores=self.init_scores_)
        self.history_, self.held_back_, self.cv_ = [], None, None
        trainable = create_trainable(self.trainable)
        if isinstance(trainable, Auto):
            return self._fit_auto(trainable, cases, validation=validation, caches=caches)
        self.rung_ = trainable.name
        if validation:
            result = self._train(self.rows_init_, cases, steps=self.steps, seed=self.seed, caches=caches, score_cases=[c.case for c in validation], phase="final")
            self.network_, self.row_, self.forks_, self.history_, self.best_step_ = result
            self.steps_ = self.best_step_
            return self
        steps = self.steps
        if self.holdout == "auto" and len(cases) >= 3:
            self.held_back_ = chosen[-1]
            self.history_, self.best_step_ = self._search_steps(cases, caches=caches)
            steps = max(self.eval_every, self.best_step_)
        else:
            self.best_step_ = steps
        self.network_, self.row_, self.forks_, _, _ = self._train(self.rows_init_, cases, steps=steps, seed=self.seed + 1, caches=caches, phase="final")
        self.steps_ = steps
        return self

    def _fit_auto(self, auto: Auto, cases, *, validation, caches) -> "Adapter":
        """``trainable="auto"``: the cases (or the validation cases) choose the rung and steps."""
        p = auto.params
        if validation:  # every rung on all cases, scored on the validation cases; the best state wins
            best = None
            for rung in p.rungs:
                result = self._train(self.rows_init_, cases, steps=self.steps, seed=self.seed, caches=caches, score_cases=[c.case for c in validation], phase=f"final-{rung}", trainable=rung, score_initial=True)
                top = max((v for _, v in result[3]), default=-1.0)
                if best is None or top > best[0]:
                    best = (top, rung, result)
            _, self.rung_, (self.network_, self.row_, self.forks_, self.history_, self.best_step_) = best
            self.steps_ = self.best_step_
            return self
        if len(cases) == 1:
            self.rung_, self.best_step_ = p.single, self.steps
        else:
            self.cv_ = cross_validate(lambda rung, held: self._fold(rung, held, cases, caches), cases=[c.case for c in cases], rungs=p.rungs, folds=p.folds, keep=p.keep)
            self.rung_, self.best_step_ = self.cv_.rung or "initial", self.cv_.step
            self.history_ = sorted(self.cv_.mean_curves().get(self.cv_.rung or p.rungs[0], {}).items())
        if self.best_step_ == 0:  # no training beat the initial row on the doctor's cases
            self.network_ = copy.deepcopy(self.base.network).to(self.device)
            self.row_, _ = self.network_.add_expert(self.rows_init_)
            self.forks_, self.steps_ = False, 0
            return self
        self.network_, self.row_, self.forks_, _, _ = self._train(self.rows_init_, cases, steps=self.best_step_, seed=self.seed + 1, caches=caches, phase="final", trainable=self.rung_)
        self.steps_ = self.best_step_
        return self

    def _fold(self, rung: str, held: str, cases, caches) -> list[tuple[int, float]]:
        """One cross-validation run (kept in ``workdir/cv.json`` for resume): the history of
        ``held``'s score while ``rung`` trains on the other cases, step 0 included."""
        from experts.training.checkpoint import atomic_write_bytes

        found = Path(self.workdir) / "cv.json" if self.workdir is not None else None
        done = json.loads(found.read_text()) if found is not None and found.exists() and self.resume else {}
        key = f"{held}|{rung}"
        if key in done:
            return [tuple(h) for h in done[key]]
        fit_cases = [c for c in cases if c.case != held]
        _, _, _, history, _ = self._train(self.rows_init_, fit_cases, steps=self.steps, seed=self.seed, caches=caches, score_cases=[held], phase=f"cv-{held}-{rung}", trainable=rung, score_initial=True)
        if found is not None:
            done = json.loads(found.read_text()) if found.exists() else {}
            atomic_write_bytes(found, json.dumps({**done, key: history}).encode())
        return history

    # --- more labels for an existing expert -----------------------------------------------------
    def update(self, expert: str, labels: Sequence[LabelledCase]) -> "Adapter":
        """Continue training an EXISTING expert's rows from new labels (partial labels welcome).

        Works on the fitted network if there is one, else on the base model; only that expert's
        rows train (every other expert predicts exactly as before). ``steps`` steps, no held-back
        case (corrections come a case at a time).
        """
        self._check(labels)
        source = getattr(self, "network_", None)
        experts = self.base.experts + ([self.expert] if source is not None and self.expert not in self.base.experts else [])
        if expert not in experts:
            raise ConfigError(f"expert {expert!r} is not in the model ({', '.join(experts)}); fit() adds a new expert")
        net = copy.deepcopy(source if source is not None else self.base.network).to(self.device)
        row = experts.index(expert)
        caches = self._caches(labels, expert=expert)
        self.network_, self.row_, self.forks_, self.history_, _ = self._train(None, labels, steps=self.steps, seed=self.seed + 2, caches=caches, phase="update", net=net, row=row, expert=expert)
        self.best_step_ = self.steps_ = self.steps
        return self

    # --- results ---------------------------------------------------------------------------------
    def bundle(self) -> ModelBundle:
        """The adapted model: the base's experts plus this one, lineage recorded."""
        base = self.base
        base_id = base.lineage.get("base_model_id", base.model_id)
        experts = base.experts + ([self.expert] if self.expert not in base.experts else [])
        lineage = {**base.lineage, "base_model_id": base_id, "adapted": list(dict.fromkeys(base.lineage.get("adapted", []) + [self.expert])), **({"forked_for": self.expert} if self.forks_ else {})}
        return ModelBundle(network=self.network_, experts=experts, plan=base.plan, arch=base.arch, config=base.config, lineage=lineage)

    def score_test(self, manifest, *, sw_batch_size: int = 2) -> tuple[dict | None, dict | None]:
        """Test Dice of the adapted row and of the initial (zero-shot) row against the expert's
        ``labelsTs``: one pass unless shared weights were retrained (then the initial row runs on
        the pretrained weights)."""
        from experts.training.validation import score_test_cases

        plan = self.base.plan
        if self.forks_:
            before = copy.deepcopy(self.base.network)
            before_row, _ = before.add_expert(self.rows_init_)
            test = score_test_cases(self.network_, manifest, plan, {self.expert: self.row_}, device=self.device, sw_batch_size=sw_batch_size).get(self.expert)
            zero = score_test_cases(before, manifest, plan, {self.expert: before_row}, device=self.device, sw_batch_size=sw_batch_size).get(self.expert)
            return test, zero
        scoring = copy.deepcopy(self.network_)
        init_row, _ = scoring.add_expert(self.rows_init_)
        scored = score_test_cases(scoring, manifest, plan, {self.expert: self.row_}, device=self.device, sw_batch_size=sw_batch_size, extra={"before": (self.expert, init_row)})
        return scored.get(self.expert), scored.get("before")

    # --- internals -------------------------------------------------------------------------------
    def check(self) -> "Adapter":
        """Check every setting (names, parameters) without training; returns ``self``."""
        create_init(self.init), create_trainable(self.trainable)  # unknown names and bad params: one line each
        if self.holdout not in ("auto", "none"):
            raise ConfigError(f"adapt.holdout must be 'auto' or 'none', got {self.holdout!r}")
        if self.base.lineage.get("forked_for"):
            raise ConfigError(f"this model was forked for {self.base.lineage['forked_for']!r}; adapt from the pretrained model instead")
        return self

    def _check(self, cases) -> None:
        if not cases:
            raise ConfigError(f"no labelled case of {self.expert!r} to train on")
        self.check()

    def _caches(self, cases: Sequence[LabelledCase], *, also_scored: Sequence[LabelledCase] = (), expert: str | None = None):
        """Padded volumes of the training cases, unpadded ones of those and ``also_scored``."""
        from experts.data.datasets import VolumeCache

        who = expert or self.expert

        def cache(which, pad):
            return VolumeCache(self.base.plan, images={c.case: list(c.images) for c in which}, labels={(c.case, who): c.label for c in which}, pad=pad)

        return cache(cases, True), cache(list(cases) + list(also_scored), False)

    def _init_scores(self, score_cache, cases: list[str]) -> dict[str, float]:
        """How well each existing expert's row predicts the new expert's labels on ``cases``."""
        if self.init_scores is not None:
            return dict(self.init_scores)
        from experts.training.validation import Target, expert_dice

        plan = self.base.plan
        targets = {c: [Target(self.expert, r, e) for r, e in enumerate(self.base.experts)] for c in cases}
        per = expert_dice(self.base.network, cache=score_cache, targets=targets, class_names=plan.class_names, patch_size=plan.patch_size, device=self.device)
        return {e: v["mean"] for e, v in per.items()}

    def _search_steps(self, cases, *, caches) -> tuple[list, int]:
        """Train on all but the last case, scoring the last; the best step (kept in ``workdir``)."""
        from experts.training.checkpoint import atomic_write_bytes

        found = Path(self.workdir) / "holdout.json" if self.workdir is not None else None
        if self.resume and found is not None and found.exists():
            done = json.loads(found.read_text())
            return [tuple(h) for h in done["history"]], int(done["best_step"])
        fit_cases = [c for c in cases if c.case != self.held_back_]
        _, _, _, history, best_step = self._train(self.rows_init_, fit_cases, steps=self.steps, seed=self.seed, caches=caches, score_cases=[self.held_back_], phase="holdout")
        if found is not None:
            atomic_write_bytes(found, json.dumps({"held_back": self.held_back_, "history": history, "best_step": best_step}).encode())
        return history, best_step

    def _train(self, rows_init, cases, *, steps: int, seed: int, caches, phase: str, score_cases: Sequence[str] = (), net=None, row: int | None = None, expert: str | None = None, trainable=None, score_initial: bool = False):
        """One training run; returns ``(net, row, forks, history, best_step)``."""
        from experts.training.checkpoint import CheckpointDir
        from experts.training.sampling import SampleItem
        from experts.training.setup import build_training

        expert = expert or self.expert
        if net is None:  # a new expert: a new row block, and the trainable set
            net = copy.deepcopy(self.base.network).to(self.device)
            row, row_params = net.add_expert(rows_init)
            row_params, shared, forks, penalty = select_trainable(net, trainable or self.trainable, new_row=row, row_params=row_params)
        else:  # an existing expert: its rows alone
            for p in net.parameters():
                p.requires_grad_(False)
            row_params, shared, forks, penalty = net.expert_row_parameters(row), [], False, None
            for p in row_params:
                p.requires_grad_(True)
        optimizers = [torch.optim.Adam(row_params, lr=self.lr)] + ([torch.optim.Adam(shared, lr=self.head_lr)] if shared else [])
        train_cache, score_cache = caches
        items = [SampleItem(c.case, expert, c.kind, row) for c in cases]
        setup = build_training(plan=self.base.plan, cache=train_cache, items=items, network=net, batch_size=self.batch_size, seed=seed, loss_terms=self.loss_terms, augment=self.augment, device=self.device)
        checkpoints = CheckpointDir(Path(self.workdir) / "checkpoints" / phase) if self.workdir is not None else None
        run = TrainingRun(net=net, row=row, expert=expert, optimizers=optimizers, setup=setup, loss=PenalisedLoss(setup.loss, penalty), score_cache=score_cache, score_cases=list(score_cases), plan=self.base.plan, device=self.device, steps=steps, on_score=self.on_score, run_id=self.run_id, average=self.average)
        run.go(checkpoints=checkpoints, checkpoint_every=self.checkpoint_every, resume=self.resume, progress=self.progress, on_log=self.on_log, eval_every=self.eval_every, desc=f"adapt {expert} ({phase})", score_initial=score_initial)
        return net, row, forks, run.history, run.best["step"]
