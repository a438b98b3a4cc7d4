"""``expertseg pretrain``: one network, every expert's labels, dense and scribbled.

Data flow: dataset -> plan -> cached volumes -> expert-balanced sampler -> seeded patches ->
network(image, expert) -> partial loss -> :func:`experts.training.loop.fit` -> tracker. The run
folder holds the plan, the resolved config, checkpoints, the local log and the model bundle; MLflow
gets the same and registers the bundle with alias ``pretrained``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
import yaml

from experts.bundle import ModelBundle, save_bundle

from experts.errors import ConfigError, DatasetError
from pipelines.runtime.common import check_checkpoint, check_out, open_out, run_identity, seed_everything, select_device, select_experts
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
    model_experts: list | None = None  #: the model's rows when they are not the trained experts (interactive)
    base_model_id: str = ""  #: the pretrained model an interactive one starts from (its automatic network)


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
    unknown = sorted(set(cfg.sampling.expert_weights) - set(experts))
    if unknown:
        raise ConfigError(f"sampling.expert_weights names {', '.join(unknown)}, not among the experts trained on ({', '.join(experts)}); fix the names or drop them")
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
    if cfg.network.attention:
        arch["kwargs"]["attention"] = dict(cfg.network.attention)
    torch.manual_seed(cfg.seed)
    try:
        network = create_network(
            cfg.network.name,
            in_channels=manifest.spec.num_channels,
            num_classes=manifest.spec.num_classes,
            num_experts=1 if cfg.sampling.pool_experts else len(experts),
            **arch["kwargs"],
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"network: {str(err).splitlines()[0][:300]}") from None
    try:
        plan = make_plan(manifest, divisor=network.divisor, spacing=cfg.data.spacing, patch_size=cfg.data.patch_size, max_patch_size=cfg.data.max_patch_size, normalization=cfg.data.normalization)
        network.check_input_size(plan.patch_size)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"data: {str(err).splitlines()[0][:300]}") from None
    s = PretrainSetup(cfg, manifest, experts, rows, plan, network, train_cases, val_cases, items, arch)
    return _interactive_setup(cfg, s) if cfg.interactive.model else s


def _interactive_setup(cfg: Config, s: PretrainSetup) -> PretrainSetup:
    """Interactive training: the promptable counterpart of the pretrained model ``interactive.model``
    (its plan, experts and rows; the pretrained model itself is left as it is)."""
    from experts.interactive.building import promptable_bundle
    from experts.interactive.prompts import PromptEncoding
    from experts.training.sampling import SampleItem
    from pipelines.runtime.models import load_model

    i = cfg.interactive
    base = load_model(i.model)
    missing = [e for e in s.experts if e not in base.experts]
    if missing:
        raise ConfigError(f"interactive.model {i.model} has no row for {', '.join(missing)}; train on its experts ({', '.join(base.experts)}) with --experts, or adapt it first")
    if list(base.plan.class_names) != list(s.manifest.spec.class_names):
        raise ConfigError(f"interactive.model {i.model} segments {', '.join(base.plan.class_names)}, not this dataset's classes")
    bundle = promptable_bundle(base, encoding=PromptEncoding(click_radius=i.click_radius, scribble_radius=i.scribble_radius, decay=i.decay))
    rows = {e: base.row(e) for e in s.experts}
    items = [SampleItem(it.case, it.expert, it.kind, rows[it.expert]) for it in s.items]
    net = bundle.network
    net.check_input_size(bundle.plan.patch_size)
    return dataclasses.replace(s, rows=rows, plan=bundle.plan, network=net, items=items, arch=bundle.arch, val_cases=[], model_experts=list(base.experts),
                               base_model_id=bundle.lineage["base_model_id"])


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
    interactive: str | None = None,
) -> dict:
    """Run multi-expert pretraining; returns the run summary (also written to ``<out>/summary.json``).

    Launched by ``torchrun``, every process trains its share of each global batch (DDP); rank 0
    alone logs, validates, writes checkpoints and the model.

    Args:
        parent_run_id: attach the MLflow run under this parent (tuning trials).
        on_validate: called with ``(step, scores)`` after each validation (pruning hooks may raise).
        register: override ``tracking.register``.
        interactive: train a promptable model from this pretrained model (``interactive.model``).
    """
    from pipelines.runtime.distributed import init_distributed

    t_start = time.perf_counter()
    cfg = _run_config(config_path, overrides, tracking=tracking, register=register, interactive=interactive)
    Tracker.probe(cfg)
    ctx = init_distributed()
    try:
        out = check_out(out, command="pretrain", resume=resume, overwrite=overwrite)
        seed_everything(cfg.seed, deterministic=cfg.train.deterministic, threads=cfg.train.threads)
        s = setup_pretraining(cfg, data, include=include, exclude=exclude, cases=cases)  # every check, before anything is written
        if ctx.is_main:
            open_out(out, command="pretrain", overwrite=overwrite)
        ctx.barrier()
        run = _Run.build(cfg, s, out=out, ctx=ctx, progress=progress, identity=run_identity(out, cfg, resume=resume, extra={"experts": s.experts, "cases": s.train_cases if cases is not None else None}))
        start_step, run_id = run.restore() if resume else (0, None)
        tracker = _tracker(cfg, s, out=out, ctx=ctx, run_id=run_id, parent_run_id=parent_run_id)
        with tracker:
            if ctx.is_main:
                _log_start(tracker, cfg, s, out=out, device=run.device, ctx=ctx, new=start_step == 0, identity=run.identity)
            run.train(tracker, start_step=start_step, on_validate=on_validate)
            train_seconds = time.perf_counter() - t_start
            _check_replicas(run.net, ctx, tracker)
            if not ctx.is_main:
                return {}
            summary = _finish(cfg, s, out=out, run=run, tracker=tracker, ctx=ctx, seconds=(time.perf_counter() - t_start, train_seconds))
        _print_summary(summary, tracker)
        return summary
    finally:
        ctx.close()


def _run_config(config_path, overrides, *, tracking, register, interactive) -> Config:
    """The config with the command line's own settings applied."""
    cfg = load_config(config_path, overrides)
    if tracking:
        cfg.tracking.backend = tracking
    if register is not None:
        cfg.tracking.register = register
    if interactive:
        cfg.interactive.model = interactive
    return cfg


