"""``expertseg adapt``: a new doctor's style from a few of their cases, by training a new CIN row.

The pretrained weights stay as they are; the new expert gets a row in every CIN table, initialised
from the mean row, the nearest existing expert or a named one, and trained (alone by default, with its
own optimiser) on the given cases with the same partial losses as pretraining, so scribbles work as
well as dense labels. With 3 or more cases one is held back to choose the number of steps, then the
row is retrained on all of them for that many steps: no extra labels are needed.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import click
import numpy as np
import yaml

from experts.errors import ConfigError, DatasetError
from pipelines.runtime.common import prepare_out, seed_everything, select_device
from pipelines.runtime.config import config_to_dict, flatten, load_config
from pipelines.runtime.tracking import Tracker, find_or_create_parent

__all__ = ["adapt", "choose_cases", "adapt_rows"]


def choose_cases(available: list[str], *, cases: list[str] | None, shots: int | None, seed: int) -> list[str]:
    """The new doctor's cases to adapt on: the named ones, or ``shots`` drawn by seed."""
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


def adapt_rows(
    base,
    *,
    rows_init: dict,
    expert: str,
    cache,
    items_cases: list[tuple[str, str]],
    plan,
    acfg,
    seed: int,
    steps: int,
    device,
    score_cache=None,
    score_cases: list[str] | None = None,
    progress: bool = False,
    on_log=None,
    on_score=None,
    checkpoints=None,
    checkpoint_every: int = 0,
    resume: bool = False,
):
    """Add the new expert to a copy of the network and train it.

    Args:
        base: the pretrained :class:`~experts.bundle.ModelBundle`.
        rows_init: initial rows from :func:`experts.adaptation.initial_rows`.
        expert: the new expert's id (labels are looked up in ``cache`` under it).
        cache: padded :class:`~experts.data.datasets.VolumeCache` with the training cases.
        items_cases: ``(case, kind)`` training labels.
        acfg: the ``adapt`` config section.
        steps: optimisation steps.
        score_cache / score_cases: unpadded cache and cases to score every ``eval_every`` steps;
            the best-scoring state is returned.
        on_score: called with ``(step, mean Dice)`` after each scoring (a pruning hook may raise).
        checkpoints / checkpoint_every / resume: a :class:`~experts.training.checkpoint.CheckpointDir`
            written every ``checkpoint_every`` steps, and whether to continue from its newest valid one.

    Returns:
        ``(net, row, forks, history, best_step)``.
    """
    import torch
    from torch.utils.data import DataLoader

    from experts.adaptation import select_trainable
    from experts.data.datasets import PatchDataset
    from experts.data.transforms import training_augmentation
    from experts.losses import TermContext, build_loss
    from experts.records import collate_batch
    from pipelines.runtime.config import loss_section
    from experts.training.checkpoint import rng_state, set_rng_state
    from experts.training.loop import Callbacks, fit
    from experts.training.sampling import ExpertBalancedSampler, SampleItem
    from experts.training.validation import Target, expert_dice

    net = copy.deepcopy(base.network).to(device)
    row, row_params = net.add_expert(rows_init)
    row_params, shared, forks = select_trainable(net, acfg.trainable, new_row=row, row_params=row_params)
    optimizers = [torch.optim.Adam(row_params, lr=acfg.lr)]
    if shared:
        optimizers.append(torch.optim.Adam(shared, lr=acfg.head_lr))
    items = [SampleItem(case, expert, kind, row) for case, kind in items_cases]
    sampler = ExpertBalancedSampler(items, batch_size=acfg.batch_size, seed=seed)
    aug = base.config.get("augment", {})
    dataset = PatchDataset(cache, items, training_augmentation(plan, flip=aug.get("flip", True), rotate90=aug.get("rotate90", False), intensity=aug.get("intensity", True)))
    terms = loss_section(base.config.get("loss")).terms  # the pretraining's loss, in either config form
    loss_fn = build_loss(terms, TermContext(ignore_label=plan.num_classes, num_classes=plan.num_classes, spacing=tuple(plan.spacing)), network_features=net.returned_features).to(device)
    history: list[tuple[int, float]] = []
    best = {"score": -1.0, "step": steps, "state": None}
    trainable = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]

    def on_validate(step):
        if not score_cases:
            return None
        scores = expert_dice(net, cache=score_cache, targets={c: [Target(expert, row, expert)] for c in score_cases}, class_names=plan.class_names, patch_size=plan.patch_size, device=device)
        value = scores.get(expert, {}).get("mean", 0.0)
        history.append((step, value))
        if value > best["score"]:
            best.update(score=value, step=step, state=[p.detach().clone() for p in trainable])
        if on_score is not None:
            on_score(step, value)
        return scores

    def on_checkpoint(step):
        checkpoints.save(step, {"net": net.state_dict(), "loss": loss_fn.state_dict(), "optimizers": [o.state_dict() for o in optimizers], "step": step, "history": [list(h) for h in history], "best": best, "rng": rng_state()})

    start = 0
    if resume and checkpoints is not None:
        state, _ = checkpoints.latest_valid()
        if state is not None:
            net.load_state_dict(state["net"])
            loss_fn.load_state_dict(state.get("loss", {}))
            for opt, st in zip(optimizers, state["optimizers"]):
                opt.load_state_dict(st)
            history[:] = [tuple(h) for h in state["history"]]
            best.update(state["best"])
            set_rng_state(state["rng"])
            start = int(state["step"])
    loader = DataLoader(dataset, batch_sampler=list(sampler.iterate(start, steps)), collate_fn=collate_batch, num_workers=0)
    fit(
        model=net,
        loss_fn=loss_fn,
        optimizers=optimizers,
        schedules=[],
        batches=loader,
        start_step=start,
        steps=steps,
        device=device,
        callbacks=Callbacks(
            on_log=on_log,
            on_validate=on_validate if score_cases else None,
            on_checkpoint=on_checkpoint if checkpoints is not None and checkpoint_every else None,
            log_every=10,
            val_every=acfg.eval_every,
            checkpoint_every=checkpoint_every,
        ),
        progress=progress,
        desc=f"adapt {expert}",
    )
    if best["state"] is not None:
        with torch.no_grad():
            for p, v in zip(trainable, best["state"]):
                p.copy_(v)
    return net, row, forks, history, best["step"]


