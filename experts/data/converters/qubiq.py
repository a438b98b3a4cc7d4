"""QUBIQ 2020/21 importer: one task of a QUBIQ dataset, one expert per rater.

Source layout (one QUBIQ dataset such as ``brain-growth``)::

    <src>/Training/case01/image.nii.gz
    <src>/Training/case01/task01_seg01.nii.gz ... task01_seg07.nii.gz   (one mask per rater)
    <src>/Validation/case35/...

Layout decisions:

* Split folders: a name starting with ``train`` (any case) goes to ``imagesTr``/``labelsTr``; one
  starting with ``val`` or ``test`` to ``imagesTs``/``labelsTs``. ``src`` may also be a single split
  folder holding the case folders directly: it is imported as training data.
* Case ids are the case folder names (``case01``), made valid ids; a held-out case whose id a training
  case already uses gets the prefix ``test_``.
* One task per import (``task=1`` -> ``task01_seg*``); with a single task in the data it is chosen
  automatically, otherwise a missing or absent task is refused with the list of available tasks.
* Mask ``taskTT_segRR`` becomes expert ``rater<RR>`` (``rater1``...); the raters of each case are read
  from its files (one QUBIQ prostate case has 5 raters where the others have 6). A case without a mask
  of the task is imported as an unlabelled image.
* 2D slices become X x Y x 1 volumes: the in-plane part of the affine is kept, the new axis has
  spacing 1.0 along the slice normal. Masks become 0/1 ``uint8`` (float 0.0/1.0 and 0/255 masks are
  accepted; fractional values are refused). Colour (RGB-like) images or images with extra
  dimensions are refused; 3D QUBIQ volumes (2021 pancreas tasks) are imported as they are.
* ``dataset.json``: one channel ``image``; labels ``{"background": 0, <label_name>: 1}``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from experts.data.converters import DatasetWriter, binary_mask, read_nifti, safe_id, track, unique_test_ids
from experts.data.nifti import read_header
from experts.data.spec import ExpertInfo
from experts.errors import DatasetError

__all__ = ["convert", "find_cases", "split_of_folder"]

_SEG = re.compile(r"task(\d+)_seg(\d+)\.nii(\.gz)?", re.IGNORECASE)
_IMAGES = ("image.nii.gz", "image.nii")


def split_of_folder(name: str) -> str | None:
    """``"train"`` for ``Training``-like names, ``"test"`` for ``Validation``/``Test``, else ``None``."""
    low = name.lower()
    if low.startswith("train"):
        return "train"
    if low.startswith(("val", "test")):
        return "test"
    return None


def _image_of(folder: Path) -> Path | None:
    return next((folder / n for n in _IMAGES if (folder / n).is_file()), None)


def _case_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and _image_of(d) is not None)


def find_cases(src: Path) -> list[tuple[str, Path]]:
    """``(split, case folder)`` pairs of a QUBIQ dataset folder (or of a single split folder).

    Raises:
        DatasetError: no case found, an unknown split folder name, or no training split.
    """
    if _image_of(src) is not None:
        raise DatasetError(f"{src}: this is one QUBIQ case; pass the dataset folder holding Training/ (or the folder of case folders)")
    direct = _case_dirs(src)
    if direct:
        return [("train", d) for d in direct]
    found: list[tuple[str, Path]] = []
    for sub in sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")):
        cases = _case_dirs(sub)
        if not cases:
            continue
        split = split_of_folder(sub.name)
        if split is None:
            raise DatasetError(f"{sub}: split folder name not recognised; name it Training, Validation or Test, or pass it as src to import it as training data")
        found += [(split, d) for d in cases]
    if not found:
        raise DatasetError(f"{src}: no QUBIQ case found; expected {src}/Training/caseNN/image.nii.gz with taskTT_segRR.nii.gz masks")
    if not any(s == "train" for s, _ in found):
        raise DatasetError(f"{src}: only held-out split folders (Validation/Test) found; a dataset needs training cases: pass one of those folders as src to import it as training data")
    return found


def _masks(case: Path) -> dict[int, dict[int, Path]]:
    """task -> rater -> mask file of one case folder."""
    out: dict[int, dict[int, Path]] = {}
    for p in sorted(case.iterdir()):
        m = _SEG.fullmatch(p.name)
        if m and p.is_file():
            rater = int(m[2])
            if rater in out.setdefault(int(m[1]), {}):
                raise DatasetError(f"{p}: a second mask of task {int(m[1])} rater {rater} in {case}; keep one of them (.nii or .nii.gz)")
            out[int(m[1])][rater] = p
    return out


def _task_number(task: object, available: list[int], src: Path) -> int:
    listing = ", ".join(f"{t} (task{t:02d}_seg*)" for t in available) or "none"
    if task is None:
        if len(available) == 1:
            return available[0]
        raise DatasetError(f"{src}: several QUBIQ tasks found, choose one with --task; available tasks: {listing}")
    text = str(task).strip().lower().removeprefix("task")
    if not text.isdigit():
        raise DatasetError(f"task {task!r} is not a task number; available tasks: {listing}")
    if int(text) not in available:
        raise DatasetError(f"{src}: no mask of task {int(text)} (task{int(text):02d}_seg*.nii.gz); available tasks: {listing}")
    return int(text)


def _volume(path: Path, *, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A QUBIQ file as a 3D array: a 2D slice becomes X x Y x 1 with spacing 1.0 on the new axis."""
    array, affine = read_nifti(path)
    if array.ndim == 2:
        return array[:, :, None], _with_normal(affine, path, force=True)
    if array.ndim != 3:
        raise DatasetError(f"{path}: {kind} of shape {array.shape} has extra dimensions (colour or time?); store it as one grey 2D slice (X x Y) and import again")
    return array, (_with_normal(affine, path, force=False) if array.shape[2] == 1 else affine)


