"""nnU-Net v2 raw dataset importer: one dataset, one expert.

Source layout::

    DatasetXXX_Name/dataset.json
    DatasetXXX_Name/imagesTr/<case>_0000.nii.gz      (one file per channel)
    DatasetXXX_Name/labelsTr/<case>.nii.gz
    DatasetXXX_Name/imagesTs/<case>_0000.nii.gz      (optional)
    DatasetXXX_Name/labelsTs/<case>.nii.gz           (optional, some datasets ship it)

Layout decisions:

* All labels become expert ``expert`` (default ``"nnunet"``): ``labelsTr/<expert>/<case>``.
* ``channel_names`` (or nnU-Net v1 ``modality``), ``labels`` and ``file_ending`` (``.nii.gz`` or
  ``.nii``; other image formats are refused) are copied; nnU-Net v1 ``{"0": "background"}`` label
  maps are inverted. An ``ignore`` label is kept: a label file containing it is a partial label,
  exactly as in nnU-Net. Region-based labels (lists of values) are refused. Other keys
  (``numTraining``, ...) are kept as they are.
* Case ids are kept, made valid ids where needed (``.`` or spaces become ``_``).
* Images and labels are re-saved with identical qform and sform; labels as ``uint8`` (``uint16``
  beyond 255); cases without a label file are imported as unlabelled images.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from experts.data.converters import DatasetWriter, read_nifti, safe_id, track
from experts.data.spec import ExpertInfo, parse_spec, read_json, valid_id
from experts.errors import DatasetError

__all__ = ["convert", "read_nnunet_json"]

_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
_OWN_KEYS = {"name", "description", "channel_names", "modality", "labels", "file_ending", "experts"}


def read_nnunet_json(src: Path) -> dict:
    """The source ``dataset.json`` checked and normalised (v1 label maps inverted, ``modality`` renamed).

    Raises:
        DatasetError: missing or invalid JSON, region-based labels, unsupported file ending.
    """
    path = src / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path}: missing; an nnU-Net raw dataset folder (DatasetXXX_Name) holds dataset.json, imagesTr/ and labelsTr/")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: the top level must be a JSON object")
    labels = raw.get("labels")
    if isinstance(labels, dict) and labels and all(isinstance(k, str) and k.isdigit() and isinstance(v, str) for k, v in labels.items()):
        labels = {v: int(k) for k, v in labels.items()}  # nnU-Net v1: {"0": "background", ...}
    if isinstance(labels, dict):
        regions = [k for k, v in labels.items() if isinstance(v, (list, tuple))]
        if regions or "regions_class_order" in raw:
            raise DatasetError(
                f"{path}: region-based labels ({', '.join(regions) or 'regions_class_order'}) are not supported; "
                "convert the dataset to one integer value per class before importing"
            )
    ending = raw.get("file_ending", ".nii.gz")
    if ending not in (".nii.gz", ".nii"):
        raise DatasetError(f"{path}: file_ending {ending!r} is not supported; convert the images and labels to .nii.gz (e.g. with SimpleITK) first")
    channels = raw.get("channel_names", raw.get("modality"))
    out = {k: v for k, v in raw.items() if k not in _OWN_KEYS}
    out.update(name=str(raw.get("name") or src.name), description=str(raw.get("description") or ""), channel_names=channels, labels=labels, file_ending=ending)
    parse_spec(out, where=str(path))  # labels and channels checked against the contract, naming the source
    return out


def _files(folder: Path, ending: str, *, channels: bool) -> dict[str, dict[int, Path]] | dict[str, Path]:
    """Case -> channel -> file (images) or case -> file (labels) of one folder; absent folder: empty."""
    out: dict = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if not p.name.endswith(ending) or (ending == ".nii" and p.name.endswith(".nii.gz")):
            raise DatasetError(f"{p}: file ending differs from dataset.json's file_ending {ending!r}; convert the file or fix file_ending")
        stem = p.name[: -len(ending)]
        if not channels:
            out[stem] = p
            continue
        m = _CHANNEL.fullmatch(stem)
        if not m:
            raise DatasetError(f"{p}: image names must be <case>_<CCCC>{ending} (e.g. case01_0000{ending}); rename it")
        out.setdefault(m["case"], {})[int(m["channel"])] = p
    return out


def _check_values(array: np.ndarray, allowed: list[int], path: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise DatasetError(f"{path}: fractional or non-finite label values; labels must be whole numbers from dataset.json labels")
    values = np.unique(array)
    unknown = [v for v in values.tolist() if v not in allowed]
    if unknown:
        raise DatasetError(f"{path}: label value(s) {', '.join(f'{float(v):g}' for v in unknown[:5])} not declared in dataset.json labels (values {allowed}); declare them or relabel")
    return array.astype(np.int64)


def convert(*, src: Path, writer: DatasetWriter, progress: bool = False, expert: str = "nnunet") -> None:
    """Import the nnU-Net v2 raw dataset ``src`` through ``writer`` as one expert.

    Args:
        src: the ``DatasetXXX_Name`` folder.
        writer: destination.
        progress: show a progress bar.
        expert: id of the expert who owns every label file.

    Raises:
        DatasetError: invalid dataset.json, missing channels, labels without images, bad label values.
    """
    if not isinstance(expert, str) or not valid_id(expert):
        raise DatasetError(f'expert id {expert!r} is not allowed; use letters, digits, "_" and "-" (pattern [A-Za-z0-9][A-Za-z0-9_-]*)')
    spec = read_nnunet_json(src)
    ending = spec["file_ending"]
    writer.file_ending = ending
    n_channels = len(spec["channel_names"])
    allowed = sorted(spec["labels"].values())
    work = []
    for split, img_dir, lab_dir in (("train", "imagesTr", "labelsTr"), ("test", "imagesTs", "labelsTs")):
        images = _files(src / img_dir, ending, channels=True)
        labels = _files(src / lab_dir, ending, channels=False)
        if split == "train" and not images:
            raise DatasetError(f"{src / img_dir}: no training image found; expected {img_dir}/<case>_0000{ending}")
        orphans = sorted(set(labels) - set(images))
        if orphans:
            case = orphans[0]
            raise DatasetError(f"{labels[case]}: no image for case {case} (expected {img_dir}/{case}_0000{ending}); add it or remove the label")
        for case, chans in sorted(images.items()):
            missing = [c for c in range(n_channels) if c not in chans]
            extra = [c for c in chans if c >= n_channels]
            if missing or extra:
                bad = missing or extra
                raise DatasetError(
                    f"{src / img_dir}: case {case} has channel(s) {', '.join(f'{c:04d}' for c in bad)} "
                    f"{'missing' if missing else 'not declared in channel_names'} ({n_channels} channels declared); fix the files or dataset.json"
                )
            work.append((split, case, chans, labels.get(case)))

    for split, case, chans, label in track(work, desc=f"nnU-Net {src.name}", enabled=progress):
        cid = safe_id(case)
        for channel in range(n_channels):
            array, affine = read_nifti(chans[channel])
            if array.ndim != 3:
                raise DatasetError(f"{chans[channel]}: {array.ndim}D image of shape {array.shape}, expected a 3D volume (store 2D slices as X x Y x 1)")
            writer.image(split=split, case=cid, channel=channel, array=array, affine=affine, source=chans[channel])
        if label is not None:
            array, affine = read_nifti(label)
            if array.ndim != 3:
                raise DatasetError(f"{label}: {array.ndim}D label of shape {array.shape}, expected a 3D volume")
            writer.label(split=split, expert=expert, case=cid, array=_check_values(array, allowed, label), affine=affine, source=label)

    extra = {k: v for k, v in spec.items() if k not in _OWN_KEYS}
    writer.finish(
        name=spec["name"],
        description=spec["description"] or f"Imported from the nnU-Net raw dataset {src.name}",
        channel_names=[str(spec["channel_names"][str(i)]) for i in range(n_channels)],
        labels=spec["labels"],
        experts={expert: ExpertInfo(description=f"labels of the nnU-Net dataset {src.name}")},
        extra=extra,
    )
