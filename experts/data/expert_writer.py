"""Add one expert's labels to an existing dataset, all at once or not at all (DATASET_SPEC rule 11).

An :class:`ExpertWriter` stages the expert's files in a hidden folder of the dataset
(``<dataset>/.expertseg/staging-*``, on the same filesystem so that moving is a rename) and
:meth:`~ExpertWriter.commit` moves them into ``labelsTr/<expert>/`` and ``labelsTs/<expert>/``,
writes the expert's log beside the labels' folders (``<dataset>/.expertseg/<log>``, never inside a
label folder) and updates ``dataset.json`` atomically (:func:`~experts.data.spec_edit.set_expert_entry`).
If anything fails before or during the commit, the dataset is left as it was: nothing outside the
staging folder is written before the commit, and a failing commit moves everything back.

Example:
    >>> check_new_expert(root, "drnew-line")            # refuse early, before any work
    >>> with ExpertWriter(root, "drnew-line") as writer:
    ...     writer.write(split="train", case="case01", array=partial, affine=affine)
    ...     added = writer.commit(entry={"description": "...", "role": "new"}, log={...}, log_kind="scribbles")
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experts.data.manifest import SPLITS
from experts.data.nifti import save_volume
from experts.data.spec import read_spec, valid_id
from experts.data.spec_edit import set_expert_entry
from experts.errors import DatasetError

__all__ = ["META_DIR", "LOG_KINDS", "AddedExpert", "ExpertWriter", "check_new_expert", "expert_entry", "log_path"]

#: hidden folder of a dataset for logs of the tools that changed it (outside every label folder)
META_DIR = ".expertseg"
#: the tools that log how they made an expert, as ``.expertseg/<kind>-<expert>.json``
LOG_KINDS = ("scribbles", "import")


def log_path(root: str | Path, kind: str, expert: str) -> Path:
    """``<root>/.expertseg/<kind>-<expert>.json``: how expert ``expert`` was made."""
    if kind not in LOG_KINDS:
        raise ValueError(f"log kind must be one of {', '.join(LOG_KINDS)}, got {kind!r}")
    return Path(root) / META_DIR / f"{kind}-{expert}.json"


@dataclass(frozen=True)
class AddedExpert:
    """What an added expert received.

    Attributes:
        root: the dataset folder now holding the expert.
        expert: its id.
        train: cases written to ``labelsTr/<expert>/``; ``test``: to ``labelsTs/<expert>/``.
        log: the log file (under ``<root>/.expertseg/``), or ``None``.
        warnings: files left out, one line each.
    """

    root: Path
    expert: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    log: Path | None
    warnings: tuple[str, ...] = ()


def expert_entry(description: str, role: str | None) -> dict:
    """A ``dataset.json`` expert entry; ``role`` ``"new"`` or ``None``/``"pretrain"`` (no role key)."""
    if role not in (None, "new", "pretrain"):
        raise DatasetError(f"role {role!r}: choose 'new' (kept out of pretraining) or 'pretrain'")
    return {"description": description, **({"role": "new"} if role == "new" else {})}


def check_new_expert(root: str | Path, expert: str, *, overwrite: bool = False) -> None:
    """Refuse an invalid id, or one the dataset already has (declared or a folder) unless ``overwrite``.

    Raises:
        DatasetError: one line naming the expert and the fix.
    """
    root = Path(root)
    if not valid_id(expert):
        raise DatasetError(f'expert id "{expert}" is not allowed; use letters, digits, "_" and "-" (pattern [A-Za-z0-9][A-Za-z0-9_-]*)')
    spec = read_spec(root)
    folders = [root / lab / expert for _, lab in SPLITS.values() if (root / lab / expert).exists()]
    if (expert in (spec.experts or {}) or folders) and not overwrite:
        where = folders[0] if folders else root / "dataset.json"
        raise DatasetError(f"{where}: expert {expert!r} already exists; choose another id, or pass --overwrite to replace only its labels")


class ExpertWriter:
    """Stages one expert's label files in ``root`` and moves them in at :meth:`commit`.

    Args:
        root: the dataset folder (valid ``dataset.json``).
        expert: the new expert's id.
        overwrite: replace an existing expert of that id (only its label folders and entry).

    Use as a context manager: leaving the block without :meth:`commit` (an error) removes the
    staged files and leaves the dataset as it was.
    """

    def __init__(self, root: str | Path, expert: str, *, overwrite: bool = False):
        self.root = Path(root)
        self.expert = expert
        check_new_expert(self.root, expert, overwrite=overwrite)
        self.file_ending = read_spec(self.root).file_ending
        self.written: dict[str, list[str]] = {"train": [], "test": []}
        self.warnings: list[str] = []
        self._stage: Path | None = None
        self._made_meta = False

    def __enter__(self) -> "ExpertWriter":
        meta = self.root / META_DIR
        self._made_meta = not meta.exists()
        self._stage = meta / f"staging-{self.expert}-{uuid.uuid4().hex[:8]}"
        self._stage.mkdir(parents=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        meta = self.root / META_DIR
        if self._made_meta and meta.is_dir() and not any(meta.iterdir()):
            meta.rmdir()

    def write(self, *, split: str, case: str, array: np.ndarray, affine: np.ndarray) -> Path:
        """Stage ``case``'s label ``[X, Y, Z]`` (whole values, stored as uint8, uint16 beyond 255)."""
        array = np.asarray(array)
        dtype = np.uint8 if (int(array.max()) if array.size else 0) <= 255 else np.uint16
        return save_volume(self._target(split, case), array.astype(dtype), affine)

    def copy(self, *, split: str, case: str, source: str | Path) -> Path:
        """Stage a byte copy of an existing label file (same file ending as the dataset)."""
        path = self._target(split, case)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        return path

    def warn(self, line: str) -> None:
        self.warnings.append(line)

    def commit(self, *, entry: dict, log: dict | None = None, log_kind: str = "scribbles") -> AddedExpert:
        """Move the staged folders in, write ``log`` to :func:`log_path` (``log_kind``), then set
        ``experts[expert] = entry``. With ``overwrite``, the replaced expert's folders and logs go.

        Raises:
            DatasetError: nothing was staged; the dataset is unchanged.
        """
        if self._stage is None:
            raise RuntimeError("ExpertWriter.commit outside its 'with' block")
        if not any(self.written.values()):
            raise DatasetError(f"{self.root}: no label file to add for expert {self.expert!r}; nothing was written")
        pairs = [(self._stage / lab / self.expert, self.root / lab / self.expert) for _, lab in SPLITS.values()]
        for kind in LOG_KINDS:  # a replaced expert's log of another kind would describe labels that are gone
            target = log_path(self.root, kind, self.expert)
            pairs.append((self._stage / target.name, target))
            if kind == log_kind and log is not None:
                text = json.dumps(log, ensure_ascii=False, default=_plain, separators=(",", ":"))  # compact: per-case params add up
                (self._stage / target.name).write_text(text + "\n", encoding="utf-8")
        _swap_in(pairs, aside=self._stage / ".replaced", then=lambda: set_expert_entry(self.root, self.expert, entry))
        return AddedExpert(
            root=self.root,
            expert=self.expert,
            train=tuple(self.written["train"]),
            test=tuple(self.written["test"]),
            log=log_path(self.root, log_kind, self.expert) if log is not None else None,
            warnings=tuple(self.warnings),
        )

    def _target(self, split: str, case: str) -> Path:
        if self._stage is None:
            raise RuntimeError("ExpertWriter used outside its 'with' block")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not valid_id(case):
            raise DatasetError(f'case id "{case}" is not allowed; use letters, digits, "_" and "-"')
        if case in self.written[split]:
            raise DatasetError(f"case {case} would be written twice for expert {self.expert!r}; give each case one label file")
        self.written[split].append(case)
        return self._stage / SPLITS[split][1] / self.expert / f"{case}{self.file_ending}"


def _swap_in(pairs: list[tuple[Path, Path]], *, aside: Path, then) -> None:
    """Rename each staged path onto its target (existing targets moved to ``aside``), then call
    ``then()``; on any failure undo every rename, in reverse order, and re-raise."""
    done: list[tuple[Path, Path]] = []  # (from, to) renames performed
    made: list[Path] = []
    try:
        for i, (staged, target) in enumerate(pairs):
            if target.exists():
                aside.mkdir(parents=True, exist_ok=True)
                os.rename(target, aside / str(i))
                done.append((target, aside / str(i)))
            if staged.exists():
                if not target.parent.exists():
                    target.parent.mkdir(parents=True)
                    made.append(target.parent)
                os.rename(staged, target)
                done.append((staged, target))
        then()
    except BaseException:
        for src, dst in reversed(done):
            os.rename(dst, src)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


def _plain(value):
    """JSON for numpy scalars and arrays in logged parameters."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
