"""``expertseg tune``: an Optuna study over the hyperparameters that matter.

One process or many: the study lives in a storage every worker opens by URL.

- default: a SQLite file in ``--out`` (one process);
- ``journal:<file>``: Optuna's journal file, for several processes on one machine;
- ``postgresql://...``: an RDB shared by many machines, with heartbeats so that the trial of a
  worker that died is failed and re-queued (``RetryHeartbeatStaleTrialCallback``).

Trials are pruned on intermediate validation Dice. Validation cases never include the test cases
(``labelsTs``) that reported numbers use: pretraining trials validate on a case-level fold of
``labelsTr``; adaptation trials adapt on ``--shots`` of the new doctor's training cases and validate
on the doctor's other training cases. Every trial is a nested MLflow run under one parent run per
study, found by the study's id, so workers on other machines land under the same parent. The best
parameters are written as a config file usable with ``--config``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import click
import numpy as np
import yaml

from experts.errors import ConfigError, TrackingError
from pipelines.runtime.common import select_device
from pipelines.runtime.config import apply_overrides, config_to_dict, load_config

__all__ = ["tune", "open_storage", "SEARCH_SPACES"]


# Step counts are searched as a factor of the config's budget, so the space is the same for every
# worker of a study whatever budget its config gives.
STEP_SCALES = [0.5, 1.0, 2.0]


def _pretrain_space(trial, cfg) -> dict:
    patch = trial.suggest_categorical("patch", [32, 48, 64])
    return {
        "train.lr": trial.suggest_float("train.lr", 3e-4, 1e-2, log=True),
        "train.steps": max(1, int(cfg.train.steps * trial.suggest_categorical("steps_scale", STEP_SCALES))),
        "data.patch_size": [patch, patch, patch],
        "loss.terms": _with_term_weights(trial, _with_dice_weight(cfg, trial.suggest_categorical("loss.dice_weight", [0.5, 1.0, 2.0]))),
    }


def _with_dice_weight(cfg, weight: float) -> list[dict]:
    """The config's loss terms with the partial Dice + CE term's ``dice_weight`` set."""
    terms = [dataclasses.asdict(t) for t in cfg.loss.terms]
    for t in terms:
        if t["name"] == "partial_dice_ce":
            t["params"] = {**t["params"], "dice_weight": weight}
    return terms


#: a regulariser's weight is searched over this factor range around its configured weight (log scale)
TERM_WEIGHT_RANGE = (0.1, 10.0)


def _with_term_weights(trial, terms: list[dict]) -> list[dict]:
    """Every term but the partial loss gets its weight searched, as ``loss.<term>.weight``: log-uniform
    over :data:`TERM_WEIGHT_RANGE` times the configured weight (a term configured at weight 0 stays off)."""
    lo, hi = TERM_WEIGHT_RANGE
    for t in terms:
        if t["name"] != "partial_dice_ce" and t["weight"] > 0:
            t["weight"] = trial.suggest_float(f"loss.{t['name']}.weight", lo * t["weight"], hi * t["weight"], log=True)
    return terms


def _adapt_space(trial, cfg) -> dict:
    return {
        "adapt.lr": trial.suggest_float("adapt.lr", 3e-3, 0.3, log=True),
        "adapt.steps": max(cfg.adapt.eval_every, int(cfg.adapt.steps * trial.suggest_categorical("steps_scale", STEP_SCALES))),
        "adapt.init": {"name": trial.suggest_categorical("adapt.init", ["mean", "nearest"]), "params": {}},
        "adapt.trainable": {"name": trial.suggest_categorical("adapt.trainable", ["rows", "rows+head"]), "params": {}},
    }


#: stage -> function(trial, base config) -> overrides {dotted key: value}
SEARCH_SPACES = {"pretrain": _pretrain_space, "adapt": _adapt_space}


def open_storage(url: str, *, heartbeat: int, grace: int | None):
    """An Optuna storage for ``url`` (see module docstring); an unusable one is one line, exit 2."""
    import optuna

    if not url.startswith(("journal:", "sqlite:///", "postgresql://", "postgresql+psycopg://")):
        raise ConfigError(f"--storage {url[:120]!r}: not a storage this command opens; use sqlite:///FILE.db, journal:FILE or postgresql://user@host/db")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, message=r".*(heartbeat|RetryHeartbeatStaleTrialCallback).*")
    try:
        return _storage(optuna, url, heartbeat=heartbeat, grace=grace)
    except Exception as err:  # noqa: BLE001 - a driver, a file or a server that is not there
        raise TrackingError(f"--storage {url[:120]}: cannot be opened ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); check the address, the server and the driver") from None


def _storage(optuna, url: str, *, heartbeat: int, grace: int | None):
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url)
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=heartbeat,
        grace_period=grace,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
        engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}},
    )


def _make_pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be median, percentile, hyperband or none, got {name!r}")


def _parent_run(study, *, stage: str, backend: str, experiment: str) -> str | None:
    """One MLflow parent run per study, shared through the study's user attributes."""
    if backend != "mlflow":
        return None
    from pipelines.runtime.store import find_or_create_parent

    key = "mlflow_parent_run_id"
    if key not in study.user_attrs:
        run_id = find_or_create_parent(stage="tune", run_name=f"study-{study.study_name}", tags={"study": study.study_name, "tuned_stage": stage}, key="study", experiment=experiment)
        study.set_user_attr(key, run_id)
    return study.user_attrs[key]