def doctor_labels(manifest, expert: str, cases: list[str], *, scribbles: bool, cfg, ignore_label: int, out: Path) -> tuple[dict, dict, str]:
    """The new doctor's label files for ``cases``: as given, or (``scribbles``) scribbles simulated
    from their dense labels and written under ``out/scribbles``. Returns the files, each file's
    kind, and the run's label kind (dense, partial, mixed or scribbles)."""
    from experts.data.nifti import load_volume, save_volume

    labels: dict[str, Path] = {}
    kinds: dict[str, str] = {}
    for i, case in enumerate(cases):
        lf = manifest.label(case, expert)
        if not scribbles:
            labels[case], kinds[case] = lf.path, lf.kind
            continue
        from experts.scribbles import simulate_scribbles

        if lf.kind != "dense":
            raise DatasetError(f"{lf.path}: already partial; --scribbles simulates scribbles from dense labels")
        vol = load_volume(lf.path, kind="label")
        sc = cfg.scribbles
        partial = simulate_scribbles(np.asarray(vol.array).astype(np.int64), ignore_label=ignore_label, seed=cfg.seed * 1000 + i, style=sc.style, density=sc.density, thickness=sc.thickness, axis=sc.axis)
        labels[case] = save_volume(out / "scribbles" / f"{case}{manifest.spec.file_ending}", partial.astype(np.uint8), vol.affine)
        kinds[case] = "partial"
    label_kind = "scribbles" if scribbles else ("dense" if set(kinds.values()) == {"dense"} else "partial" if set(kinds.values()) == {"partial"} else "mixed")
    return labels, kinds, label_kind


