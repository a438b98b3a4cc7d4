"""Scan and check a multi-expert dataset folder (dataset layout version 1).

:func:`scan_dataset` applies every rule of the dataset contract to the files: names, ids, experts,
channels, readable 3D NIfTI, one shape and one affine per case, declared whole-number label values.
It collects all problems before raising, so that a user fixes a dataset in one pass, and returns a
:class:`Manifest`: what the loaders, the sampler and the tracker use.

Every file goes through :func:`experts.data.nifti.read_header` and
:func:`~experts.data.nifti.volume_shape` (also with ``read_voxels=False``), so the geometry rules a
check enforces (finite, non-degenerate affine, positive spacing, a volume rather than a line, the
voxel budget) are the ones pretraining relies on.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experts.data.nifti import load_volume, read_header, spacing_of, volume_shape
from experts.data.spec import DatasetSpec, read_spec, valid_id
from experts.errors import DatasetError, shorten

__all__ = ["SPLITS", "CaseFiles", "LabelFile", "Manifest", "scan_dataset", "label_kind", "geometry_problems"]

#: split name -> (images folder, labels folder)
SPLITS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}
_CHANNEL_FILE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
SPACING_TOL = 1e-3
DIRECTION_TOL = 1e-4
ORIGIN_TOL = 1e-3


@dataclass(frozen=True)
class CaseFiles:
    """One image case: its channel files and geometry."""

    case: str
    split: str
    images: tuple[Path, ...]
    shape: tuple[int, int, int]
    affine: np.ndarray = field(compare=False, repr=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return spacing_of(self.affine)


@dataclass(frozen=True)
class LabelFile:
    """One expert's label of one case.

    Attributes:
        kind: ``"dense"`` or ``"partial"`` (the file contains the ignore value).
        annotated_fraction: fraction of voxels that are not ignore (1.0 for dense labels).
    """

    case: str
    expert: str
    split: str
    path: Path
    kind: str
    annotated_fraction: float


@dataclass
class Manifest:
    """Everything a dataset holds, checked."""

    root: Path
    spec: DatasetSpec
    cases: dict[str, CaseFiles]
    labels: list[LabelFile]
    experts: list[str]
    warnings: list[str] = field(default_factory=list)
    excluded: list[LabelFile] = field(default_factory=list)

    def case_ids(self, split: str = "train") -> list[str]:
        return sorted(c for c, f in self.cases.items() if f.split == split)

    def labels_of(self, *, expert: str | None = None, split: str | None = None, kind: str | None = None) -> list[LabelFile]:
        """Label files filtered by expert, split and kind (``None`` = any)."""
        return [
            lf
            for lf in self.labels
            if (expert is None or lf.expert == expert) and (split is None or lf.split == split) and (kind is None or lf.kind == kind)
        ]

    def label(self, case: str, expert: str) -> LabelFile | None:
        for lf in self.labels:
            if lf.case == case and lf.expert == expert:
                return lf
        return None

    @property
    def new_experts(self) -> list[str]:
        """Experts marked ``"role": "new"``: kept out of pretraining by default."""
        info = self.spec.experts or {}
        return [e for e in self.experts if e in info and info[e].is_new]

    def description_of(self, expert: str) -> str:
        info = (self.spec.experts or {}).get(expert)
        return info.description if info else ""

    def fingerprint(self) -> str:
        """A digest of the file names, sizes and modification times: changes when the data change."""
        h = hashlib.sha256()
        files = [self.root / "dataset.json"] + [p for c in self.cases.values() for p in c.images] + [lf.path for lf in self.labels]
        for p in sorted(files):
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def records(self) -> list[dict]:
        """One row per label file: the table logged as the run's dataset."""
        return [
            {
                "case": lf.case,
                "expert": lf.expert,
                "split": lf.split,
                "kind": lf.kind,
                "annotated_fraction": round(lf.annotated_fraction, 6),
                "path": str(lf.path.relative_to(self.root)),
            }
            for lf in self.labels
        ]


def label_kind(array: np.ndarray, ignore_label: int | None) -> str:
    """``"partial"`` exactly when the label contains the ignore value, else ``"dense"``."""
    return "partial" if ignore_label is not None and bool((array == ignore_label).any()) else "dense"