def tune(
    *,
    data: str,
    stage: str,
    trials: int,
    out: str,
    storage: str | None = None,
    study_name: str | None = None,
    config_path: str | None = None,
    overrides: tuple[str, ...] = (),
    model: str | None = None,
    expert: str | None = None,
    shots: int = 3,
    pruner: str = "median",
    heartbeat: int = 60,
    grace: int | None = None,
    tracking: str | None = None,
    progress: bool = False,
) -> dict:
    """Run ``trials`` trials of the study (joining it if it exists); returns the study summary."""
    import optuna

    from pipelines.runtime.tracking import Tracker

    if stage not in SEARCH_SPACES:
        raise ConfigError(f"--stage must be one of {', '.join(SEARCH_SPACES)}, got {stage!r}")
    if stage == "adapt" and not (model and expert):
        raise ConfigError("--stage adapt needs --model (the pretrained model) and --expert (the new doctor)")
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    cfg = load_config(config_path, overrides)
    if tracking:
        cfg.tracking.backend = tracking
    Tracker.probe(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name or f"expertseg-{stage}",
        storage=open_storage(url, heartbeat=heartbeat, grace=grace),
        direction="maximize",
        pruner=_make_pruner(pruner),
        load_if_exists=True,
    )
    parent = _parent_run(study, stage=stage, backend=cfg.tracking.backend, experiment=cfg.tracking.experiment)
    objective = _pretrain_objective(cfg, data, out, parent, config_path, overrides) if stage == "pretrain" else _adapt_objective(cfg, data, out, parent, model, expert, shots, progress)
    study.optimize(objective, n_trials=trials, catch=())
    return _write_results(study, cfg, out, stage, config_path, overrides, parent)


def _report(trial, step: int, value: float) -> None:
    import optuna

    trial.report(value, step)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at step {step} with validation Dice {value:.4f}")


def _set_list(params: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in params.items()]


def _pretrain_objective(cfg, data, out, parent, config_path, overrides):
    from pipelines.runtime.stages import stage_runner

    pretrain = stage_runner("pretrain")

    def objective(trial):
        params = SEARCH_SPACES["pretrain"](trial, cfg)
        trial.set_user_attr("overrides", params)
        best = {"value": 0.0}

        def on_validate(step, scores):
            value = float(np.mean([v["mean"] for v in scores.values()])) if scores else 0.0
            best["value"] = max(best["value"], value)
            _report(trial, step, value)

        pretrain(data=data, out=str(out / f"trial-{trial.number:04d}"), config_path=config_path, overrides=tuple(overrides) + tuple(_set_list(params)) + ("tracking.register=false",), overwrite=True, tracking=cfg.tracking.backend, progress=False, parent_run_id=parent, on_validate=on_validate)
        return best["value"]

    return objective


