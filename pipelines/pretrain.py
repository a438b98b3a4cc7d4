"""``expertseg pretrain``: one network, every expert's labels, dense and scribbled.

Data flow: dataset -> plan -> cached volumes -> expert-balanced sampler -> seeded patches ->
network(image, expert) -> partial loss -> :func:`experts.training.loop.fit` -> tracker. The run
folder holds the plan, the resolved config, checkpoints, the local log and the model bundle; MLflow
gets the same and registers the bundle with alias ``pretrained``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
import yaml

from experts.bundle import ModelBundle, save_bundle

from experts.errors import ConfigError, DatasetError
from pipelines.runtime.common import prepare_out, seed_everything, select_device, select_experts
from pipelines.runtime.config import Config, config_to_dict, flatten, load_config
from pipelines.runtime.tracking import Tracker

__all__ = ["pretrain", "PretrainSetup", "setup_pretraining"]


@dataclass
class PretrainSetup:
    """Everything a pretraining run is made of, before the loop starts."""

    cfg: Config
    manifest: object
    experts: list[str]
    rows: dict[str, int]
    plan: object
    network: object
    train_cases: list[str]
    val_cases: list[str]
    items: list
    arch: dict


def setup_pretraining(cfg: Config, data: str | Path, *, include=None, exclude=None, cases: list[str] | None = None) -> PretrainSetup:
    """Scan the data, choose experts, split by case, build the network and the plan.

    With ``cases``, only those training cases are used, all of them for training (no validation
    split): e.g. a network trained from scratch on a new doctor's few cases.
    """
    import torch

    from experts.data.manifest import scan_dataset
    from experts.data.plan import make_plan
    from experts.data.splits import case_split
    from experts.networks import create_network
    from experts.training.sampling import SampleItem

    manifest = scan_dataset(data)
    experts = select_experts(manifest, include=include, exclude=exclude)
    rows = {e: (0 if cfg.sampling.pool_experts else i) for i, e in enumerate(experts)}
    labels = [lf for lf in manifest.labels_of(split="train") if lf.expert in rows]
    if cases is not None:
        missing = sorted(set(cases) - {lf.case for lf in labels})
        if missing:
            raise DatasetError(f"{manifest.root}: no training label of {', '.join(experts)} for case(s) {', '.join(missing)}")
        labels = [lf for lf in labels if lf.case in set(cases)]
        train_cases, val_cases = sorted(set(cases)), []
    else:
        train_cases, val_cases = case_split([(lf.case, lf.expert) for lf in labels], n_folds=cfg.data.n_folds, fold=cfg.data.fold)
    items = [SampleItem(lf.case, lf.expert, lf.kind, rows[lf.expert]) for lf in labels if lf.case in set(train_cases)]
    arch = {"name": cfg.network.name, "kwargs": {"channels": list(cfg.network.channels), "cin": cfg.network.cin, "features": list(cfg.network.features)}}
    torch.manual_seed(cfg.seed)
    network = create_network(
        cfg.network.name,
        in_channels=manifest.spec.num_channels,
        num_classes=manifest.spec.num_classes,
        num_experts=1 if cfg.sampling.pool_experts else len(experts),
        **arch["kwargs"],
    )
    plan = make_plan(
        manifest,
        divisor=network.divisor,
        spacing=cfg.data.spacing,
        patch_size=cfg.data.patch_size,
        max_patch_size=cfg.data.max_patch_size,
        normalization=cfg.data.normalization,
    )
    try:
        network.check_input_size(plan.patch_size)
    except ValueError as err:
        raise ConfigError(f"data.patch_size: {err}") from None
    return PretrainSetup(cfg, manifest, experts, rows, plan, network, train_cases, val_cases, items, arch)


def pretrain(
    *,
    data: str,
    out: str,
    config_path: str | None = None,
    overrides: tuple[str, ...] = (),
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    cases: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    tracking: str | None = None,
    progress: bool = True,
    parent_run_id: str | None = None,
    on_validate: Callable[[int, dict], None] | None = None,
    register: bool | None = None,
) -> dict:
    """Run multi-expert pretraining; returns the run summary (also written to ``<out>/summary.json``).

    Launched by ``torchrun``, every process trains its share of each global batch (DDP); rank 0
    alone logs, validates, writes checkpoints and the model.

    Args:
        parent_run_id: attach the MLflow run under this parent (tuning trials).
        on_validate: called with ``(step, scores)`` after each validation (pruning hooks may raise).
        register: override ``tracking.register``.
    """
    import torch
    from torch.utils.data import DataLoader

    from experts.data.datasets import PatchDataset, VolumeCache
    from experts.data.transforms import training_augmentation
    from experts.losses import TermContext, build_loss
    from experts.records import collate_batch
    from experts.training.checkpoint import CheckpointDir, rng_state, set_rng_state
    from experts.training.loop import Callbacks, fit
    from experts.training.sampling import ExpertBalancedSampler
    from experts.training.schedule import make_optimizer, make_schedule, param_groups
    from experts.training.validation import expert_dice
    from pipelines.runtime.distributed import init_distributed, replica_digests
    from pipelines.runtime.tracking import NullTracker

    t_start = time.perf_counter()
    cfg = load_config(config_path, overrides)
    if tracking:
        cfg.tracking.backend = tracking
    if register is not None:
        cfg.tracking.register = register
    ctx = init_distributed()
    try:
        if ctx.is_main:
            out = prepare_out(out, resume=resume, overwrite=overwrite)
        ctx.barrier()
        out = Path(out)
        seed_everything(cfg.seed, deterministic=cfg.train.deterministic, threads=cfg.train.threads)
        s = setup_pretraining(cfg, data, include=include, exclude=exclude, cases=cases)
        device = torch.device(f"cuda:{ctx.local_rank}") if torch.cuda.is_available() and ctx.enabled else select_device()
        net = s.network.to(device)
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) if ctx.enabled else net
        resolved = config_to_dict(cfg)
        if ctx.is_main:
            (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
            s.plan.save(out / "plan.json")
            (out / "dataset.json").write_text(json.dumps({"root": str(s.manifest.root), "fingerprint": s.manifest.fingerprint(), "labels": s.manifest.records()}, indent=1))

        # --- data ----------------------------------------------------------------------------
        train_labels = {(it.case, it.expert): s.manifest.label(it.case, it.expert).path for it in s.items}
        train_cache = VolumeCache(s.plan, images={c: s.manifest.cases[c].images for c in s.train_cases}, labels=train_labels, pad=True, cache=cfg.data.cache, progress=progress and ctx.is_main)
        val_targets = _dense_targets(s.manifest, s.val_cases, s.rows, split="train") if ctx.is_main else {}
        val_cache = VolumeCache(s.plan, images={c: s.manifest.cases[c].images for c in val_targets}, labels={(c, e): s.manifest.label(c, e).path for c, pairs in val_targets.items() for e, _ in pairs}, pad=False, cache=cfg.data.cache)
        sampler = ExpertBalancedSampler(s.items, batch_size=cfg.train.batch_size * ctx.world_size, seed=cfg.seed, expert_weights=cfg.sampling.expert_weights, kind_weights=cfg.sampling.kind_weights)
        augmentation = training_augmentation(s.plan, flip=cfg.augment.flip, rotate90=cfg.augment.rotate90, intensity=cfg.augment.intensity)
        dataset = PatchDataset(train_cache, s.items, augmentation)

        # --- optimisation ----------------------------------------------------------------------
        loss_fn = build_loss(cfg.loss.terms, TermContext(ignore_label=s.plan.num_classes, num_classes=s.plan.num_classes, spacing=tuple(s.plan.spacing)), network_features=net.returned_features).to(device)
        groups = param_groups(net, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, style_lr_scale=cfg.train.style_lr_scale)
        optimizer = make_optimizer(groups, name=cfg.train.optimizer, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum)
        schedule = make_schedule(optimizer, name=cfg.train.schedule, steps=cfg.train.steps, warmup_steps=cfg.train.warmup_steps)
        checkpoints = CheckpointDir(out / "checkpoints")
        start_step, run_id = 0, None
        if resume:
            state, problems = checkpoints.latest_valid()
            for p in problems if ctx.is_main else []:
                click.echo(f"warning: skipped damaged checkpoint: {p}", err=True)
            run_id = json.loads((out / "run.json").read_text()).get("mlflow_run_id")
            if state is not None:
                net.load_state_dict(state["model"])
                loss_fn.load_state_dict(state.get("loss", {}))
                optimizer.load_state_dict(state["optimizer"])
                schedule.load_state_dict(state["schedule"])
                set_rng_state(state["rng"])
                start_step = int(state["step"])
                if ctx.is_main:
                    click.echo(f"resuming from step {start_step}")

        tags = {
            "dataset": s.manifest.spec.name,
            "experts": ",".join(s.experts),
            "label_kinds": ",".join(sorted({it.kind for it in s.items})),
            "pooled": str(cfg.sampling.pool_experts).lower(),
            "world_size": ctx.world_size,
        }
        tracker = Tracker(run_dir=out, stage="pretrain", backend=cfg.tracking.backend, experiment=cfg.tracking.experiment, run_name=out.name, tags=tags, resume_run_id=run_id, parent_run_id=parent_run_id) if ctx.is_main else NullTracker()
        with tracker:
            if ctx.is_main:
                (out / "run.json").write_text(json.dumps({"stage": "pretrain", "mlflow_run_id": tracker.run_id, "tracking_uri": tracker.uri, "data": str(s.manifest.root)}, indent=2))
            if start_step == 0:
                tracker.log_params(flatten(resolved))
                tracker.log_params({"plan." + k: v for k, v in flatten(s.plan.to_dict()).items()})
                tracker.log_params({"n_train_cases": len(s.train_cases), "n_val_cases": len(s.val_cases), "n_train_labels": len(s.items), "device": device.type, "world_size": ctx.world_size})
                tracker.log_dataset(s.manifest)
                for name in ("plan.json", "config.yaml", "dataset.json"):
                    tracker.log_artifact(out / name)

            def log(step, parts):
                tracker.log_metrics({f"train/{k}": v for k, v in parts.items()}, step=step)

            def validate(step):
                if not val_targets:
                    return None
                scores = expert_dice(net, cache=val_cache, targets=val_targets, class_names=s.plan.class_names, patch_size=s.plan.patch_size, device=device, sw_batch_size=cfg.predict.sw_batch_size)
                tracker.log_metrics(_dice_metrics("val", scores), step=step)
                if on_validate is not None:
                    on_validate(step, scores)
                return scores

            def checkpoint(step):
                checkpoints.save(step, {"model": net.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step, "rng": rng_state(), "experts": s.experts})

            main = ctx.is_main
            loader = DataLoader(dataset, batch_sampler=list(sampler.iterate(start_step, cfg.train.steps, rank=ctx.rank, world_size=ctx.world_size)), collate_fn=collate_batch, num_workers=cfg.train.num_workers, pin_memory=device.type == "cuda")
            fit(
                model=model,
                loss_fn=loss_fn,
                optimizers=[optimizer],
                schedules=[schedule],
                batches=loader,
                start_step=start_step,
                steps=cfg.train.steps,
                device=device,
                grad_clip=cfg.train.grad_clip,
                amp=cfg.train.amp,
                callbacks=Callbacks(on_log=log if main else None, on_validate=validate if main else None, on_checkpoint=checkpoint if main else None, log_every=cfg.train.log_every, val_every=cfg.train.val_every, checkpoint_every=cfg.train.checkpoint_every),
                progress=progress and main,
                desc="pretrain",
            )
            train_seconds = time.perf_counter() - t_start
            digests = replica_digests(net, ctx)
            if ctx.enabled:
                tracker.set_tags({"replicas_in_sync": str(len(set(digests)) == 1).lower()})
                tracker._local("replicas", digests=digests)
                if len(set(digests)) != 1:
                    raise RuntimeError(f"distributed replicas diverged: parameter digests {digests}")
            if not main:
                return {}

            # --- final scores on the test labels ---------------------------------------------
            test = score_on_test(net, s.manifest, s.plan, s.rows, device=device, sw_batch_size=cfg.predict.sw_batch_size)
            tracker.log_metrics(_dice_metrics("test", test), step=cfg.train.steps)
            bundle_experts = ["pooled"] if cfg.sampling.pool_experts else s.experts
            bundle = ModelBundle(network=net, experts=bundle_experts, plan=s.plan, arch=s.arch, config=resolved, lineage={"dataset": s.manifest.spec.name, "data_fingerprint": s.manifest.fingerprint(), "mlflow_run_id": tracker.run_id})
            save_bundle(out / "model", bundle)
            tracker.log_artifact(out / "model", "model")
            model_name = cfg.tracking.model_name or registry_name(s.manifest.spec.name)
            version = None
            if cfg.tracking.register:
                version = tracker.register_model(artifact_path="model", name=model_name, alias="pooled" if cfg.sampling.pool_experts else "pretrained", tags={"stage": "pretrain", **tags, "model_id": bundle.model_id})
            summary = {
                "stage": "pretrain",
                "out": str(out.resolve()),
                "model": str((out / "model").resolve()),
                "experts": s.experts,
                "test_dice": test,
                "seconds": round(time.perf_counter() - t_start, 1),
                "train_seconds": round(train_seconds, 1),
                "world_size": ctx.world_size,
                "mlflow_run_id": tracker.run_id,
                "registered": {"name": model_name, "version": version} if version else None,
            }
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            tracker.log_artifact(out / "summary.json")
            tracker.log_artifact(out / "tracking.jsonl")
        _print_summary(summary, tracker)
        return summary
    finally:
        ctx.close()


def registry_name(dataset_name: str) -> str:
    """A registry-safe model name: ``expertseg-<dataset>`` without ``/ : . % " '``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in (dataset_name or "dataset"))
    return f"expertseg-{safe}"


