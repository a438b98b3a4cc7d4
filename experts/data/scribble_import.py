"""Real scribbles from outside annotation tools, added to a dataset as one expert.

:func:`import_scribbles` reads a folder of ``<case>.nii.gz`` (or ``.nii``) label files drawn on the
dataset's own images, checks each against its case (the case exists; shape and affine match the
image within the dataset contract's tolerances; every value is unlabelled or a class under the
tool's convention, :mod:`experts.data.label_conventions`), maps it to the dataset's classes and
``ignore`` value and adds the lot as expert ``expert`` with an
:class:`~experts.data.expert_writer.ExpertWriter`: training cases to ``labelsTr/<expert>/``,
held-out cases (images in ``imagesTs``) to ``labelsTs/<expert>/``, all or nothing. A file that
annotates no voxel is left out with a warning (DATASET_SPEC rule 7). The source folder is only read.

Example:
    >>> import_scribbles("itksnap_export", "demo_data", expert="drnew", unlabelled="zero-shifted")
"""

from __future__ import annotations

import os
from pathlib import Path

from experts.data.expert_writer import META_DIR, AddedExpert, ExpertWriter, check_new_expert, expert_entry
from experts.data.label_conventions import ZERO_SHIFTED, parse_unlabelled, to_partial_label
from experts.data.manifest import geometry_problems, scan_dataset
from experts.data.nifti import load_volume
from experts.data.spec import FILE_ENDINGS
from experts.errors import DatasetError

__all__ = ["import_scribbles", "scribble_files"]


def scribble_files(src: str | os.PathLike) -> tuple[dict[str, Path], list[str]]:
    """``case -> file`` of the NIfTI files in ``src`` (not recursive, hidden files skipped), and warnings
    for the other files.

    Raises:
        DatasetError: ``src`` is not a folder, holds no NIfTI file, or holds one case twice.
    """
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder; pass the folder holding <case>.nii.gz scribble files")
    files: dict[str, Path] = {}
    warnings = []
    for p in sorted(src.iterdir()):
        if p.name.startswith("."):
            continue
        ending = next((e for e in FILE_ENDINGS if p.name.endswith(e)), None)
        if ending is None or not p.is_file():
            warnings.append(f"{p}: not a <case>.nii.gz or <case>.nii file; ignored")
            continue
        case = p.name[: -len(ending)]
        if case in files:
            raise DatasetError(f"{p}: case {case} also has {files[case].name}; keep one file per case")
        files[case] = p
    if not files:
        raise DatasetError(f"{src}: holds no <case>.nii.gz or <case>.nii file; export the scribbles as NIfTI label maps named after the cases")
    return files, warnings


def import_scribbles(src: str | os.PathLike, root: str | os.PathLike, *, expert: str, unlabelled: str | int,
                     role: str | None = "new", overwrite: bool = False) -> AddedExpert:
    """Add the scribble files of ``src`` to dataset ``root`` as expert ``expert``.

    Args:
        src: folder of ``<case>.nii.gz`` / ``<case>.nii`` label maps for cases of ``root``.
        root: the dataset folder (needs an ``ignore`` label); changed in place.
        expert: the new expert's id.
        unlabelled: the tool's convention: ``"zero-shifted"`` (0 = unlabelled, 1 = background,
            2 = class 1, ...) or the integer marking unlabelled voxels (other values are classes as stored).
        role: ``"new"`` (default: kept out of pretraining) or ``"pretrain"``.
        overwrite: replace an existing expert ``expert`` (only its label folders and entry).

    Returns:
        The :class:`AddedExpert`; files left out are in its ``warnings``.

    Raises:
        DatasetError / ConfigError: every problem found, one line each (the file, the value, the
            fix); the dataset is then unchanged.
    """
    unlabelled = parse_unlabelled(unlabelled)
    manifest = scan_dataset(root, read_voxels=False)
    spec = manifest.spec
    if spec.ignore_label is None:
        raise DatasetError(f'{manifest.root / "dataset.json"}: labels declare no "ignore" value, which scribbles need; add "ignore": {max(spec.labels.values()) + 1} (the highest value) to "labels"')
    check_new_expert(manifest.root, expert, overwrite=overwrite)
    src = Path(src).expanduser().resolve()
    files, warnings = scribble_files(src)
    unknown = [f"{p}: no case {case} in {manifest.root} (imagesTr/ or imagesTs/); rename the file after its case or remove it" for case, p in files.items() if case not in manifest.cases]
    if unknown:
        raise DatasetError(unknown)
    problems: list[str] = []
    with ExpertWriter(manifest.root, expert, overwrite=overwrite) as writer:
        for line in warnings:
            writer.warn(line)
        for case, path in files.items():
            like = manifest.cases[case]
            try:
                vol = load_volume(path, kind="label")
                wrong = geometry_problems(path, vol.array.shape, vol.affine, like=like)
                if wrong:
                    problems += wrong
                    continue
                partial = to_partial_label(vol.array, unlabelled=unlabelled, class_names=spec.class_names, ignore_label=spec.ignore_label, where=str(path))
            except DatasetError as err:
                problems += err.problems
                continue
            if not (partial != spec.ignore_label).any():
                writer.warn(f"{path}: annotates no voxel; skipped")
                continue
            writer.write(split=like.split, case=case, array=partial, affine=vol.affine)
        if problems:
            raise DatasetError(problems)
        if not any(writer.written.values()):
            raise DatasetError(f"{src}: no file annotates any voxel; nothing to import (check --unlabelled)")
        convention = "zero-shifted (0 = unlabelled, classes shifted by one)" if unlabelled == ZERO_SHIFTED else f"{unlabelled} = unlabelled"
        n = sum(len(v) for v in writer.written.values())
        description = f"scribbles imported from {src.name}/ ({n} files, unlabelled: {convention}); provenance in {META_DIR}/import-{expert}.json"
        log = {"tool": "expertseg data import scribbles", "source": str(src), "expert": expert, "unlabelled": unlabelled,
               "ignore_label": spec.ignore_label, "files": {c: str(files[c]) for v in writer.written.values() for c in v}, "skipped": list(writer.warnings)}
        return writer.commit(entry=expert_entry(description, role), log=log, log_kind="import")
