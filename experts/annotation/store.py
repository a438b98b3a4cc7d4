"""The dataset side of the annotation page: which cases the doctor saved, and saving one.

A save writes ``labelsTr/<expert>/<case><ending>`` (``labelsTs/`` for a test case) and nothing else
of the dataset but, for an expert ``dataset.json`` does not list yet, an atomic update adding
``{"role": "new"}`` for them (DATASET_SPEC rule 11). The label file is written atomically (a hidden
temporary file beside it, then a rename; ``data check`` skips hidden files). It never replaces a file
this page did not write: an expert's labels from elsewhere stay as they are.

Who saved what and when goes to ``<dataset>/annotations/<expert>/<case>.json`` (a list of saves: the
user, the time, the file, its SHA-256, dense or partial, the expert whose prediction the doctor
started from, the model, and every interaction in input voxels and world mm, rule 10). The folder
lies outside ``imagesTr``/``labelsTr``/``imagesTs``/``labelsTs``, which are all ``data check``
reads. Saves hold ``annotations/.lock`` (created exclusively), so a second save while one runs, from
this page or another process, is refused with :class:`SaveInProgress` instead of interleaving.

Example:
    >>> store = AnnotationStore("demo_data", "drme")
    >>> store.states()                       # {"sub011": "untouched", ...}
    >>> store.save("sub011", label, mode="dense", record={...})
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from experts.data.manifest import SPLITS, Manifest, geometry_problems, scan_dataset
from experts.data.nifti import save_volume
from experts.data.spec import valid_id
from experts.errors import DatasetError, shorten

__all__ = ["ANNOTATIONS_DIR", "STATES", "AnnotationStore", "SaveInProgress"]

#: the log folder of a dataset (outside every image and label folder)
ANNOTATIONS_DIR = "annotations"
#: a case's state on the page; ``locked``: the expert has a label there that this page did not write
STATES = ("untouched", "in progress", "saved", "locked")


class SaveInProgress(DatasetError):
    """Another save into the dataset holds its lock."""


class AnnotationStore:
    """One expert's annotations in one dataset.

    Args:
        root: the dataset folder (checked with :func:`~experts.data.manifest.scan_dataset`).
        expert: the annotating expert's id (a new one is added to ``dataset.json`` at the first save).
    """

    def __init__(self, root: str | Path, expert: str, *, manifest: Manifest | None = None):
        if not valid_id(expert):
            raise DatasetError(f'expert id {shorten(expert)} is not allowed; use letters, digits, "_" and "-" (pattern [A-Za-z0-9][A-Za-z0-9_-]*)')
        self.manifest = manifest if manifest is not None else scan_dataset(root)
        self.root = self.manifest.root
        self.expert = expert
        self.log_dir = self.root / ANNOTATIONS_DIR / expert

    # --- reading -------------------------------------------------------------------------------
    def case(self, case: str):
        """The :class:`~experts.data.manifest.CaseFiles` of ``case``; an unknown id is refused."""
        if not isinstance(case, str) or case not in self.manifest.cases:
            raise DatasetError(f"no case {shorten(case)} in {self.root}; pick one of the case list ({len(self.manifest.cases)} cases)")
        return self.manifest.cases[case]

    def label_path(self, case: str) -> Path:
        files = self.case(case)
        return self.root / SPLITS[files.split][1] / self.expert / f"{case}{self.manifest.spec.file_ending}"

    def log_of(self, case: str) -> dict | None:
        path = self.log_dir / f"{self.case(case).case}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def saved(self) -> list[str]:
        """Cases whose label this page wrote and which are still on disk, in case order."""
        return [c for c in sorted(self.manifest.cases) if self.log_of(c) and self.label_path(c).is_file()]

    def states(self) -> dict[str, str]:
        """``{case: "untouched" | "saved" | "locked"}`` from disk (the page adds ``in progress``)."""
        out = {}
        for c in sorted(self.manifest.cases):
            on_disk = self.label_path(c).is_file()
            out[c] = "saved" if on_disk and self.log_of(c) else "locked" if on_disk else "untouched"
        return out

    def labelled_cases(self):
        """The saved cases as :class:`~experts.adaptation.LabelledCase` (what adaptation trains on)."""
        from experts.adaptation import LabelledCase

        out = []
        for c in self.saved():
            last = self.log_of(c)["saves"][-1]
            out.append(LabelledCase(case=c, images=tuple(self.case(c).images), label=self.label_path(c), kind=last["mode"]))
        return out

    # --- saving --------------------------------------------------------------------------------
    def save(self, case: str, label: np.ndarray, *, mode: str, record: dict) -> dict:
        """Write ``label [X, Y, Z]`` as the expert's label of ``case`` and log it; returns the log entry.

        Raises:
            SaveInProgress: another save holds the lock.
            DatasetError: an unknown case, a label that does not fit the case or the spec, or an
                existing label of this expert that the page did not write.
        """
        files = self.case(case)
        label = np.asarray(label)
        problems = geometry_problems(self.label_path(case), label.shape, files.affine, like=files)
        allowed = set(self.manifest.spec.labels.values())
        bad = sorted(set(np.unique(label).tolist()) - allowed)
        if problems or bad:
            raise DatasetError(problems[:1] or [f"label values {bad} are not declared in dataset.json ({sorted(allowed)})"])
        with _Lock(self.root / ANNOTATIONS_DIR / ".lock"):
            target = self.label_path(case)
            if target.exists() and not self.log_of(case):
                raise DatasetError(f"{target}: {self.expert} already has a label for {case} that this page did not write; it is kept. Annotate as another expert id (--expert)")
            made_folder = not target.parent.exists()
            save_volume(target, label.astype(np.uint8), files.affine)
            try:
                self._declare()
            except BaseException:
                target.unlink(missing_ok=True)
                if made_folder:
                    target.parent.rmdir()
                raise
            entry = {"when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "who": _user(), "expert": self.expert, "case": case,
                     "file": str(target.relative_to(self.root)), "sha256": hashlib.sha256(target.read_bytes()).hexdigest(), "mode": mode, **record}
            log = self.log_of(case) or {"expert": self.expert, "case": case, "saves": []}
            log["saves"].append(entry)
            _write_json(self.log_dir / f"{case}.json", log)
        return entry

    def _declare(self) -> None:
        """Add the expert to ``dataset.json`` (role new) if it does not list them yet."""
        from experts.data.expert_writer import expert_entry
        from experts.data.spec import read_spec
        from experts.data.spec_edit import set_expert_entry

        experts = read_spec(self.root).experts
        if experts is not None and self.expert not in experts:
            set_expert_entry(self.root, self.expert, expert_entry("labelled on the annotation page (expertseg annotate)", "new"))


class _Lock:
    """An exclusive lock file (``O_CREAT | O_EXCL``): one save into a dataset at a time."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise SaveInProgress(f"{self.path}: another save into this dataset is in progress; retry when it has finished (remove the file if no annotate page is running)") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _write_json(path: Path, data) -> None:
    from experts.training.checkpoint import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
