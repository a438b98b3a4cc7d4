"""``dataset.json``: the multi-expert dataset description (dataset layout version 1).

The layout extends nnU-Net v2's raw dataset (``dataset.json``, ``imagesTr/``, the ``ignore`` label)
with one folder of labels per expert::

    <dataset>/dataset.json
    <dataset>/imagesTr/<case>_<CCCC>.nii.gz
    <dataset>/labelsTr/<expert>/<case>.nii.gz
    <dataset>/imagesTs/<case>_<CCCC>.nii.gz      (optional)
    <dataset>/labelsTs/<expert>/<case>.nii.gz    (optional)

This module reads and checks the JSON file; :mod:`experts.data.manifest` checks the files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from experts.errors import DatasetError

__all__ = ["ID_PATTERN", "FILE_ENDINGS", "ExpertInfo", "DatasetSpec", "valid_id", "read_spec", "write_spec"]

#: Case and expert ids become file names, MLflow tags and registry aliases.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
FILE_ENDINGS = (".nii.gz", ".nii")
ROLES = ("new",)


def valid_id(text: str) -> bool:
    """True when ``text`` is a valid case or expert id (``[A-Za-z0-9][A-Za-z0-9_-]*``)."""
    return bool(ID_PATTERN.fullmatch(text))


@dataclass(frozen=True)
class ExpertInfo:
    """One expert (annotator) as ``dataset.json`` declares it."""

    description: str = ""
    role: str | None = None

    @property
    def is_new(self) -> bool:
        """Experts with ``"role": "new"`` stay out of pretraining by default."""
        return self.role == "new"


@dataclass(frozen=True)
class DatasetSpec:
    """The checked content of ``dataset.json``.

    Attributes:
        labels: name -> value, consecutive from 0 (``background``), ``ignore`` the highest if present.
        channel_names: ``{"0": "T1", ...}``.
        experts: id -> info, or ``None`` when ``dataset.json`` lists none (then the sub-folders of
            ``labelsTr/`` are the experts).
        extra: keys this platform does not use, kept so that a rewrite preserves them.
    """

    name: str
    description: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: str
    experts: dict[str, ExpertInfo] | None
    extra: dict = field(default_factory=dict)

    @property
    def ignore_label(self) -> int | None:
        """The ignore value, or ``None`` when the dataset declares no ``ignore`` label."""
        return self.labels.get("ignore")

    @property
    def class_names(self) -> list[str]:
        """Predicted classes in value order, background first, ``ignore`` excluded."""
        return [n for n, _ in sorted(self.labels.items(), key=lambda kv: kv[1]) if n != "ignore"]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def to_json(self) -> dict:
        out = dict(self.extra)
        out.update(
            name=self.name,
            description=self.description,
            channel_names=dict(self.channel_names),
            labels=dict(self.labels),
            file_ending=self.file_ending,
        )
        if self.experts is not None:
            out["experts"] = {
                k: {**({"description": v.description} if v.description else {}), **({"role": v.role} if v.role else {})}
                for k, v in self.experts.items()
            }
        return out


def read_spec(root: str | Path) -> DatasetSpec:
    """Read and check ``<root>/dataset.json``.

    Raises:
        DatasetError: every problem found, one line each, naming the file and the fix.
    """
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path}: missing; every dataset needs a dataset.json (see DATASET_SPEC, or run 'expertseg data import')")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); fix the syntax") from None
    return parse_spec(raw, where=str(path))


def parse_spec(raw: object, *, where: str = "dataset.json") -> DatasetSpec:
    """Check a decoded ``dataset.json`` object; see :func:`read_spec`."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: the top level must be a JSON object, found {type(raw).__name__}")
    problems: list[str] = []

    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        problems.append(f'{where}: "labels" must map label names to integers, e.g. {{"background": 0, "tumour": 1}}')
        labels = {}
    else:
        for name, value in labels.items():
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(
                    f'{where}: label "{name}" has value {value!r}; values must be integers '
                    "(region-based labels are not supported)"
                )
        labels = {k: v for k, v in labels.items() if isinstance(v, int) and not isinstance(v, bool)}
        if labels:
            if labels.get("background") != 0:
                problems.append(f'{where}: "background" must be label 0, found {labels.get("background")!r}; renumber labels')
            values = sorted(labels.values())
            if values != list(range(len(values))):
                problems.append(f"{where}: label values {values} must be consecutive integers from 0; renumber labels")
            if "ignore" in labels and labels["ignore"] != max(values):
                top = max(labels.items(), key=lambda kv: kv[1])
                problems.append(
                    f"{where}: ignore label {labels['ignore']} must be the highest label value "
                    f"(found '{top[0]}': {top[1]}); renumber labels"
                )

    channels = raw.get("channel_names", raw.get("modality"))
    if not isinstance(channels, dict) or not channels:
        problems.append(f'{where}: "channel_names" must map channel indices to names, e.g. {{"0": "T1"}}')
        channels = {}
    elif sorted(channels) != [str(i) for i in range(len(channels))]:
        problems.append(f'{where}: "channel_names" keys must be "0", "1", ... consecutively, found {sorted(channels)}')

    ending = raw.get("file_ending")
    if ending not in FILE_ENDINGS:
        problems.append(f'{where}: "file_ending" must be ".nii.gz" or ".nii", found {ending!r}')

    experts = raw.get("experts")
    parsed: dict[str, ExpertInfo] | None = None
    if experts is not None:
        if not isinstance(experts, dict):
            problems.append(f'{where}: "experts" must be an object of expert ids, e.g. {{"rater1": {{}}}}')
        else:
            parsed = {}
            for eid, info in experts.items():
                if not valid_id(eid):
                    problems.append(
                        f'{where}: expert id "{eid}" is not allowed; use letters, digits, "_" and "-" '
                        "(pattern [A-Za-z0-9][A-Za-z0-9_-]*)"
                    )
                    continue
                info = {} if info is None else info
                if not isinstance(info, dict):
                    problems.append(f'{where}: expert "{eid}" must be an object such as {{"description": "..."}}')
                    continue
                role = info.get("role")
                if role is not None and role not in ROLES:
                    problems.append(f'{where}: expert "{eid}" has role {role!r}; the only role is "new"')
                description = info.get("description", "")
                if not isinstance(description, str):
                    problems.append(f'{where}: expert "{eid}" description must be text')
                    description = str(description)
                parsed[eid] = ExpertInfo(description=description, role=role)

    name = raw.get("name", "")
    description = raw.get("description", "")
    if problems:
        raise DatasetError(problems)
    known = {"name", "description", "channel_names", "modality", "labels", "file_ending", "experts"}
    return DatasetSpec(
        name=str(name),
        description=str(description),
        channel_names={str(k): str(v) for k, v in channels.items()},
        labels=dict(labels),
        file_ending=ending,
        experts=parsed,
        extra={k: v for k, v in raw.items() if k not in known},
    )


def write_spec(root: str | Path, spec: DatasetSpec) -> Path:
    """Write ``<root>/dataset.json`` (pretty-printed, UTF-8)."""
    path = Path(root) / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
