"""``expertseg adapt``: a new doctor's style from a few of their cases.

The command orchestrates; stage 2 itself is :class:`experts.adaptation.Adapter`: a new row in every
CIN table (initialised from the mean row, the nearest existing expert or a named one), trained alone
by default with the pretraining's partial losses, so scribbles work as well as dense labels. With 3
or more cases one is held back to choose the number of steps. The pretrained weights stay as they
are; the adapter file holds what was trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import yaml

from experts.errors import ConfigError, DatasetError
from pipelines.runtime.common import check_out, open_out, run_identity, seed_everything, select_device
from pipelines.runtime.config import config_to_dict, flatten, load_config
from pipelines.runtime.store import find_or_create_parent, registry_name
from pipelines.runtime.tracking import Tracker

__all__ = ["adapt", "doctor_labels"]


def adapt(
    *,
    model: str,
    data: str,
    expert: str,
    out: str,
    cases: list[str] | None = None,
    shots: int | None = None,
    scribbles: bool = False,
    config_path: str | None = None,
    overrides: tuple[str, ...] = (),
    tracking: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Adapt ``model`` to ``expert`` of ``data``; returns the summary written to ``<out>/summary.json``.

    With ``resume``, an interrupted run in ``out`` continues from its newest valid checkpoint (the
    held-back search and the final training each keep their own) and ends with the same weights.
    """
    from pipelines.runtime.builders import adapter_from_config
    from pipelines.runtime.models import load_model

    t0 = time.perf_counter()
    cfg = load_config(config_path, overrides)
    if tracking:
        cfg.tracking.backend = tracking
    Tracker.probe(cfg)
    out = check_out(out, command="adapt", overwrite=overwrite, resume=resume, marker="run.json")
    if resume and (out / "summary.json").exists():
        raise ConfigError(f"{out}: this adaptation already finished; see {out / 'summary.json'}")
    seed_everything(cfg.seed, deterministic=cfg.train.deterministic, threads=cfg.train.threads)
    device = select_device()
    base = load_model(model, device=device)
    interactive = base if getattr(base.network, "prompt_channels", 0) else None
    if interactive is not None:  # adapt its automatic network; the new row is put back afterwards
        from experts.interactive.building import automatic_bundle

        base = automatic_bundle(interactive)
    manifest, chosen = _doctor_cases(base, data, expert, cases=cases, shots=shots, seed=cfg.seed)
    identity = run_identity(out, cfg, resume=resume)
    adapter = adapter_from_config(base, expert, cfg, device=device, workdir=out, resume=resume, progress=progress, run_id=identity["run_uid"])
    adapter.check()  # every setting, before anything is written
    open_out(out, command="adapt", overwrite=overwrite)
    _record_run(out, expert=expert, chosen=chosen, model=model, resume=resume, identity=identity)
    labelled, label_kind = doctor_labels(manifest, expert, chosen, scribbles=scribbles, cfg=cfg, ignore_label=base.plan.num_classes, out=out)
    t_train = time.perf_counter()
    adapter.fit(labelled)
    train_seconds = time.perf_counter() - t_train
    adapt_seconds = time.perf_counter() - t0
    summary = _write_outputs(out, adapter, model=model, cases=chosen, label_kind=label_kind, manifest=manifest, interactive=interactive)
    summary.update(seconds=round(adapt_seconds, 1), train_seconds=round(train_seconds, 1))
    (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    _track(cfg, out, summary, adapter, manifest, model)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print(summary)
    return summary


def _doctor_cases(base, data: str, expert: str, *, cases, shots, seed: int):
    """The dataset and the doctor's cases to adapt on, after every check that needs no training."""
    from experts.adaptation import choose_cases
    from experts.data.manifest import scan_dataset

    if base.lineage.get("forked_for"):
        raise ConfigError(f"this model was forked for {base.lineage['forked_for']!r}; adapt from the pretrained model instead")
    manifest = scan_dataset(data)
    if expert not in manifest.experts:
        raise DatasetError(f"{manifest.root}: no expert {expert!r}; the dataset has {', '.join(manifest.experts)}")
    if expert in base.experts:
        raise ConfigError(f"expert {expert!r} is already in the model ({', '.join(base.experts)}); adaptation adds a new expert")
    available = [lf.case for lf in manifest.labels_of(expert=expert, split="train")]
    return manifest, choose_cases(available, cases=cases, shots=shots, seed=seed)


def _record_run(out: Path, *, expert: str, chosen: list[str], model: str, resume: bool, identity: dict) -> None:
    """``run.json``: what this folder adapts; a resume must name the same expert and cases."""
    if resume:
        earlier = json.loads((out / "run.json").read_text())
        if earlier.get("cases") != chosen or earlier.get("expert") != expert:
            raise ConfigError(f"{out}: the run to resume adapted {earlier.get('expert')} on {earlier.get('cases')}; pass the same --expert and cases")
    (out / "run.json").write_text(json.dumps({"stage": "adapt", "expert": expert, "cases": chosen, "model": model, **identity}, indent=2))


def doctor_labels(manifest, expert: str, cases: list[str], *, scribbles: bool, cfg, ignore_label: int, out: Path):
    """The doctor's labelled cases: their label files as given, or (``scribbles``) scribbles
    simulated from their dense labels with ``cfg.scribbles`` and written under ``out/scribbles``.

    Returns:
        ``([LabelledCase], label kind)``, the kind being dense, partial, mixed or scribbles.
    """
    from experts.adaptation import LabelledCase
    from experts.data.nifti import load_volume, save_volume, spacing_of
    from experts.scribbles import simulate_scribbles
    from pipelines.runtime.builders import scribble_settings

    labelled = []
    for i, case in enumerate(cases):
        lf = manifest.label(case, expert)
        path, kind = lf.path, lf.kind
        if scribbles:
            if lf.kind != "dense":
                raise DatasetError(f"{lf.path}: already partial; --scribbles simulates scribbles from dense labels")
            vol = load_volume(lf.path, kind="label")
            partial = simulate_scribbles(np.asarray(vol.array).astype(np.int64), ignore_label=ignore_label, seed=cfg.seed * 1000 + i, spacing=spacing_of(vol.affine), **scribble_settings(cfg))
            path, kind = save_volume(out / "scribbles" / f"{case}{manifest.spec.file_ending}", partial.astype(np.uint8), vol.affine), "partial"
        labelled.append(LabelledCase(case=case, images=tuple(manifest.cases[case].images), label=Path(path), kind=kind))
    kinds = {c.kind for c in labelled}
    label_kind = "scribbles" if scribbles else ("dense" if kinds == {"dense"} else "partial" if kinds == {"partial"} else "mixed")
    return labelled, label_kind


def _write_outputs(out: Path, adapter, *, model: str, cases: list[str], label_kind: str, manifest, interactive=None) -> dict:
    """The adapter file, the full adapted model, and the test scores; returns the summary so far.
    For an ``interactive`` model the adapter holds its automatic network's new row and ``model/``
    is the interactive model with the doctor's rows (what the adapter gives, stacked onto it)."""
    from experts.adaptation import create_init, create_trainable, save_adapter
    from experts.bundle import save_bundle
    from pipelines.runtime.models import pinned_ref

    base, chosen = adapter.base, list(cases)
    init, asked = create_init(adapter.init).describe(), create_trainable(adapter.trainable).name
    trainable = "rows" if adapter.rung_ == "initial" else adapter.rung_  # the initial row is a rows adapter that never trained
    cv = adapter.cv_.summary() if adapter.cv_ is not None else None
    meta = {"n_shots": len(chosen), "cases": chosen, "label_kind": label_kind, "init_source": adapter.init_source_, "init_scores": adapter.init_scores_, "steps": adapter.steps_, "holdout_history": adapter.history_, "trainable_asked": asked, "rung": adapter.rung_, **({"cv": cv} if cv else {})}
    base_id = base.lineage.get("base_model_id", base.model_id)
    save_adapter(out / "adapter", net=adapter.network_, expert=adapter.expert, row=adapter.row_, base_model_id=base_id, base_ref=pinned_ref(model), init=init, trainable=trainable, forks=adapter.forks_, extra=meta)
    if interactive is None:
        save_bundle(out / "model", adapter.bundle())
    else:
        from experts.interactive.building import with_automatic

        save_bundle(out / "model", with_automatic(interactive, adapter.bundle(), source=adapter.init_source_))
    test, zero = adapter.score_test(manifest)
    return {
        "stage": "adapt",
        "expert": adapter.expert,
        "cases": chosen,
        "label_kind": label_kind,
        "init": init,
        "init_source": adapter.init_source_,
        "trainable": trainable,
        "trainable_asked": asked,
        "rung": adapter.rung_,
        "cv": cv,
        "steps": adapter.steps_,
        "holdout": adapter.held_back_,
        "adapter": str((out / "adapter").resolve()),
        "adapter_bytes": (out / "adapter" / "adapter.pt").stat().st_size,
        "model": str((out / "model").resolve()),
        "test_dice": test,
        "test_dice_before": zero,
    }


def _track(cfg, out: Path, summary: dict, adapter, manifest, model_ref: str) -> None:
    base = adapter.base
    tags = {
        "annotator": summary["expert"],
        "n_shots": len(summary["cases"]),
        "label_kind": summary["label_kind"],
        "init": summary["init"],
        "trainable": summary["trainable"],
        "rung": summary["rung"],
        "base_model_id": base.lineage.get("base_model_id", base.model_id)[:16],
    }
    if base.lineage.get("mlflow_run_id"):
        tags["pretrain_run_id"] = base.lineage["mlflow_run_id"]
    parent = None
    if cfg.tracking.backend == "mlflow":
        try:
            parent = find_or_create_parent(stage="adapt", run_name=f"annotator-{summary['expert']}", tags={k: v for k, v in tags.items() if k in ("annotator", "pretrain_run_id")}, key="annotator", experiment=cfg.tracking.experiment)
        except Exception as err:  # noqa: BLE001
            click.echo(f"warning: no MLflow parent run ({type(err).__name__}); the run is logged alone", err=True)
    tracker = Tracker(run_dir=out, stage="adapt", backend=cfg.tracking.backend, experiment=cfg.tracking.experiment, run_name=f"{summary['expert']}-{summary['label_kind']}-k{len(summary['cases'])}", tags=tags, parent_run_id=parent)
    with tracker:
        tracker.log_params({"model": model_ref, **{k: v for k, v in flatten(config_to_dict(cfg)).items() if k.startswith(("adapt.", "seed"))}, "cases": ",".join(summary["cases"]), "adapt.chosen_rung": summary["rung"], "adapt.chosen_steps": summary["steps"]})
        tracker.log_dataset(manifest, context="adaptation")
        tracker.log_metrics(_metrics(summary), step=summary["steps"])
        tracker.log_artifact(out / "adapter", "adapter")
        tracker.log_artifact(out / "model", "model")
        tracker.log_artifact(out / "config.yaml")
        summary["mlflow_run_id"] = tracker.run_id
        if cfg.tracking.register and tracker.client is not None:
            name = cfg.tracking.model_name or (model_ref[len("models:/") :].split("@")[0].split("/")[0] if model_ref.startswith("models:/") else registry_name(manifest.spec.name))
            version = tracker.register_model(artifact_path="adapter", name=name, alias=f"annotator-{summary['expert']}", tags={"kind": "adapter", **tags})
            summary["registered"] = {"name": name, "version": version, "alias": f"annotator-{summary['expert']}"}
        summary["where"] = tracker.ui_hint()


def _metrics(summary: dict) -> dict:
    metrics = {"adapt/seconds": summary["seconds"], "adapter_bytes": summary["adapter_bytes"], "adapt/steps": summary["steps"]}
    for key, prefix in (("test_dice", "test/dice"), ("test_dice_before", "test/dice_before")):
        for cls, v in (summary.get(key) or {}).items():
            metrics[f"{prefix}/{summary['expert']}" + ("" if cls == "mean" else f"/{cls}")] = v
    cv = summary.get("cv") or {}
    if cv:
        metrics["cv/initial"] = cv["initial"]
        metrics.update({f"cv/{rung.replace('+', '_')}": v for rung, v in {**cv["pruned_after_first_fold"], **cv["best_by_rung"]}.items()})  # MLflow names take no '+'

    return metrics


def _cv_line(cv: dict) -> str:
    """Why ``auto`` chose what it chose, in one line."""
    scores = "  ".join(f"{rung} {v:.3f}" for rung, v in cv["best_by_rung"].items())
    pruned = "".join(f"  ({rung} {v:.3f} after one fold)" for rung, v in cv["pruned_after_first_fold"].items())
    return f"auto chose {cv['rung']} at {cv['steps']} steps: left-out case(s) {', '.join(cv['held_out'])} scored initial row {cv['initial']:.3f}  {scores}{pruned}"


def _print(summary: dict) -> None:
    click.echo(f"adapted to {summary['expert']} from {len(summary['cases'])} {summary['label_kind']} case(s) in {summary['seconds']:.0f} s ({summary['rung']}, {summary['steps']} steps, init {summary['init_source']})")
    if summary.get("cv"):
        click.echo(_cv_line(summary["cv"]))
    if summary.get("test_dice"):
        before = summary.get("test_dice_before") or {}
        click.echo(f"test Dice of {summary['expert']}: " + "  ".join(f"{k}={v:.3f}" + (f" (before {before[k]:.3f})" if k in before else "") for k, v in summary["test_dice"].items()))
    click.echo(f"adapter ({summary['adapter_bytes'] / 1024:.1f} KB): {summary['adapter']}")
    click.echo(f"full model: {summary['model']}")
    if summary.get("registered"):
        r = summary["registered"]
        click.echo(f"registered: models:/{r['name']}@{r['alias']}")
    if summary.get("where"):
        click.echo(summary["where"])
