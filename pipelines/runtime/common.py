"""Small helpers shared by the stages: devices, seeds, output folders, expert selection."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from experts.errors import ConfigError, DatasetError

__all__ = ["select_device", "seed_everything", "prepare_out", "select_experts", "parse_list"]


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


def prepare_out(out: str | Path, *, resume: bool = False, overwrite: bool = False, marker: str = "run.json") -> Path:
    """Create ``out``; refuse to start over an earlier run unless resuming or overwriting."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        what = "an earlier run" if (out / marker).exists() else "files"
        raise ConfigError(f"{out}: already holds {what}; pass --resume to continue it, --overwrite to replace it, or choose another --out")
    if resume and not (out / marker).exists():
        raise ConfigError(f"{out}: no run to resume (no {marker}); start it without --resume")
    out.mkdir(parents=True, exist_ok=True)
    return out


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