def scan_dataset(root: str | os.PathLike, *, read_voxels: bool = True) -> Manifest:
    """Check a dataset folder against the dataset contract and list its content.

    Args:
        root: the dataset folder (holding ``dataset.json``).
        read_voxels: read every file to check values and geometry (default). ``False`` checks names
            and headers only, for quick listings.

    Returns:
        The :class:`Manifest`; warnings (an expert folder without files, a partial label that
        annotates nothing) are in ``manifest.warnings`` and such files are left out of ``labels``.

    Raises:
        DatasetError: all problems found, one line each.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; pass the dataset folder that holds dataset.json")
    root = root.resolve()
    scan = _Scan(root=root, spec=read_spec(root))
    images, split_of = scan.images()
    experts, label_paths = scan.label_files(split_of)
    scan.raise_problems()  # names first: reading voxels of misnamed files would only add noise
    cases, labels, excluded = scan.voxels(images, split_of, label_paths, read_voxels=read_voxels)
    scan.raise_problems()
    return Manifest(root=root, spec=scan.spec, cases=cases, labels=labels, experts=experts, warnings=scan.warnings, excluded=excluded)


@dataclass
class _Scan:
    """One pass of :func:`scan_dataset` over a folder: each step adds what it finds wrong to
    ``problems`` (raised together) and what is merely odd to ``warnings``."""

    root: Path
    spec: DatasetSpec
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def raise_problems(self) -> None:
        if self.problems:
            raise DatasetError(self.problems)

    def inside_root(self, path: Path) -> bool:
        try:
            path.resolve(strict=True).relative_to(self.root)
            return True
        except ValueError:
            self.problems.append(f"{path}: points outside the dataset folder {self.root} (symbolic link); copy the file into the dataset")
        except (RuntimeError, OSError):  # a symbolic link that loops or points nowhere
            self.problems.append(f"{path}: a symbolic link that loops or points to nothing; replace it with the file")
        return False

    def nifti_files(self, folder: Path) -> list[Path]:
        """The NIfTI files of ``folder`` with the dataset's ending; anything else is a problem."""
        ending = self.spec.file_ending
        other_ending = ".nii" if ending == ".nii.gz" else ".nii.gz"
        out = []
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or not self.inside_root(p):
                continue
            if p.is_dir():
                self.problems.append(f"{p}: unexpected folder inside {folder.name}/; only NIfTI files belong here")
            elif p.name.endswith(ending):
                out.append(p)
            elif p.name.endswith(other_ending) or p.name.endswith(".nii"):
                self.problems.append(f'{p}: file ending differs from dataset.json\'s "file_ending" {ending!r}; convert the file or fix "file_ending"')
            else:
                self.problems.append(f"{p}: not a NIfTI file name (expected ...{ending}); remove it or convert it")
        return out

    def images(self) -> tuple[dict[str, dict[int, Path]], dict[str, str]]:
        """``({case: {channel: path}}, {case: split})`` of the image folders (names and channels)."""
        ending, n_channels, problems = self.spec.file_ending, self.spec.num_channels, self.problems
        channels_of: dict[str, dict[int, Path]] = {}
        split_of: dict[str, str] = {}
        for split, (img_dir, _) in SPLITS.items():
            folder = self.root / img_dir
            if not folder.is_dir():
                if split == "train":
                    problems.append(f"{folder}: missing; training images go in imagesTr/<case>_0000{ending}")
                continue
            for p in self.nifti_files(folder):
                stem = p.name[: -len(ending)]
                m = _CHANNEL_FILE.fullmatch(stem)
                if not m:
                    problems.append(f"{p}: name must be <case>_<CCCC>{ending} (e.g. case01_0000{ending}); rename it")
                    continue
                case, channel = m["case"], int(m["channel"])
                if not valid_id(case):
                    problems.append(f'{p}: case id "{case}" is not allowed; use letters, digits, "_" and "-" (pattern [A-Za-z0-9][A-Za-z0-9_-]*)')
                    continue
                if split_of.setdefault(case, split) != split:
                    problems.append(f'{p}: case id "{case}" is used in both imagesTr and imagesTs; case ids must be unique')
                    continue
                if channel >= n_channels:
                    problems.append(f"{p}: channel {channel:04d} is not declared in dataset.json channel_names ({n_channels} channels); rename it or declare the channel")
                    continue
                channels_of.setdefault(case, {})[channel] = p
        for case, chans in sorted(channels_of.items()):
            for c in range(n_channels):
                if c not in chans:
                    folder = SPLITS[split_of[case]][0]
                    problems.append(f"{self.root / folder / f'{case}_{c:04d}{ending}'}: channel {c} missing for case {case}; add the file or remove the case")
        if not any(s == "train" for s in split_of.values()):
            problems.append(f"{self.root / 'imagesTr'}: the dataset has no training case; add images as imagesTr/<case>_0000{ending}")
        return channels_of, split_of

    def label_files(self, split_of: dict[str, str]) -> tuple[list[str], list[tuple[str, str, str, Path]]]:
        """``(experts, [(split, expert, case, path)])`` of the label folders (names, experts, images)."""
        ending, problems, root = self.spec.file_ending, self.problems, self.root
        declared = list(self.spec.experts) if self.spec.experts is not None else None
        folders: set[str] = set()
        label_paths: list[tuple[str, str, str, Path]] = []
        for split, (_, lab_dir) in SPLITS.items():
            folder = root / lab_dir
            if not folder.is_dir():
                if split == "train":
                    problems.append(f"{folder}: missing; labels go in labelsTr/<expert>/<case>{ending}")
                continue
            for sub in sorted(folder.iterdir()):
                if sub.name.startswith(".") or not self.inside_root(sub):
                    continue
                if not sub.is_dir():
                    problems.append(
                        f"{sub}: label files belong in one folder per expert (labelsTr/<expert>/<case>{ending}); "
                        "move it, or import an nnU-Net dataset with 'expertseg data import nnunet'"
                    )
                    continue
                expert = sub.name
                if not valid_id(expert):
                    problems.append(f'{sub}: expert id "{expert}" is not allowed; use letters, digits, "_" and "-" (pattern [A-Za-z0-9][A-Za-z0-9_-]*)')
                    continue
                if declared is not None and expert not in declared:
                    problems.append(f'{sub}: expert folder "{expert}" is not declared in dataset.json "experts"; add it there or remove the folder')
                    continue
                folders.add(expert)
                files = self.nifti_files(sub)
                if not files:
                    self.warnings.append(f"{sub}: expert folder holds no label file")
                for p in files:
                    case = p.name[: -len(ending)]
                    if not valid_id(case):
                        problems.append(f'{p}: case id "{case}" is not allowed; use letters, digits, "_" and "-"')
                    elif split_of.get(case) != split:
                        img = SPLITS[split][0]
                        problems.append(f"{p}: no image for case {case} in {img}/ (expected {img}/{case}_0000{ending}); add it or remove the label")
                    else:
                        label_paths.append((split, expert, case, p))
        if declared is None:
            return sorted(folders), label_paths
        for e in declared:
            if e not in folders and not (root / "labelsTr" / e).is_dir() and not (root / "labelsTs" / e).is_dir():
                problems.append(f'{root / "labelsTr" / e}: expert "{e}" is declared in dataset.json but has no folder; create labelsTr/{e}/ or remove the entry')
        return declared, label_paths

    def voxels(self, channels_of: dict[str, dict[int, Path]], split_of: dict[str, str], label_paths: list[tuple[str, str, str, Path]], *,
               read_voxels: bool) -> tuple[dict[str, CaseFiles], list[LabelFile], list[LabelFile]]:
        """``(cases, labels, excluded)``: every file's geometry against its case's first channel and
        every label's values (with ``read_voxels``; else headers only, every label taken as dense)."""
        labels_by_case: dict[str, list[tuple[str, str, Path]]] = defaultdict(list)
        for split, expert, case, p in label_paths:
            labels_by_case[case].append((split, expert, p))
        cases: dict[str, CaseFiles] = {}
        labels: list[LabelFile] = []
        excluded: list[LabelFile] = []
        allowed = np.array(sorted(self.spec.labels.values()))
        ignore = self.spec.ignore_label
        problems = self.problems
        for case in sorted(channels_of):
            images = tuple(channels_of[case][c] for c in range(self.spec.num_channels))
            ref = None
            for p in images:
                try:
                    vol = _geometry(p, read_voxels=read_voxels, kind="image")
                except DatasetError as err:
                    problems.extend(err.problems)
                    continue
                ref = _compare_geometry(ref, vol, p, problems)
            if ref is None:
                continue
            cases[case] = CaseFiles(case=case, split=split_of[case], images=images, shape=ref[0], affine=ref[1])
            for split, expert, p in labels_by_case.get(case, []):
                try:
                    vol = _geometry(p, read_voxels=read_voxels, kind="label")
                except DatasetError as err:
                    problems.extend(err.problems)
                    continue
                _compare_geometry(ref, vol, p, problems, against=images[0])
                if not read_voxels:
                    labels.append(LabelFile(case, expert, split, p, "dense", 1.0))
                    continue
                array = vol[2]
                bad = _value_problem(array, allowed, self.spec, p)
                if bad:
                    problems.append(bad)
                    continue
                kind = label_kind(array, ignore)
                frac = 1.0 if kind == "dense" else float((array != ignore).mean())
                lf = LabelFile(case, expert, split, p, kind, frac)
                if kind == "partial" and frac == 0.0:
                    self.warnings.append(f"{p}: partial label annotates no voxel; it is left out of training")
                    excluded.append(lf)
                    continue
                labels.append(lf)
        return cases, labels, excluded


