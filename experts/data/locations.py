"""Where outputs may go: never into, over or around a dataset, never over the folder you stand in.

A *dataset* here is a folder whose ``dataset.json`` has ``labels`` and which has ``imagesTr/`` (the
layout of DATASET_SPEC). Run outputs (a pretraining, an adaptation, predictions, a report) may not be
a dataset, contain one, or lie inside one, and may not lie inside an ``imagesTr``/``labelsTr``/
``imagesTs``/``labelsTs`` folder of any kind: a prediction written into ``labelsTs`` would silently
replace the experts' reference labels. The commands whose job is to add labels to a dataset write
only under ``labelsTr/<expert>/`` and ``labelsTs/<expert>/`` (see DATASET_SPEC rule 11).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from experts.errors import ConfigError

__all__ = ["is_dataset", "dataset_around", "check_output_location", "DATA_FOLDERS"]

#: the folders of a dataset that hold its images and labels
DATA_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def is_dataset(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a dataset (``dataset.json`` with ``labels``, and ``imagesTr/``)."""
    folder = Path(folder)
    spec = folder / "dataset.json"
    if not (spec.is_file() and (folder / "imagesTr").is_dir()):
        return False
    try:
        return "labels" in json.loads(spec.read_text(encoding="utf-8")[: 10 * 2**20])
    except (OSError, ValueError, RecursionError):
        return True  # a damaged dataset.json beside imagesTr/ is still somebody's dataset


def dataset_around(path: str | os.PathLike) -> Path | None:
    """The dataset that ``path`` is, or lies inside, or None."""
    path = Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        if is_dataset(folder):
            return folder
    return None


def _contained_dataset(path: Path, depth: int = 3) -> Path | None:
    """A dataset inside ``path`` (looked for ``depth`` levels down), or None."""
    if not path.is_dir():
        return None
    frontier = [path]
    for _ in range(depth):
        nxt = []
        for folder in frontier:
            try:
                children = [c for c in folder.iterdir() if c.is_dir() and not c.is_symlink()]
            except OSError:
                continue
            for child in children:
                if is_dataset(child):
                    return child
                nxt.append(child)
        frontier = nxt
    return None


def check_output_location(out: str | os.PathLike, *, what: str = "output", replacing_dataset: bool = False) -> Path:
    """Refuse an output location that would mix a run's files with a dataset or the working folder.

    Args:
        out: the output folder asked for.
        what: what is written there, for messages (``"run"``, ``"predictions"``, ``"dataset"``).
        replacing_dataset: the output IS a dataset (``data demo``/``data import``): it may be a
            dataset (to be replaced with ``--overwrite``) but not lie inside another one.

    Returns:
        The absolute path.

    Raises:
        ConfigError: one line naming the location, the dataset it touches and what to do.
    """
    path = Path(os.path.abspath(out))
    long = next((part for part in path.parts if len(part.encode()) > 255), None)
    if long is not None or len(str(path).encode()) > 4000:
        raise ConfigError(f"{str(out)[:120]}...: a folder name is longer than 255 bytes or the path longer than 4000; choose a shorter --out")
    cwd = Path.cwd().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{out}: is a file, not a folder; choose a folder for the {what}")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{out}: lies under {existing}, which is a file; choose a folder for the {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: {existing} cannot be written (read-only or no permission); choose a folder you can write")
    if path.resolve() == cwd or path.resolve() in cwd.parents:
        raise ConfigError(f"{out}: is the current folder or one around it; choose a new folder for the {what} (e.g. {Path(out) / what})")
    inside = next((p for p in (path, *path.parents) if p.name in DATA_FOLDERS), None)
    if inside is not None:
        raise ConfigError(f"{out}: lies inside a dataset's {inside.name}/ folder; the {what} would mix with images or experts' labels; choose a folder outside the dataset")
    around = dataset_around(path)
    if around is not None and not (replacing_dataset and around == path):
        where = "is the dataset" if around == path else "lies inside the dataset"
        raise ConfigError(f"{out}: {where} {around}; the {what} would replace or mix with its files; choose a folder outside it")
    contained = _contained_dataset(path)
    if contained is not None:
        raise ConfigError(f"{out}: holds the dataset {contained}; choose a folder that holds no dataset for the {what}")
    return path
