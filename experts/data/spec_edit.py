"""Add or replace one expert's entry in an existing ``dataset.json``, keeping everything else.

:func:`~experts.data.spec.write_spec` writes a whole :class:`~experts.data.spec.DatasetSpec` (and
reorders the keys). A tool that adds an expert to a user's dataset must change nothing but that
expert's entry (DATASET_SPEC rule 11): the JSON is edited as plain data, key order and every
unknown key kept, and written atomically (a temporary file beside it, then ``os.replace``).
"""

from __future__ import annotations

import json
from pathlib import Path

from experts.data.spec import parse_spec
from experts.errors import DatasetError

__all__ = ["set_expert_entry"]


def set_expert_entry(root: str | Path, expert: str, entry: dict) -> Path:
    """Set ``experts[expert] = entry`` in ``<root>/dataset.json`` atomically.

    An existing entry is replaced where it stands; a new one is appended. A ``dataset.json``
    without ``experts`` (the experts are then the folders of ``labelsTr/`` and ``labelsTs/``, rule 6)
    gets one listing those folders, so that declaring the new expert does not undeclare the others.

    Args:
        root: the dataset folder.
        expert: the expert id.
        entry: ``{"description": ..., "role": ...}`` (keys optional).

    Returns:
        The path of ``dataset.json``.

    Raises:
        DatasetError: ``dataset.json`` unreadable, or the result would not be a valid spec.
    """
    from experts.training.checkpoint import atomic_write_bytes

    path = Path(root) / "dataset.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: cannot read it ({type(err).__name__}); run 'expertseg data check {root}'") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: the top level must be a JSON object; run 'expertseg data check {root}'")
    if raw.get("experts") is None:
        raw["experts"] = {name: {} for name in _expert_folders(Path(root))}
    raw["experts"][expert] = dict(entry)
    parse_spec(raw, where=str(path))
    atomic_write_bytes(path, (json.dumps(raw, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def _expert_folders(root: Path) -> list[str]:
    names = set()
    for split in ("labelsTr", "labelsTs"):
        if (root / split).is_dir():
            names.update(p.name for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names)
