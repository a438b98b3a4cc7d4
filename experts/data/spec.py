"""``dataset.json``: the multi-expert dataset description (dataset layout version 1).

The layout extends nnU-Net v2's raw dataset (``dataset.json``, ``imagesTr/``, the ``ignore`` label)
with one folder of labels per expert::

    <dataset>/dataset.json
    <dataset>/imagesTr/<case>_<CCCC>.nii.gz
    <dataset>/labelsTr/<expert>/<case>.nii.gz
    <dataset>/imagesTs/<case>_<CCCC>.nii.gz      (optional)
    <dataset>/labelsTs/<expert>/<case>.nii.gz    (optional)

This module reads and checks the JSON file; :mod:`experts.data.manifest` checks the files.

``dataset.json`` is read by :func:`read_json`: at most :data:`MAX_JSON_BYTES` and nested at most
:data:`MAX_JSON_DEPTH` levels (a real one nests 3: ``experts`` -> id -> ``description``), so a
hostile file fails with one line instead of a ``RecursionError`` or gigabytes of parsing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from experts.errors import DatasetError, shorten

__all__ = [
    "ID_PATTERN",
    "FILE_ENDINGS",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "ExpertInfo",
    "DatasetSpec",
    "valid_id",
    "read_json",
    "read_spec",
    "parse_spec",
    "write_spec",
]

#: Case and expert ids become file names, MLflow tags and registry aliases.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
FILE_ENDINGS = (".nii.gz", ".nii")
ROLES = ("new",)
#: Largest dataset.json read (10 MB; nnU-Net's with thousands of training entries are under 1 MB).
MAX_JSON_BYTES = 10 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted in dataset.json.
MAX_JSON_DEPTH = 32


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
    return parse_spec(read_json(path), where=str(path))


def read_json(path: str | Path):
    """Decode a user's JSON file (a ``dataset.json``) within :data:`MAX_JSON_BYTES` and
    :data:`MAX_JSON_DEPTH`.

    Raises:
        DatasetError: unreadable, too large, not UTF-8, not JSON or nested too deeply (one line).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror or type(err).__name__}); check the file and its permissions") from None
    if len(data) > MAX_JSON_BYTES:
        raise DatasetError(f"{path}: larger than {MAX_JSON_BYTES // (1024 * 1024)} MB; a dataset.json describes labels, channels and experts in a few kB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    too_deep = f"{path}: nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects; a dataset.json nests 3 (experts -> id -> description), flatten it"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); fix the syntax") from None
    except RecursionError:
        raise DatasetError(too_deep) from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise DatasetError(f"{path}: a value cannot be read ({shorten(str(err), quote=False)}); fix it") from None
    if _depth(raw) > MAX_JSON_DEPTH:
        raise DatasetError(too_deep)
    return raw


def _depth(value) -> int:
    """Nesting depth of decoded JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            stack.extend((child, depth) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_spec(raw: object, *, where: str = "dataset.json") -> DatasetSpec:
    """Check a decoded ``dataset.json`` object; see :func:`read_spec`."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: the top level must be a JSON object, found {type(raw).__name__}")
    problems: list[str] = []
    labels = _parse_labels(raw.get("labels"), where, problems)
    channels = _parse_channels(raw.get("channel_names", raw.get("modality")), where, problems)
    ending = raw.get("file_ending")
    if ending not in FILE_ENDINGS:
        problems.append(f'{where}: "file_ending" must be ".nii.gz" or ".nii", found {shorten(ending)}')
    experts = _parse_experts(raw.get("experts"), where, problems)
    if problems:
        raise DatasetError(problems)
    known = {"name", "description", "channel_names", "modality", "labels", "file_ending", "experts"}
    return DatasetSpec(
        name=str(raw.get("name", "")),
        description=str(raw.get("description", "")),
        channel_names={str(k): str(v) for k, v in channels.items()},
        labels=labels,
        file_ending=ending,
        experts=experts,
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _parse_labels(labels: object, where: str, problems: list[str]) -> dict[str, int]:
    """The integer-valued entries of ``"labels"``; what breaks the numbering rules goes to ``problems``."""
    if not isinstance(labels, dict) or not labels:
        problems.append(f'{where}: "labels" must map label names to integers, e.g. {{"background": 0, "tumour": 1}}')
        return {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(
                f'{where}: label "{shorten(name, quote=False)}" has value {shorten(value)}; values must be integers '
                "(region-based labels are not supported)"
            )
    labels = {k: v for k, v in labels.items() if isinstance(v, int) and not isinstance(v, bool)}
    if not labels:
        return labels
    if labels.get("background") != 0:
        problems.append(f'{where}: "background" must be label 0, found {shorten(labels.get("background"))}; renumber labels')
    values = sorted(labels.values())
    if values != list(range(len(values))):
        problems.append(f"{where}: label values {shorten(values)} must be consecutive integers from 0; renumber labels")
    if "ignore" in labels and labels["ignore"] != max(values):
        top = max(labels.items(), key=lambda kv: kv[1])
        problems.append(
            f"{where}: ignore label {labels['ignore']} must be the highest label value "
            f"(found '{shorten(top[0], quote=False)}': {top[1]}); renumber labels"
        )
    if not set(labels) - {"background", "ignore"}:
        problems.append(
            f'{where}: "labels" declares no foreground class (only {" and ".join(sorted(labels))}); '
            'add the structure to segment, e.g. {"background": 0, "tumour": 1, "ignore": 2}'
        )
    return labels


def _parse_channels(channels: object, where: str, problems: list[str]) -> dict:
    """``"channel_names"`` (or nnU-Net v1's ``"modality"``), keyed "0", "1", ... consecutively."""
    if not isinstance(channels, dict) or not channels:
        problems.append(f'{where}: "channel_names" must map channel indices to names, e.g. {{"0": "T1"}}')
        return {}
    if sorted(channels) != [str(i) for i in range(len(channels))]:
        problems.append(f'{where}: "channel_names" keys must be "0", "1", ... consecutively, found {shorten(sorted(channels))}')
    return channels


def _parse_experts(experts: object, where: str, problems: list[str]) -> dict[str, ExpertInfo] | None:
    """The declared experts (``None``: the dataset declares none, its label folders name them)."""
    if experts is None:
        return None
    if not isinstance(experts, dict):
        problems.append(f'{where}: "experts" must be an object mapping expert ids to objects, e.g. {{"rater1": {{}}}}, found {type(experts).__name__} {shorten(experts)}')
        return None
    parsed: dict[str, ExpertInfo] = {}
    for eid, info in experts.items():
        if not valid_id(eid):
            problems.append(
                f'{where}: expert id "{shorten(eid, quote=False)}" is not allowed; use letters, digits, "_" and "-" '
                "(pattern [A-Za-z0-9][A-Za-z0-9_-]*)"
            )
            continue
        info = {} if info is None else info
        if not isinstance(info, dict):
            problems.append(f'{where}: expert "{eid}" must be an object such as {{"description": "..."}}, found {type(info).__name__} {shorten(info)}')
            continue
        role = info.get("role")
        if role is not None and role not in ROLES:
            problems.append(f'{where}: expert "{eid}" has role {shorten(role)}; the only role is "new"')
        description = info.get("description", "")
        if not isinstance(description, str):
            problems.append(f'{where}: expert "{eid}" description must be text')
            description = str(description)
        parsed[eid] = ExpertInfo(description=description, role=role)
    return parsed


def write_spec(root: str | Path, spec: DatasetSpec) -> Path:
    """Write ``<root>/dataset.json`` (pretty-printed, UTF-8)."""
    path = Path(root) / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
