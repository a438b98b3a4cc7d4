"""Checkpoints that survive crashes and refuse to load when damaged.

A checkpoint is a plain ``torch.save`` file plus a ``.sha256`` file beside it. Both are written
atomically (temporary file, fsync, rename); a file whose content does not match its checksum is
reported, never loaded. Loading always uses ``torch.load(weights_only=True)``: a checkpoint is data
and cannot run code. Training keeps the newest few checkpoints, so a crash while writing one leaves
the previous one usable.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from experts.errors import ModelFileError

__all__ = [
    "atomic_write_bytes",
    "save_checked",
    "load_checked",
    "file_digest",
    "CheckpointDir",
    "rng_state",
    "set_rng_state",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checked(path: str | os.PathLike, payload) -> str:
    """``torch.save`` ``payload`` atomically with a checksum file; return the sha256."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = Path(path)
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest


def load_checked(path: str | os.PathLike, *, map_location="cpu"):
    """Verify the checksum, then ``torch.load(weights_only=True)``.

    Raises:
        ModelFileError: missing file or checksum, checksum mismatch, or a file that is not a
            weights-only torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    sums = path.with_name(path.name + ".sha256")
    if not sums.is_file():
        raise ModelFileError(f"{path}: no checksum file {sums.name} beside it; the file may be incomplete or not written by expertseg")
    expected = sums.read_text().split()[0] if sums.read_text().split() else ""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise ModelFileError(f"{path}: checksum mismatch, the file is corrupt or was changed; use an earlier checkpoint or retrain")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ModelFileError(f"{path}: cannot be loaded as plain tensors ({type(err).__name__}); it is not an expertseg file") from None


class CheckpointDir:
    """``step_XXXXXXX.pt`` files in one folder, the newest ``keep`` kept.

    Args:
        folder: where checkpoints live.
        keep: how many to keep (at least 2, so a crash mid-write leaves a good one).
    """

    PATTERN = re.compile(r"step_(\d+)\.pt")

    def __init__(self, folder: str | os.PathLike, keep: int = 2):
        self.folder = Path(folder)
        self.keep = max(2, keep)

    def save(self, step: int, payload) -> Path:
        path = self.folder / f"step_{step:07d}.pt"
        save_checked(path, payload)
        for old in self.steps()[: -self.keep]:
            for p in (self.folder / f"step_{old:07d}.pt", self.folder / f"step_{old:07d}.pt.sha256"):
                p.unlink(missing_ok=True)
        return path

    def steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m[1]) for p in self.folder.iterdir() if (m := self.PATTERN.fullmatch(p.name)))

    def latest_valid(self) -> tuple[dict | None, list[str]]:
        """The newest checkpoint that verifies, and one line per damaged one skipped."""
        problems = []
        for step in reversed(self.steps()):
            try:
                return load_checked(self.folder / f"step_{step:07d}.pt"), problems
            except ModelFileError as err:
                problems.extend(err.problems)
        return None, problems


def rng_state() -> dict:
    """Every random state: torch (CPU and CUDA), numpy, python. Plain data for weights-only loading."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _py_state_to_list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate(_py_state_from_list(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state_from_list(state):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