def _with_normal(affine: np.ndarray, path: Path, *, force: bool) -> np.ndarray:
    """The affine with a unit-length third column (kept direction, or the in-plane normal when degenerate)."""
    out = np.array(affine, dtype=np.float64)
    c0, c1, c2 = out[:3, 0], out[:3, 1], out[:3, 2]
    if not np.isfinite(out).all() or np.linalg.norm(c0) == 0 or np.linalg.norm(c1) == 0:
        raise DatasetError(f"{path}: the header's affine is degenerate (zero or invalid pixel spacing); fix the spacing in the header and import again")
    normal = np.cross(c0, c1)
    if np.linalg.norm(normal) < 1e-8 * np.linalg.norm(c0) * np.linalg.norm(c1):
        raise DatasetError(f"{path}: the header's two in-plane axes are parallel; fix the orientation in the header")
    degenerate = np.linalg.norm(c2) < 1e-8 or abs(np.linalg.det(out[:3, :3])) < 1e-8 * np.linalg.norm(normal) * np.linalg.norm(c2)
    if not force and not degenerate:
        return out
    direction = normal if degenerate else c2
    out[:3, 2] = direction / np.linalg.norm(direction)
    return out


def convert(*, src: Path, writer: DatasetWriter, progress: bool = False, task: int | str | None = None, label_name: str = "foreground") -> None:
    """Import one task of a QUBIQ dataset folder ``src`` through ``writer``.

    Args:
        src: QUBIQ dataset folder (holding ``Training/``...) or a single split folder.
        writer: destination.
        progress: show a progress bar.
        task: task number (``1``, ``"01"`` or ``"task01"``); optional when the data hold one task.
        label_name: name of label 1 in ``dataset.json`` (e.g. ``"prostate"``).

    Raises:
        DatasetError: layout, task, mask value or image shape problems, naming the file.
    """
    if not isinstance(label_name, str) or not label_name.strip() or label_name in ("background", "ignore"):
        raise DatasetError(f"label_name {label_name!r} must be a non-empty name other than 'background' and 'ignore'")
    cases = find_cases(src)
    masks = {d: _masks(d) for _, d in cases}
    available = sorted({t for m in masks.values() for t in m})
    number = _task_number(task, available, src)
    ids = {d: safe_id(d.name) for _, d in cases}
    test_ids = unique_test_ids([ids[d] for s, d in cases if s == "train"], [ids[d] for s, d in cases if s == "test"])
    first = next(p for m in masks.values() for p in m.get(number, {}).values())
    first_shape = read_header(first).header.get_data_shape()
    flat = len(first_shape) == 2 or first_shape[2] == 1  # 2D task: every image must be one grey slice

    raters: set[int] = set()
    for split, folder in track(cases, desc=f"QUBIQ task{number:02d}", enabled=progress):
        case = ids[folder] if split == "train" else test_ids[ids[folder]]
        img_path = _image_of(folder)
        image, affine = _volume(img_path, kind="image")
        if flat and image.shape[2] != 1:
            raise DatasetError(f"{img_path}: image of shape {image.shape} while the task's masks are 2D slices: a colour (RGB-like) or multi-slice image; store it as one grey X x Y slice")
        writer.image(split=split, case=case, channel=0, array=image, affine=affine, source=img_path)
        for rater, path in sorted(masks[folder].get(number, {}).items()):
            mask, mask_affine = _volume(path, kind="mask")
            if mask.shape != image.shape:
                raise DatasetError(f"{path}: mask shape {mask.shape} differs from the image shape {image.shape} of {img_path.name}; the mask must be on the image grid")
            writer.label(split=split, expert=f"rater{rater}", case=case, array=binary_mask(mask, path), affine=mask_affine, source=path)
            raters.add(rater)

    writer.finish(
        name=f"QUBIQ-{safe_id(src.name)}-task{number:02d}",
        description=(
            f"Imported from QUBIQ {src.name}, task {number:02d}: Training -> imagesTr/labelsTr, "
            "Validation/Test -> imagesTs/labelsTs; 2D slices stored as X x Y x 1; one expert per rater."
        ),
        channel_names=["image"],
        labels={"background": 0, label_name: 1},
        experts={f"rater{r}": ExpertInfo(description=f"QUBIQ rater {r} (task{number:02d}_seg{r:02d})") for r in sorted(raters)},
    )