def geometry_problems(path: str | os.PathLike, shape: tuple[int, ...], affine: np.ndarray, *, like: CaseFiles) -> list[str]:
    """Why a file of ``shape`` and ``affine`` is not on the grid of case ``like`` (rule 4), or ``[]``.

    The tolerances are the dataset contract's: spacing 1e-3 mm, direction cosines 1e-4, origin 1e-3 mm.
    """
    problems: list[str] = []
    vol = (tuple(int(s) for s in shape), np.asarray(affine, dtype=np.float64))
    _compare_geometry((like.shape, like.affine), vol, Path(path), problems, against=like.images[0])
    return problems


def _geometry(path: Path, *, read_voxels: bool, kind: str):
    if read_voxels:
        vol = load_volume(path, kind=kind)
        return tuple(int(s) for s in vol.array.shape), vol.affine, vol.array
    img = read_header(path)
    return volume_shape(img, path), np.asarray(img.affine, dtype=np.float64), None


def _compare_geometry(ref, vol, path: Path, problems: list[str], against: Path | None = None):
    """Check ``vol`` against the case's reference geometry; return the reference."""
    if ref is None:
        return vol[0], vol[1]
    shape, affine = vol[0], vol[1]
    other = f" of {against.name}" if against is not None else " of the case's first channel"
    if shape != ref[0]:
        problems.append(f"{path}: shape {shape} differs from shape {ref[0]}{other}; resample it onto the image grid")
        return ref
    sp, sp_ref = np.array(spacing_of(affine)), np.array(spacing_of(ref[1]))
    dirs, dirs_ref = affine[:3, :3] / sp, ref[1][:3, :3] / sp_ref
    if np.abs(sp - sp_ref).max() > SPACING_TOL:
        problems.append(f"{path}: voxel spacing {_vec(sp, 4)} differs from {_vec(sp_ref, 4)}{other}; resample it onto the image grid")
    elif np.abs(dirs - dirs_ref).max() > DIRECTION_TOL:
        problems.append(f"{path}: orientation (direction cosines) differs from{other}; resample or reorient it onto the image grid")
    elif np.abs(affine[:3, 3] - ref[1][:3, 3]).max() > ORIGIN_TOL:
        problems.append(f"{path}: origin {_vec(affine[:3, 3], 3)} differs from {_vec(ref[1][:3, 3], 3)}{other}; copy the image's header geometry onto it")
    return ref


def _vec(values, digits: int) -> str:
    return "(" + ", ".join(f"{round(float(v), digits):g}" for v in values) + ")"


def _value_problem(array: np.ndarray, allowed: np.ndarray, spec: DatasetSpec, path: Path) -> str | None:
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            return f"{path}: label holds NaN or infinite values; labels must be whole numbers from dataset.json labels"
        if (array != np.round(array)).any():
            sample = array[array != np.round(array)].flat[0]
            return f"{path}: fractional label value {float(sample):g}; labels must be whole numbers (threshold or round it in your tool, deliberately)"
    values = np.unique(array)
    unknown = values[~np.isin(values, allowed)]
    if unknown.size:
        shown = ", ".join(f"{float(v):g}" for v in unknown[:5])
        return f"{path}: label value(s) {shown} not declared in dataset.json labels {shorten(spec.labels, 200)}; declare them or relabel"
    return None
