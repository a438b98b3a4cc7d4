"""Helpers shared by the converter tests: write a NIfTI, fingerprint a source tree."""

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np


def tree_hash(root: Path) -> str:
    """Names, contents and modification times of every file under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes() + str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def save_nifti(path: Path, array: np.ndarray, affine) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path
