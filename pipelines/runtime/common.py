"""Small helpers shared by the stages: devices, seeds, output folders, expert selection."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np

from experts.errors import ConfigError, DatasetError

__all__ = ["select_device", "seed_everything", "check_out", "open_out", "prepare_out", "run_identity", "check_checkpoint", "config_hash", "staged", "select_experts", "parse_list", "OUTPUTS"]


def select_device(name: str | None = None):
    """CUDA when present (or the named device); nothing hard-coded."""
    import torch

    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int, *, deterministic: bool = False, threads: int = 0) -> None:
    """Seed python, numpy and torch; optionally deterministic algorithms and a fixed thread count."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


#: what each command writes at the top of its --out folder: --overwrite removes these, nothing else
OUTPUTS = {
    "pretrain": ("run.json", "config.yaml", "plan.json", "data_manifest.json", "dataset.json", "checkpoints", "model", "summary.json", "tracking.jsonl"),
    "adapt": ("run.json", "config.yaml", "scribbles", "checkpoints", "holdout.json", "adapter", "model", "summary.json", "tracking.jsonl"),
    "compare": ("report.html", "compare.json", "model_vs_labels.csv", "labels_vs_labels.csv", "model_vs_model.csv", "consensus.csv", "figures", "tracking.jsonl"),
}


def check_out(out: str | Path, *, command: str, resume: bool = False, overwrite: bool = False, marker: str = "run.json") -> Path:
    """Check an output folder before anything is created or changed; returns its absolute path.

    Refused: a location in, over or around a dataset (:func:`experts.data.check_output_location`),
    a folder holding files without ``--resume``/``--overwrite``, ``--resume`` without a run to
    resume, and ``--overwrite`` of a folder that holds other files than the command's own outputs
    is allowed but leaves those files alone.
    """
    from experts.data.locations import check_output_location

    path = check_output_location(out, what=f"{command} outputs")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run, or start it anew")
    busy = path.is_dir() and any(path.iterdir())
    if busy and not (resume or overwrite):
        what = "an earlier run" if (path / marker).exists() else "files"
        raise ConfigError(f"{out}: already holds {what}; pass --resume to continue it, --overwrite to replace it, or choose another --out")
    if resume and not (path / marker).exists():
        raise ConfigError(f"{out}: no run to resume (no {marker}); start it without --resume")
    return path


def open_out(path: Path, *, command: str, overwrite: bool = False) -> Path:
    """Create the checked folder; with ``overwrite``, first remove the command's own outputs from an
    earlier run (its checkpoints included, so a new run never resumes the old one)."""
    import shutil

    if overwrite and path.is_dir():
        for entry in path.iterdir():
            if entry.name in OUTPUTS[command]:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def prepare_out(out: str | Path, *, command: str, resume: bool = False, overwrite: bool = False, marker: str = "run.json") -> Path:
    """:func:`check_out` then :func:`open_out`, for commands with nothing else to check first."""
    return open_out(check_out(out, command=command, resume=resume, overwrite=overwrite, marker=marker), command=command, overwrite=overwrite)


@contextlib.contextmanager
def staged(out: str | Path):
    """Write a multi-file output into a temporary folder beside ``out``; move every file into ``out``
    only when the block ends without error (a failure leaves ``out`` as it was)."""
    import os
    import shutil
    import uuid

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        yield stage
        if not out.exists():
            os.replace(stage, out)
            return
        for f in sorted(p for p in stage.rglob("*") if p.is_file()):
            dst = out / f.relative_to(stage)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def config_hash(cfg, extra: dict | None = None) -> str:
    """What a run computes depends on: its resolved config without the tracking section, and
    ``extra`` choices made outside the config (the experts and cases a pretraining uses)."""
    import hashlib
    import json

    from pipelines.runtime.config import config_to_dict

    data = {**{k: v for k, v in config_to_dict(cfg).items() if k != "tracking"}, **(extra or {})}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_identity(out: Path, cfg, *, resume: bool, extra: dict | None = None) -> dict:
    """``{"run_uid", "config_hash"}`` of the run in ``out``: a new one, or (``resume``) the one in its
    ``run.json``, whose config must be the same as now."""
    import json
    import uuid

    digest = config_hash(cfg, extra)
    if not resume:
        return {"run_uid": uuid.uuid4().hex, "config_hash": digest}
    earlier = json.loads((out / "run.json").read_text())
    if earlier.get("config_hash") not in (None, digest):
        raise ConfigError(f"{out}: the run to resume was started with another config or other experts (hash {earlier['config_hash']}, now {digest}); resume with the same --config, --set and --experts, or start anew with --overwrite")
    return {"run_uid": earlier.get("run_uid") or uuid.uuid4().hex, "config_hash": digest}


def check_checkpoint(state: dict | None, identity: dict, folder: Path) -> None:
    """A checkpoint written by another run (another run id) is refused, never resumed."""
    if state is not None and state.get("run_uid") not in (None, identity["run_uid"]):
        raise ConfigError(f"{folder}: holds checkpoints of another run ({state['run_uid'][:8]}, not {identity['run_uid'][:8]}); start anew with --overwrite")


def parse_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def select_experts(manifest, *, include: list[str] | None, exclude: list[str] | None) -> list[str]:
    """The experts taking part: ``include``, or every expert not marked new, minus ``exclude``."""
    known = manifest.experts
    for name in (include or []) + (exclude or []):
        if name not in known:
            raise DatasetError(f"{manifest.root}: no expert {name!r}; the dataset has {', '.join(known)}")
    chosen = list(include) if include else [e for e in known if e not in manifest.new_experts]
    chosen = [e for e in known if e in chosen and e not in (exclude or [])]
    if not chosen:
        raise DatasetError(f"{manifest.root}: no expert left to train on; check --experts / --exclude-experts")
    return chosen