def _score_adapted_and_initial(base, net, row: int, rows_init, *, forks, manifest, expert: str, device) -> tuple[dict | None, dict | None]:
    """Test Dice of the adapted row and of the initial (zero-shot) row: one pass over the test cases,
    unless the shared weights were retrained (a fork), when the initial row runs on the pretrained weights."""
    from pipelines.pretrain import score_on_test

    if forks:
        before_net = copy.deepcopy(base.network)
        before_row, _ = before_net.add_expert(rows_init)
        test = score_on_test(net, manifest, base.plan, {expert: row}, device=device).get(expert)
        zero = score_on_test(before_net, manifest, base.plan, {expert: before_row}, device=device).get(expert)
        return test, zero
    scoring = copy.deepcopy(net)
    init_row, _ = scoring.add_expert(rows_init)
    scored = score_on_test(scoring, manifest, base.plan, {expert: row}, device=device, extra={"before": (expert, init_row)})
    return scored.get(expert), scored.get("before")


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
    from experts.adaptation import initial_rows, save_adapter
    from experts.bundle import ModelBundle, save_bundle
    from experts.data.datasets import VolumeCache
    from experts.data.manifest import scan_dataset
    from experts.training.validation import Target, expert_dice
    from pipelines.runtime.models import load_model, resolve_model_dir
    from pipelines.pretrain import registry_name

    t0 = time.perf_counter()
    cfg = load_config(config_path, overrides)
    if tracking:
        cfg.tracking.backend = tracking
    acfg = cfg.adapt
    out = prepare_out(out, overwrite=overwrite, resume=resume, marker="run.json")
    if resume and (out / "summary.json").exists():
        raise ConfigError(f"{out}: this adaptation already finished; see {out / 'summary.json'}")
    seed_everything(cfg.seed, deterministic=cfg.train.deterministic, threads=cfg.train.threads)
    device = select_device()
    base = load_model(model, device=device)
    if base.lineage.get("forked_for"):
        raise ConfigError(f"{model}: this model was forked for {base.lineage['forked_for']!r}; adapt from the pretrained model instead")
    manifest = scan_dataset(data)
    if expert not in manifest.experts:
        raise DatasetError(f"{manifest.root}: no expert {expert!r}; the dataset has {', '.join(manifest.experts)}")
    if expert in base.experts:
        raise ConfigError(f"expert {expert!r} is already in the model ({', '.join(base.experts)}); adaptation adds a new expert")
    plan = base.plan
    available = [lf.case for lf in manifest.labels_of(expert=expert, split="train")]
    chosen = choose_cases(available, cases=cases, shots=shots, seed=cfg.seed)
    if resume:
        earlier = json.loads((out / "run.json").read_text())
        if earlier.get("cases") != chosen or earlier.get("expert") != expert:
            raise ConfigError(f"{out}: the run to resume adapted {earlier.get('expert')} on {earlier.get('cases')}; pass the same --expert and cases")
    (out / "run.json").write_text(json.dumps({"stage": "adapt", "expert": expert, "cases": chosen, "model": model}, indent=2))

    labels, kinds, label_kind = doctor_labels(manifest, expert, chosen, scribbles=scribbles, cfg=cfg, ignore_label=plan.num_classes, out=out)
    images = {c: manifest.cases[c].images for c in chosen}
    train_cache = VolumeCache(plan, images=images, labels={(c, expert): p for c, p in labels.items()}, pad=True)
    score_cache = VolumeCache(plan, images=images, labels={(c, expert): p for c, p in labels.items()}, pad=False)

    # --- initial rows ---------------------------------------------------------------------------
    scores = None
    if acfg.init == "nearest":
        targets = {c: [Target(expert, r, e) for r, e in enumerate(base.experts)] for c in chosen}
        per = expert_dice(base.network, cache=score_cache, targets=targets, class_names=plan.class_names, patch_size=plan.patch_size, device=device)
        scores = {e: v["mean"] for e, v in per.items()}
    rows_init, init_source = initial_rows(base.network, acfg.init, experts=base.experts, scores=scores)

    # --- stopping rule: hold one case back to choose the step count, then train on all -----------
    from experts.training.checkpoint import CheckpointDir, atomic_write_bytes

    holdout = acfg.holdout == "auto" and len(chosen) >= 3
    steps = acfg.steps
    history: list = []
    every = acfg.checkpoint_every
    if holdout:
        held = chosen[-1]
        found = out / "holdout.json"
        if resume and found.exists():
            done = json.loads(found.read_text())
            history, best_step = [tuple(h) for h in done["history"]], done["best_step"]
        else:
            fit_items = [(c, kinds[c]) for c in chosen if c != held]
            _, _, _, history, best_step = adapt_rows(base, rows_init=rows_init, expert=expert, cache=train_cache, items_cases=fit_items, plan=plan, acfg=acfg, seed=cfg.seed, steps=acfg.steps, device=device, score_cache=score_cache, score_cases=[held], progress=progress, checkpoints=CheckpointDir(out / "checkpoints" / "holdout"), checkpoint_every=every, resume=resume)
            atomic_write_bytes(found, json.dumps({"held_back": held, "history": history, "best_step": best_step}).encode())
        steps = max(acfg.eval_every, best_step)
    t_train = time.perf_counter()
    net, row, forks, _, _ = adapt_rows(base, rows_init=rows_init, expert=expert, cache=train_cache, items_cases=[(c, kinds[c]) for c in chosen], plan=plan, acfg=acfg, seed=cfg.seed + 1, steps=steps, device=device, progress=progress, checkpoints=CheckpointDir(out / "checkpoints" / "final"), checkpoint_every=every, resume=resume)
    adapt_seconds = time.perf_counter() - t0

    # --- outputs ------------------------------------------------------------------------------
    base_ref = _pinned_ref(model, resolve_model_dir(model))
    meta = {"n_shots": len(chosen), "cases": chosen, "label_kind": label_kind, "init_source": init_source, "init_scores": scores, "steps": steps, "holdout_history": history}
    save_adapter(out / "adapter", net=net, expert=expert, row=row, base_model_id=base.lineage.get("base_model_id", base.model_id), base_ref=base_ref, init=acfg.init, trainable=acfg.trainable, forks=forks, extra=meta)
    adapted = ModelBundle(network=net, experts=base.experts + [expert], plan=plan, arch=base.arch, config=base.config, lineage={**base.lineage, "base_model_id": base.lineage.get("base_model_id", base.model_id), "adapted": base.lineage.get("adapted", []) + [expert], **({"forked_for": expert} if forks else {})})
    save_bundle(out / "model", adapted)
    test, zero = _score_adapted_and_initial(base, net, row, rows_init, forks=forks, manifest=manifest, expert=expert, device=device)
    adapter_bytes = (out / "adapter" / "adapter.pt").stat().st_size
    summary = {
        "stage": "adapt",
        "expert": expert,
        "cases": chosen,
        "label_kind": label_kind,
        "init": acfg.init,
        "init_source": init_source,
        "trainable": acfg.trainable,
        "steps": steps,
        "holdout": chosen[-1] if holdout else None,
        "adapter": str((out / "adapter").resolve()),
        "adapter_bytes": adapter_bytes,
        "model": str((out / "model").resolve()),
        "test_dice": test,
        "test_dice_before": zero,
        "seconds": round(adapt_seconds, 1),
        "train_seconds": round(time.perf_counter() - t_train, 1),
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    _track(cfg, out, summary, base, manifest, model, registry_name)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print(summary)
    return summary


def _pinned_ref(model: str, folder: Path) -> str:
    """Where the pretrained model lives, pinned: a registry alias becomes its version."""
    if model.startswith("models:/") and "@" in model:
        from mlflow import MlflowClient

        from pipelines.runtime.tracking import tracking_uri

        name, alias = model[len("models:/") :].split("@", 1)
        try:
            version = MlflowClient(tracking_uri=tracking_uri()).get_model_version_by_alias(name, alias).version
            return f"models:/{name}/{version}"
        except Exception:  # noqa: BLE001
            return model
    if model.startswith(("models:/", "runs:/")):
        return model
    return str(folder.resolve())


def _track(cfg, out: Path, summary: dict, base, manifest, model_ref: str, registry_name) -> None:
    tags = {
        "annotator": summary["expert"],
        "n_shots": len(summary["cases"]),
        "label_kind": summary["label_kind"],
        "init": summary["init"],
        "trainable": summary["trainable"],
        "base_model_id": base.lineage.get("base_model_id", base.model_id)[:16],
    }
    pretrain_run = base.lineage.get("mlflow_run_id")
    if pretrain_run:
        tags["pretrain_run_id"] = pretrain_run
    parent = None
    if cfg.tracking.backend == "mlflow":
        try:
            parent = find_or_create_parent(stage="adapt", run_name=f"annotator-{summary['expert']}", tags={k: v for k, v in tags.items() if k in ("annotator", "pretrain_run_id")}, key="annotator", experiment=cfg.tracking.experiment)
        except Exception as err:  # noqa: BLE001
            click.echo(f"warning: no MLflow parent run ({type(err).__name__}); the run is logged alone", err=True)
    tracker = Tracker(run_dir=out, stage="adapt", backend=cfg.tracking.backend, experiment=cfg.tracking.experiment, run_name=f"{summary['expert']}-{summary['label_kind']}-k{len(summary['cases'])}", tags=tags, parent_run_id=parent)
    with tracker:
        tracker.log_params({"model": model_ref, **{k: v for k, v in flatten(config_to_dict(cfg)).items() if k.startswith(("adapt.", "seed"))}, "cases": ",".join(summary["cases"])})
        tracker.log_dataset(manifest, context="adaptation")
        metrics = {"adapt/seconds": summary["seconds"], "adapter_bytes": summary["adapter_bytes"], "adapt/steps": summary["steps"]}
        for key, prefix in (("test_dice", "test/dice"), ("test_dice_before", "test/dice_before")):
            for cls, v in (summary.get(key) or {}).items():
                metrics[f"{prefix}/{summary['expert']}" + ("" if cls == "mean" else f"/{cls}")] = v
        tracker.log_metrics(metrics, step=summary["steps"])
        tracker.log_artifact(out / "adapter", "adapter")
        tracker.log_artifact(out / "model", "model")
        tracker.log_artifact(out / "config.yaml")
        summary["mlflow_run_id"] = tracker.run_id
        if cfg.tracking.register and tracker.client is not None:
            name = cfg.tracking.model_name or (model_ref[len("models:/") :].split("@")[0].split("/")[0] if model_ref.startswith("models:/") else registry_name(manifest.spec.name))
            version = tracker.register_model(artifact_path="adapter", name=name, alias=f"annotator-{summary['expert']}", tags={"kind": "adapter", **tags})
            summary["registered"] = {"name": name, "version": version, "alias": f"annotator-{summary['expert']}"}
        summary["where"] = tracker.ui_hint()


def _print(summary: dict) -> None:
    click.echo(f"adapted to {summary['expert']} from {len(summary['cases'])} {summary['label_kind']} case(s) in {summary['seconds']:.0f} s ({summary['steps']} steps, init {summary['init_source']})")
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
