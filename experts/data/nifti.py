"""NIfTI reading and writing that keeps the geometry.

Images are read as float32, labels as their stored values (``np.asanyarray(img.dataobj)``: nibabel's
``get_fdata`` would turn every label into float64). The affine travels with the array. Files written
here carry identical qform and sform (code 1, scanner) and are written atomically, so a crash never
leaves a half-written volume behind.

What a header declares is checked before a voxel is read (:func:`read_header`), so a few hundred
hostile bytes cannot cost gigabytes and nothing that passes ``expertseg data check`` crashes later:

- ``dim[0]`` (the number of dimensions) is 1..7, every declared axis holds 1..:data:`MAX_DIM` voxels;
- the declared voxels fit the voxel budget (:func:`max_voxels`: ``EXPERTSEG_MAX_VOXELS``, default
  :data:`MAX_VOXELS` = 512**3 per file);
- the file can hold what the header declares: a ``.nii`` file is at least ``vox_offset`` + the data
  size; a ``.nii.gz`` file is at least 1/:data:`GZIP_MAX_RATIO` of it (deflate never compresses more
  than 1032:1, so a header declaring more is lying: the file is truncated or corrupt);
- the affine nibabel uses (sform, else qform, else pixdim) and every enabled sform/qform is finite;
  each axis of the file has a spacing of at least :data:`MIN_SPACING` mm and, for 3D files, the axes
  are independent (a 2D file's unused third column may be zero: converters give it the slice normal).

A volume (:func:`volume_shape`) is 3D (or 4D with one time point), with at least :data:`MIN_AXIS`
voxels along every axis but one: a 2D slice is stored as X x Y x 1 (DATASET_SPEC rule 4), but a
volume thin along two axes is a line or a point that the network would see as padding only.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from experts.errors import ConfigError, DatasetError, shorten

__all__ = [
    "MAX_VOXELS",
    "MAX_DIM",
    "MIN_AXIS",
    "MIN_SPACING",
    "GZIP_MAX_RATIO",
    "VOXEL_BUDGET_ENV",
    "Volume",
    "max_voxels",
    "read_header",
    "volume_shape",
    "load_volume",
    "save_volume",
    "spacing_of",
]

#: Default voxel budget of one volume (512**3 = 134,217,728 voxels: 0.5 GB as float32).
MAX_VOXELS = 512**3
#: The environment variable that sets the voxel budget (a whole number of voxels).
VOXEL_BUDGET_ENV = "EXPERTSEG_MAX_VOXELS"
#: Largest size accepted along one axis.
MAX_DIM = 16384
#: Fewest voxels along every axis of a volume but one (see :func:`volume_shape`).
MIN_AXIS = 2
#: Smallest voxel spacing in mm (below it a spacing is a corrupt or zero pixdim, not a measurement).
MIN_SPACING = 1e-6
#: Deflate's maximum compression ratio (zlib's documented bound): a .nii.gz file of N bytes holds at
#: most 1032 * N bytes of header and voxels.
GZIP_MAX_RATIO = 1032

_HEADER_ERRORS = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    OSError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    ValueError,
    struct.error,
)


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


def max_voxels() -> int:
    """The voxel budget of one volume: ``EXPERTSEG_MAX_VOXELS`` if set, else :data:`MAX_VOXELS`.

    Raises:
        ConfigError: the variable is not a positive whole number.
    """
    text = os.environ.get(VOXEL_BUDGET_ENV, "").strip()
    if not text:
        return MAX_VOXELS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise ConfigError(f"{VOXEL_BUDGET_ENV}={shorten(text)}: must be a positive whole number of voxels, e.g. {MAX_VOXELS} (512**3, the default)")
    return int(value)


def read_header(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI file without reading its voxels and check what its header declares.

    Raises:
        DatasetError: not a NIfTI file, unreadable header, dimensions beyond the limits, a file too
            small for the data it declares, or a non-finite or degenerate affine (one line).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror or type(err).__name__}); check the path and its permissions") from None
    _check_dim0(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except nib.spatialimages.HeaderDataError as err:
        raise DatasetError(f"{path}: inconsistent NIfTI header ({_short(err)}); re-export it as .nii.gz from your viewer or converter") from None
    except _HEADER_ERRORS as err:
        raise DatasetError(
            f"{path}: not a readable NIfTI file: truncated, corrupt or another format ({_short(err)}); re-export it as .nii.gz from your viewer or converter"
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DatasetError(f"{path}: {type(img).__name__} is not NIfTI; convert it to .nii.gz")
    shape = tuple(int(s) for s in img.header.get_data_shape())
    n_voxels = math.prod(shape)
    if any(s <= 0 or s > MAX_DIM for s in shape):
        raise DatasetError(
            f"{path}: header declares dimensions {shape}, beyond what this platform reads "
            f"(1 to {MAX_DIM} voxels per axis); the header is probably corrupt, re-export the file"
        )
    budget = max_voxels()
    if n_voxels > budget:
        raise DatasetError(
            f"{path}: header declares dimensions {shape} ({n_voxels:,} voxels), above the voxel budget of {budget:,} per volume; "
            f"crop or downsample the volume, or raise {VOXEL_BUDGET_ENV} if the file is genuine"
        )
    _check_data_size(path, img, shape, n_voxels, size)
    _check_affine(path, img)
    return img


def volume_shape(img: nib.Nifti1Image, path: str | os.PathLike) -> tuple[int, int, int]:
    """The 3D shape of an opened NIfTI file (a 4th axis of size 1 is dropped), checked.

    A volume has at least :data:`MIN_AXIS` voxels along every axis but one: X x Y x 1 is a 2D slice
    (DATASET_SPEC rule 4); X x 1 x 1 is a line, which the network (patches of at least 16 voxels per
    axis for the default 4 levels) would see as padding only.

    Raises:
        DatasetError: not 3D, or thinner than :data:`MIN_AXIS` along two or more axes.
    """
    shape = tuple(int(s) for s in img.header.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DatasetError(
            f"{path}: {len(shape)}D volume of shape {shape}, expected 3D; "
            "store one channel per file (<case>_0000, <case>_0001, ...) and 2D slices as X x Y x 1"
        )
    thin = sum(1 for s in shape if s < MIN_AXIS)
    if thin > 1:
        raise DatasetError(
            f"{path}: shape {shape} is thinner than {MIN_AXIS} voxels along {thin} axes; a volume needs at least "
            f"{MIN_AXIS} voxels along every axis but one (2D slices are X x Y x 1); remove the file or export the whole volume"
        )
    return shape


def _check_dim0(path: Path) -> None:
    """``dim[0]`` read from the raw header: nibabel guesses the byte order from it, so a corrupt value
    would otherwise surface as an unrelated error (or a byte-swapped header)."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return  # nibabel reports what is wrong with the file
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dims = struct.unpack(order + "8h", head[40:56])
        elif len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            dims = struct.unpack(order + "8q", head[16:80])
        else:
            continue
        if not 1 <= dims[0] <= 7:
            raise DatasetError(
                f"{path}: header dim[0] (the number of dimensions) is {dims[0]}, must be 1 to 7; "
                "the header is corrupt, re-export the file"
            )
        return