@dataclass
class _Run:
    """The parts of one pretraining run: network, shared training set-up, optimiser, checkpoints."""

    cfg: Config
    s: PretrainSetup
    out: Path
    ctx: object
    device: object
    net: object
    model: object
    setup: object
    optimizer: object
    schedule: object
    checkpoints: object
    val_targets: dict
    val_cache: object
    progress: bool
    identity: dict

    @classmethod
    def build(cls, cfg: Config, s: PretrainSetup, *, out: Path, ctx, progress: bool, identity: dict) -> "_Run":
        import torch

        from experts.data.datasets import VolumeCache
        from experts.training.checkpoint import CheckpointDir
        from experts.training.schedule import make_optimizer, make_schedule, param_groups
        from experts.training.setup import build_training
        from experts.training.validation import dense_targets

        device = torch.device(f"cuda:{ctx.local_rank}") if torch.cuda.is_available() and ctx.enabled else select_device()
        net = s.network.to(device)
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) if ctx.enabled else net
        if ctx.is_main:
            _write_run_files(out, cfg, s)
        m, t = s.manifest, cfg.train
        train_cache = VolumeCache(s.plan, images={c: m.cases[c].images for c in s.train_cases}, labels={(it.case, it.expert): m.label(it.case, it.expert).path for it in s.items}, pad=True, cache=cfg.data.cache, progress=progress and ctx.is_main)
        val_targets = dense_targets(m, s.val_cases, s.rows, split="train") if ctx.is_main and s.val_cases else {}
        val_cache = VolumeCache(s.plan, images={c: m.cases[c].images for c in val_targets}, labels={(c, e): m.label(c, e).path for c, pairs in val_targets.items() for e, _ in pairs}, pad=False, cache=cfg.data.cache)
        setup = build_training(plan=s.plan, cache=train_cache, items=s.items, network=net, batch_size=t.batch_size * ctx.world_size, seed=cfg.seed, loss_terms=cfg.loss.terms, augment=dataclasses.asdict(cfg.augment), expert_weights=cfg.sampling.expert_weights, kind_weights=cfg.sampling.kind_weights, device=device, one_target_class=bool(cfg.interactive.model))
        optimizer = make_optimizer(param_groups(net, lr=t.lr, weight_decay=t.weight_decay, style_lr_scale=t.style_lr_scale), name=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum)
        schedule = make_schedule(optimizer, name=t.schedule, steps=t.steps, warmup_steps=t.warmup_steps)
        return cls(cfg, s, out, ctx, device, net, model, setup, optimizer, schedule, CheckpointDir(out / "checkpoints"), val_targets, val_cache, progress, identity)

    def state(self, step: int) -> dict:
        from experts.training.checkpoint import rng_state

        return {"model": self.net.state_dict(), "loss": self.setup.loss.state_dict(), "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(), "step": step, "rng": rng_state(), "experts": self.s.experts, **self.identity}

    def restore(self) -> tuple[int, str | None]:
        """Continue from the newest valid checkpoint: ``(step, MLflow run id)``."""
        from experts.training.checkpoint import set_rng_state

        state, problems = self.checkpoints.latest_valid()
        for p in problems if self.ctx.is_main else []:
            click.echo(f"warning: skipped damaged checkpoint: {p}", err=True)
        run_id = json.loads((self.out / "run.json").read_text()).get("mlflow_run_id")
        check_checkpoint(state, self.identity, self.checkpoints.folder)
        if state is None:
            return 0, run_id
        self.net.load_state_dict(state["model"])
        self.setup.loss.load_state_dict(state.get("loss", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        set_rng_state(state["rng"])
        if self.ctx.is_main:
            click.echo(f"resuming from step {int(state['step'])}")
        return int(state["step"]), run_id

    def validate(self, step: int, tracker, on_validate=None):
        from experts.training.validation import expert_dice

        if not self.val_targets:
            return None
        plan = self.s.plan
        scores = expert_dice(self.net, cache=self.val_cache, targets=self.val_targets, class_names=plan.class_names, patch_size=plan.patch_size, device=self.device, sw_batch_size=self.cfg.predict.sw_batch_size)
        tracker.log_metrics(_dice_metrics("val", scores), step=step)
        if on_validate is not None:
            on_validate(step, scores)
        return scores

    def train(self, tracker, *, start_step: int, on_validate=None) -> None:
        from experts.training.loop import Callbacks, fit

        t, main = self.cfg.train, self.ctx.is_main
        callbacks = Callbacks(
            on_log=(lambda step, parts: tracker.log_metrics({f"train/{k}": v for k, v in parts.items()}, step=step)) if main else None,
            on_validate=(lambda step: self.validate(step, tracker, on_validate)) if main else None,
            on_checkpoint=(lambda step: self.checkpoints.save(step, self.state(step))) if main else None,
            log_every=t.log_every,
            val_every=t.val_every,
            checkpoint_every=t.checkpoint_every,
        )
        loader = self.setup.loader(start_step, t.steps, rank=self.ctx.rank, world_size=self.ctx.world_size, num_workers=t.num_workers, pin_memory=self.device.type == "cuda")
        if self.cfg.interactive.model:
            loader = _interactive_batches(self.cfg, self.net, loader, plan=self.s.plan, start_step=start_step, rank=self.ctx.rank, device=self.device)
        fit(model=self.model, loss_fn=self.setup.loss, optimizers=[self.optimizer], schedules=[self.schedule], batches=loader, start_step=start_step, steps=t.steps, device=self.device, grad_clip=t.grad_clip, amp=t.amp, cpu_bf16=t.cpu_bf16, callbacks=callbacks, progress=self.progress and main, desc="pretrain")


def _interactive_batches(cfg: Config, net, loader, *, plan, start_step: int, rank: int, device):
    from experts.interactive.prompts import PromptEncoding
    from experts.interactive.simulate import InteractionSimulator, interactive_batches

    i = cfg.interactive
    try:
        sim = InteractionSimulator(rounds=i.rounds, no_prompt=i.no_prompt, first=tuple(i.first), scribble_corrections=i.scribble_corrections, other_prior=i.other_prior, encoding=PromptEncoding(click_radius=i.click_radius, scribble_radius=i.scribble_radius, decay=i.decay))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return interactive_batches(loader, net, sim, num_classes=plan.num_classes, seed=cfg.seed, start_step=start_step, rank=rank, device=device)


def _write_run_files(out: Path, cfg: Config, s: PretrainSetup) -> None:
    (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    s.plan.save(out / "plan.json")
    # the dataset's description as this run saw it; named so that a run folder is never taken for a dataset
    (out / "data_manifest.json").write_text(json.dumps({"root": str(s.manifest.root), "fingerprint": s.manifest.fingerprint(), "labels": s.manifest.records()}, indent=1))


def _tags(cfg: Config, s: PretrainSetup, world_size: int) -> dict:
    return {
        "dataset": s.manifest.spec.name,
        "experts": ",".join(s.experts),
        "label_kinds": ",".join(sorted({it.kind for it in s.items})),
        "pooled": str(cfg.sampling.pool_experts).lower(),
        "world_size": world_size,
    }


def _tracker(cfg: Config, s: PretrainSetup, *, out: Path, ctx, run_id, parent_run_id):
    """The run's tracker on rank 0, a null tracker elsewhere."""
    from pipelines.runtime.tracking import NullTracker

    if not ctx.is_main:
        return NullTracker()
    return Tracker(run_dir=out, stage="pretrain", backend=cfg.tracking.backend, experiment=cfg.tracking.experiment, run_name=out.name, tags=_tags(cfg, s, ctx.world_size), resume_run_id=run_id, parent_run_id=parent_run_id)


def _log_start(tracker, cfg: Config, s: PretrainSetup, *, out: Path, device, ctx, new: bool, identity: dict) -> None:
    """``run.json`` (the MLflow run to resume), and on a new run its parameters and inputs."""
    (out / "run.json").write_text(json.dumps({"stage": "pretrain", "mlflow_run_id": tracker.run_id, "tracking_uri": tracker.uri, "data": str(s.manifest.root), **identity}, indent=2))
    if not new:
        return
    tracker.log_params(flatten(config_to_dict(cfg)))
    tracker.log_params({"plan." + k: v for k, v in flatten(s.plan.to_dict()).items()})
    tracker.log_params({"n_train_cases": len(s.train_cases), "n_val_cases": len(s.val_cases), "n_train_labels": len(s.items), "device": device.type, "world_size": ctx.world_size})
    tracker.log_dataset(s.manifest)
    for name in ("plan.json", "config.yaml", "data_manifest.json"):
        tracker.log_artifact(out / name)


def _check_replicas(net, ctx, tracker) -> None:
    """Under DDP, every replica must end with the same weights."""
    from pipelines.runtime.distributed import replica_digests

    digests = replica_digests(net, ctx)
    if ctx.enabled:
        tracker.set_tags({"replicas_in_sync": str(len(set(digests)) == 1).lower()})
        tracker._local("replicas", digests=digests)
        if len(set(digests)) != 1:
            raise RuntimeError(f"distributed replicas diverged: parameter digests {digests}")


def _finish(cfg: Config, s: PretrainSetup, *, out: Path, run: _Run, tracker, ctx, seconds: tuple[float, float]) -> dict:
    """Test scores, the model bundle (saved, logged, registered) and the summary."""
    from experts.training.validation import score_test_cases
    from pipelines.runtime.store import registry_name

    interactive = bool(cfg.interactive.model)  # scored by evaluate-interactive instead
    test = {} if interactive else score_test_cases(run.net, s.manifest, s.plan, s.rows, device=run.device, sw_batch_size=cfg.predict.sw_batch_size)
    tracker.log_metrics(_dice_metrics("test", test), step=cfg.train.steps)
    experts = ["pooled"] if cfg.sampling.pool_experts else s.model_experts or s.experts
    lineage = {"dataset": s.manifest.spec.name, "data_fingerprint": s.manifest.fingerprint(), "mlflow_run_id": tracker.run_id, **({"base_model": cfg.interactive.model, "base_model_id": s.base_model_id} if interactive else {})}
    bundle = ModelBundle(network=run.net, experts=experts, plan=s.plan, arch=s.arch, config=config_to_dict(cfg), lineage=lineage)
    save_bundle(out / "model", bundle)
    tracker.log_artifact(out / "model", "model")
    model_name = cfg.tracking.model_name or registry_name(s.manifest.spec.name)
    version = None
    if cfg.tracking.register:
        alias = "pooled" if cfg.sampling.pool_experts else "interactive" if interactive else "pretrained"
        version = tracker.register_model(artifact_path="model", name=model_name, alias=alias, tags={"stage": "pretrain", **_tags(cfg, s, ctx.world_size), "model_id": bundle.model_id})
    summary = {
        "stage": "pretrain",
        "out": str(out.resolve()),
        "model": str((out / "model").resolve()),
        "experts": s.experts,
        "val_cases": s.val_cases,  # never trained on: where settings can be chosen (evaluate-interactive --split train --cases)
        "test_dice": test,
        "seconds": round(seconds[0], 1),
        "train_seconds": round(seconds[1], 1),
        "world_size": ctx.world_size,
        "mlflow_run_id": tracker.run_id,
        "registered": {"name": model_name, "version": version} if version else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    tracker.log_artifact(out / "summary.json")
    tracker.log_artifact(out / "tracking.jsonl")
    return summary


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
