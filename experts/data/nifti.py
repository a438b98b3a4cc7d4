"""NIfTI reading and writing that keeps the geometry.

Images are read as float32, labels as their stored values (``np.asanyarray(img.dataobj)``: nibabel's
``get_fdata`` would turn every label into float64). The affine travels with the array. Files written
here carry identical qform and sform (code 1, scanner) and are written atomically, so a crash never
leaves a half-written volume behind.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from experts.errors import DatasetError

__all__ = [
    "MAX_VOXELS",
    "MAX_DIM",
    "Volume",
    "read_header",
    "load_volume",
    "save_volume",
    "spacing_of",
]

#: A header declaring more voxels than this is refused before any allocation (1 Gi voxels).
MAX_VOXELS = 2**30
#: Largest size accepted along one axis.
MAX_DIM = 16384


@dataclass(frozen=True)
class Volume:
    """An array with the affine that places it in scanner space.

    Attributes:
        array: ``[X, Y, Z]`` voxel values (float32 for images, stored values for labels).
        affine: ``[4, 4]`` voxel-to-world (RAS+ mm) matrix.
    """

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return spacing_of(self.affine)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing in mm: the column norms of the affine's 3x3 part."""
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def read_header(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI file without reading its voxels and check what its header declares.

    Raises:
        DatasetError: not a NIfTI file, unreadable header, or absurd declared dimensions.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise DatasetError(
            f"{path}: not a readable NIfTI file: truncated, corrupt or another format ({_short(err)}); re-export it as .nii.gz from your viewer or converter"
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DatasetError(f"{path}: {type(img).__name__} is not NIfTI; convert it to .nii.gz")
    shape = img.header.get_data_shape()
    if any(int(s) <= 0 or int(s) > MAX_DIM for s in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
        raise DatasetError(
            f"{path}: header declares dimensions {tuple(int(s) for s in shape)}, beyond what this platform reads "
            f"(at most {MAX_DIM} per axis and {MAX_VOXELS} voxels); the header is probably corrupt, re-export the file"
        )
    return img


def load_volume(path: str | os.PathLike, *, kind: str = "image") -> Volume:
    """Read a 3D NIfTI volume with its affine.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        kind: ``"image"`` (float32 intensities) or ``"label"`` (stored values, any dtype).

    Returns:
        The :class:`Volume`; a 4D file whose 4th axis has size 1 is squeezed to 3D.

    Raises:
        DatasetError: unreadable or truncated file, not 3D, non-finite intensities.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    img = read_header(path)
    shape = img.header.get_data_shape()
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DatasetError(
            f"{path}: {len(shape)}D volume of shape {tuple(int(s) for s in shape)}, expected 3D; "
            "store one channel per file (<case>_0000, <case>_0001, ...) and 2D slices as X x Y x 1"
        )
    try:
        if kind == "image":
            array = np.asarray(img.get_fdata(dtype=np.float32))
        else:
            array = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise DatasetError(f"{path}: truncated or corrupt voxel data ({_short(err)}); copy or export the file again") from None
    array = array.reshape(shape)
    if kind == "image" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DatasetError(f"{path}: {bad} voxels are NaN or infinite; fix or re-export the image (e.g. replace NaN by 0)")
    return Volume(array=array, affine=np.asarray(img.affine, dtype=np.float64))


def save_volume(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, *, dtype=None) -> Path:
    """Write a 3D volume atomically with identical qform and sform.

    Args:
        path: destination ending in ``.nii`` or ``.nii.gz``.
        array: ``[X, Y, Z]`` values.
        affine: ``[4, 4]`` voxel-to-world matrix.
        dtype: stored dtype (default: the array's dtype).

    Returns:
        The written path.
    """
    path = Path(path)
    if not (path.name.endswith(".nii.gz") or path.name.endswith(".nii")):
        raise ValueError(f"{path}: NIfTI file names end with .nii or .nii.gz")
    array = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_data_dtype(array.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name[: -len(ending)]}.tmp{os.getpid()}{ending}")
    try:
        nib.save(img, str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:160]