def _adapt_objective(cfg, data, out, parent, model_ref, expert, shots, progress):
    """Adapt on ``shots`` of the doctor's training cases; score on the doctor's other training cases."""
    from experts.adaptation import choose_cases
    from experts.data.manifest import scan_dataset
    from pipelines.runtime.models import load_model

    device = select_device()
    base = load_model(model_ref, device=device)
    manifest = scan_dataset(data)
    available = [lf.case for lf in manifest.labels_of(expert=expert, split="train")]
    chosen = choose_cases(available, cases=None, shots=shots, seed=cfg.seed)
    dense_rest = [lf.case for lf in manifest.labels_of(expert=expert, split="train", kind="dense") if lf.case not in chosen]
    if not dense_rest:
        raise ConfigError(f"the new doctor {expert!r} has no dense training label outside the {shots} adaptation cases to validate on")
    train, val = _labelled(manifest, expert, chosen), _labelled(manifest, expert, sorted(dense_rest)[:4])
    nearest: dict = {}

    def objective(trial):
        params = SEARCH_SPACES["adapt"](trial, cfg)
        trial.set_user_attr("overrides", params)
        tcfg = load_config(None, _set_list({"adapt." + k: v for k, v in config_to_dict(cfg)["adapt"].items()}) + _set_list(params) + [f"seed={cfg.seed}"])
        tcfg.tracking = cfg.tracking
        return _adapt_trial(trial, tcfg, base, expert, train=train, val=val, nearest=nearest, out=out, parent=parent, shots=shots, params=params, device=device, progress=progress)

    return objective


def _labelled(manifest, expert: str, cases: list[str]) -> list:
    from experts.adaptation import LabelledCase

    return [LabelledCase(case=c, images=tuple(manifest.cases[c].images), label=manifest.label(c, expert).path, kind=manifest.label(c, expert).kind) for c in cases]


def _adapt_trial(trial, tcfg, base, expert, *, train, val, nearest: dict, out, parent, shots, params, device, progress) -> float:
    """One trial: an adapter scored on the validation cases every ``eval_every`` steps (pruned on
    them); the nearest-expert scores are computed once and shared by the trials."""
    import optuna

    from pipelines.runtime.builders import adapter_from_config
    from pipelines.runtime.tracking import Tracker

    tracker = Tracker(run_dir=out / f"trial-{trial.number:04d}", stage="tune", backend=tcfg.tracking.backend, experiment=tcfg.tracking.experiment, run_name=f"trial-{trial.number}", tags={"study": trial.study.study_name, "trial": trial.number, "annotator": expert}, parent_run_id=parent)
    with tracker:
        tracker.log_params({**params, "shots": shots, "validation_cases": ",".join(c.case for c in val)})

        def on_score(step, value):
            tracker.log_metrics({"val/dice": value}, step=step)
            _report(trial, step, value)

        adapter = adapter_from_config(base, expert, tcfg, device=device, progress=progress, on_score=on_score, init_scores=nearest.get("scores"))
        try:
            adapter.fit(train, validation=val)
        except optuna.TrialPruned:
            tracker.set_tags({"pruned": "true"})
            raise
        if adapter.init_scores_ is not None:
            nearest.setdefault("scores", adapter.init_scores_)
        value = max(v for _, v in adapter.history_) if adapter.history_ else 0.0
        tracker.log_metrics({"objective": value}, step=adapter.best_step_)
        trial.set_user_attr("best_step", adapter.best_step_)
        return value


def _write_results(study, cfg, out: Path, stage: str, config_path, overrides, parent) -> dict:
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    states = {s.name.lower(): sum(1 for t in study.trials if t.state == s) for s in optuna.trial.TrialState}
    summary = {"study": study.study_name, "stage": stage, "trials": states, "mlflow_parent_run_id": parent}
    if done:
        best = study.best_trial
        params = dict(best.user_attrs.get("overrides", best.params))
        if stage == "adapt" and best.user_attrs.get("best_step"):
            params["adapt.steps"] = int(best.user_attrs["best_step"])
        raw = {}
        if config_path:
            raw = yaml.safe_load(Path(config_path).read_text()) or {}
        raw = apply_overrides(raw, list(overrides) + _set_list(params))
        load_config(None, _set_list(_flatten_raw(raw)))  # the exported file must load
        (out / "best_config.yaml").write_text(f"# best of study {study.study_name} (trial {best.number}, validation Dice {best.value:.4f})\n" + yaml.safe_dump(raw, sort_keys=False))
        summary.update(best_value=best.value, best_trial=best.number, best_params=params, best_config=str((out / "best_config.yaml").resolve()))
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    click.echo(f"study {study.study_name}: " + ", ".join(f"{v} {k}" for k, v in states.items() if v))
    if done:
        click.echo(f"best validation Dice {summary['best_value']:.4f} (trial {summary['best_trial']}): {summary['best_params']}")
        click.echo(f"best config: {summary['best_config']}  (use with --config)")
    return summary


def _flatten_raw(raw: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in raw.items():
        if isinstance(v, dict) and v and k not in ("expert_weights", "kind_weights"):
            out.update(_flatten_raw(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