def _check_data_size(path: Path, img, shape: tuple[int, ...], n_voxels: int, size: int) -> None:
    """The file must be able to hold the header and voxels it declares."""
    dtype = img.header.get_data_dtype()
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    needed = offset + n_voxels * dtype.itemsize
    if path.name.endswith(".gz"):
        if needed > GZIP_MAX_RATIO * size:
            raise DatasetError(
                f"{path}: header declares dimensions {shape} of {dtype.name} ({_bytes(needed)}), more than a "
                f"{_bytes(size)} gzip file can hold (at most {GZIP_MAX_RATIO}:1); the file is truncated or its header is corrupt, copy or export it again"
            )
    elif not path.name.endswith((".bz2", ".zst")) and needed > size:
        raise DatasetError(
            f"{path}: header declares dimensions {shape} of {dtype.name} ({_bytes(needed)} with the header), "
            f"but the file holds {_bytes(size)}; the file is truncated or its header is corrupt, copy or export it again"
        )


def _check_affine(path: Path, img) -> None:
    """Finite sform/qform where enabled, and a usable voxel-to-world matrix."""
    hdr = img.header
    if int(hdr["sform_code"]) > 0 and not np.isfinite(np.concatenate([hdr["srow_x"], hdr["srow_y"], hdr["srow_z"]])).all():
        raise DatasetError(f"{path}: header sform holds NaN or infinite values; fix the file's geometry (e.g. copy it from the image) or re-export it")
    if int(hdr["qform_code"]) > 0:
        q = [hdr[k] for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")]
        if not np.isfinite(np.concatenate([np.ravel(q), hdr["pixdim"][:4]])).all():
            raise DatasetError(f"{path}: header qform (quaternion, offset or pixdim) holds NaN or infinite values; fix the file's geometry or re-export it")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise DatasetError(f"{path}: the voxel-to-world affine holds NaN or infinite values (pixdim, sform or qform); fix the file's geometry or re-export it")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spatial = min(3, len(img.header.get_data_shape()))  # a 2D file's third column is not used
    if (spacing[:spatial] < MIN_SPACING).any():
        shown = "(" + ", ".join(f"{v:g}" for v in spacing) + ")"
        raise DatasetError(
            f"{path}: voxel spacing {shown} mm: every axis needs a spacing of at least {MIN_SPACING:g} mm; "
            "fix pixdim / the sform in the header (spacing comes from the affine)"
        )
    if spatial == 3 and abs(np.linalg.det(affine[:3, :3] / spacing)) < 1e-3:
        raise DatasetError(f"{path}: the affine's axes are not independent (degenerate direction cosines); fix the sform/qform or re-export the file")


def _bytes(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def load_volume(path: str | os.PathLike, *, kind: str = "image") -> Volume:
    """Read a 3D NIfTI volume with its affine.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        kind: ``"image"`` (float32 intensities) or ``"label"`` (stored values, any dtype).

    Returns:
        The :class:`Volume`; a 4D file whose 4th axis has size 1 is squeezed to 3D.

    Raises:
        DatasetError: unreadable or truncated file, beyond the limits of :func:`read_header`, not a
            volume (:func:`volume_shape`), non-finite intensities.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    img = read_header(path)
    shape = volume_shape(img, path)
    try:
        if kind == "image":
            array = np.asarray(img.get_fdata(dtype=np.float32))
        else:
            array = np.asanyarray(img.dataobj)
    except _HEADER_ERRORS as err:
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