def score_on_test(net, manifest, plan, rows: dict[str, int], *, device, sw_batch_size: int = 2, extra: dict[str, tuple[str, int]] | None = None) -> dict:
    """Dice per expert and class on ``labelsTs`` (dense labels of the experts in ``rows``).

    ``extra`` scores more rows in the same pass: ``{key: (label expert, row)}``, reported under key.
    """
    from experts.data.datasets import VolumeCache
    from experts.training.validation import Target, expert_dice

    targets = _dense_targets(manifest, manifest.case_ids("test"), rows, split="test")
    for key, (label_expert, row) in (extra or {}).items():
        for case, pairs in targets.items():
            if any(e == label_expert for e, _ in pairs):
                pairs.append(Target(label_expert, row, key))
    if not targets:
        return {}
    cache = VolumeCache(plan, images={c: manifest.cases[c].images for c in targets}, labels={(c, t[0]): manifest.label(c, t[0]).path for c, pairs in targets.items() for t in pairs}, pad=False)
    return expert_dice(net, cache=cache, targets=targets, class_names=plan.class_names, patch_size=plan.patch_size, device=device, sw_batch_size=sw_batch_size)


def _dense_targets(manifest, cases, rows: dict[str, int], *, split: str) -> dict[str, list[tuple[str, int]]]:
    targets: dict[str, list[tuple[str, int]]] = {}
    for c in cases:
        for e, row in rows.items():
            lf = manifest.label(c, e)
            if lf is not None and lf.kind == "dense" and lf.split == split:
                targets.setdefault(c, []).append((e, row))
    return targets


def _dice_metrics(prefix: str, scores: dict) -> dict:
    out = {}
    for expert, per_class in scores.items():
        for cls, v in per_class.items():
            out[f"{prefix}/dice/{expert}" if cls == "mean" else f"{prefix}/dice/{expert}/{cls}"] = v
    if scores:
        out[f"{prefix}/dice_mean"] = sum(v["mean"] for v in scores.values()) / len(scores)
    return out


def _print_summary(summary: dict, tracker: Tracker) -> None:
    click.echo(f"pretraining finished in {summary['seconds']:.0f} s")
    if summary["test_dice"]:
        click.echo("test Dice per expert (mean over classes):")
        for e, v in summary["test_dice"].items():
            click.echo(f"  {e}: {v['mean']:.3f}  " + "  ".join(f"{k}={x:.3f}" for k, x in v.items() if k != "mean"))
    click.echo(f"run folder: {summary['out']}")
    click.echo(f"model: {summary['model']}")
    if summary.get("registered"):
        r = summary["registered"]
        click.echo(f"registered: models:/{r['name']}/{r['version']}")
    click.echo(tracker.ui_hint())
