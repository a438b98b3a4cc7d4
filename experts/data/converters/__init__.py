"""Importers from public dataset layouts into the multi-expert layout (DATASET_SPEC v1).

:func:`import_dataset` runs one importer of :data:`IMPORTERS`. The source folder is only read. The
importer writes into a hidden temporary sibling of ``out`` through a :class:`DatasetWriter`; the result
is checked with :func:`~experts.data.manifest.scan_dataset` there and moved into place only when the
whole conversion succeeded, so an error never leaves a half-written dataset behind. Every file is
re-saved with :func:`~experts.data.nifti.save_volume` (identical qform and sform); label masks are
written as ``uint8`` (``uint16`` beyond 255 labels).

Formats: ``qubiq`` (:mod:`.qubiq`), ``msseg2016`` (:mod:`.msseg2016`), ``nnunet`` (:mod:`.nnunet`).
"""

from __future__ import annotations

import gzip
import inspect
import os
import re
import shutil
import sys
import uuid
import zlib
from pathlib import Path

import numpy as np

from experts.data.manifest import SPLITS, scan_dataset
from experts.data.nifti import read_header, save_volume
from experts.data.spec import DatasetSpec, ExpertInfo, valid_id, write_spec
from experts.errors import DatasetError

__all__ = ["IMPORTERS", "import_dataset", "DatasetWriter", "read_nifti", "binary_mask", "safe_id", "track", "unique_test_ids"]

_NOT_OPTIONS = {"src", "writer", "progress"}


def import_dataset(fmt: str, *, src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, progress: bool | None = None, **options) -> Path:
    """Convert the dataset in ``src`` (layout ``fmt``) into the multi-expert layout in ``out``.

    Args:
        fmt: one of :data:`IMPORTERS` (``"qubiq"``, ``"msseg2016"``, ``"nnunet"``).
        src: the source folder; never modified.
        out: the dataset folder to create; must be absent or empty unless ``overwrite``.
        overwrite: replace a non-empty ``out`` (only once the new dataset is complete).
        progress: show a progress bar; ``None`` shows one when stderr is a terminal.
        **options: importer options, e.g. ``task=1`` (qubiq), ``variant="raw"`` (msseg2016),
            ``expert="nnunet"`` (nnunet).

    Returns:
        The resolved ``out`` folder, a dataset that passes :func:`scan_dataset`.

    Raises:
        DatasetError: bad arguments, a source that does not fit the layout, or a result that breaks
            the dataset contract; ``out`` is then left as it was.
    """
    if fmt not in IMPORTERS:
        raise DatasetError(f"unknown import format {fmt!r}; choose one of {', '.join(IMPORTERS)}")
    convert = IMPORTERS[fmt]
    allowed = [n for n, p in inspect.signature(convert).parameters.items() if p.kind is p.KEYWORD_ONLY and n not in _NOT_OPTIONS]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(f"{fmt}: unknown option(s) {', '.join(unknown)}; this importer accepts: {', '.join(allowed) or 'no options'}")
    src_path, out_path = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if not src_path.is_dir():
        raise DatasetError(f"{src}: source folder not found; pass the folder holding the {fmt} dataset")
    if out_path == src_path or out_path.is_relative_to(src_path) or src_path.is_relative_to(out_path):
        raise DatasetError(f"{out}: the output folder overlaps the source folder {src_path}; the source is never modified, choose an output folder outside it")
    if out_path.exists() and not out_path.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; choose another output folder")
    if out_path.is_dir() and any(out_path.iterdir()) and not overwrite:
        raise DatasetError(f"{out}: output folder is not empty; pass --overwrite or choose an empty folder")

    created = [p for p in reversed(out_path.parents) if not p.exists()]
    tmp = out_path.parent / f".{out_path.name}.importing-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        writer = DatasetWriter(tmp)
        show = sys.stderr.isatty() if progress is None else bool(progress)
        convert(src=src_path, writer=writer, progress=show, **options)
        if not (tmp / "dataset.json").is_file():
            raise RuntimeError(f"importer {fmt!r} wrote no dataset.json")
        try:
            scan_dataset(tmp)
        except DatasetError as err:
            raise DatasetError([writer.explain(line) for line in err.problems] + [f"{out}: import stopped, nothing was written"]) from None
        _move_into_place(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                break
        raise
    return out_path


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` (absent, empty, or to be overwritten) by ``tmp`` with renames on one filesystem."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
            out.rename(old)
        else:
            out.rmdir()
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class DatasetWriter:
    """Writes one dataset folder and remembers which source file each written file came from.

    Args:
        root: the (empty) dataset folder.
        file_ending: ``".nii.gz"`` (default) or ``".nii"``.
    """

    def __init__(self, root: Path, *, file_ending: str = ".nii.gz"):
        self.root = Path(root)
        self.file_ending = file_ending
        self.sources: dict[Path, Path] = {}
        self.case_split: dict[str, str] = {}
        self.experts: list[str] = []

    def image(self, *, split: str, case: str, channel: int, array: np.ndarray, affine: np.ndarray, source: Path) -> Path:
        """Write channel ``channel`` of ``case``: integer types up to 16 bits kept, others as float32."""
        self._check_case(case, split, source)
        array = np.asarray(array)
        if array.dtype == bool:
            array = array.astype(np.uint8)
        elif not (np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 2):
            array = array.astype(np.float32)
            if not np.isfinite(array).all():
                raise DatasetError(f"{source}: {int((~np.isfinite(array)).sum())} voxels are NaN or infinite; fix the image (e.g. replace NaN by 0) and import again")
        return self._save(self.root / SPLITS[split][0] / f"{case}_{channel:04d}{self.file_ending}", array, affine, source)

    def label(self, *, split: str, expert: str, case: str, array: np.ndarray, affine: np.ndarray, source: Path) -> Path:
        """Write ``expert``'s label of ``case`` (whole non-negative values) as uint8, or uint16 if needed."""
        if not valid_id(expert):
            raise DatasetError(f'{source}: expert id "{expert}" is not allowed; use letters, digits, "_" and "-"')
        self._check_case(case, split, source)
        array = np.asarray(array)
        top = int(array.max()) if array.size else 0
        dtype = np.uint8 if top <= 255 else np.uint16
        if expert not in self.experts:
            self.experts.append(expert)
        return self._save(self.root / SPLITS[split][1] / expert / f"{case}{self.file_ending}", array.astype(dtype), affine, source)

    def finish(self, *, name: str, description: str, channel_names: list[str], labels: dict[str, int], experts: dict[str, ExpertInfo], extra: dict | None = None) -> Path:
        """Write ``dataset.json``; ``experts`` lists the candidates, those that received no label are left out."""
        (self.root / "labelsTr").mkdir(parents=True, exist_ok=True)
        kept = {e: info for e, info in experts.items() if e in self.experts}
        kept.update({e: ExpertInfo() for e in self.experts if e not in kept})
        spec = DatasetSpec(
            name=name,
            description=description,
            channel_names={str(i): n for i, n in enumerate(channel_names)},
            labels=dict(labels),
            file_ending=self.file_ending,
            experts=kept,
            extra=dict(extra or {}),
        )
        return write_spec(self.root, spec)

    def explain(self, line: str) -> str:
        """Rewrite a problem found in the written dataset so that it names the source file."""
        for dst, src in self.sources.items():
            if str(dst) in line:
                line = line.replace(str(dst), f"{src} (converted to {dst.relative_to(self.root)})")
        return line.replace(str(self.root), "<output>")

    def _check_case(self, case: str, split: str, source: Path) -> None:
        if not valid_id(case):
            raise DatasetError(f'{source}: case id "{case}" is not allowed; use letters, digits, "_" and "-"')
        if self.case_split.setdefault(case, split) != split:
            raise DatasetError(f'{source}: case id "{case}" would be in both the training and the test split; rename one of the cases')

    def _save(self, path: Path, array: np.ndarray, affine: np.ndarray, source: Path) -> Path:
        if path in self.sources:
            raise DatasetError(f"{source}: would overwrite {path.relative_to(self.root)}, already converted from {self.sources[path]}; two source files map to one case")
        self.sources[path] = source
        return save_volume(path, array, affine)


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file's stored (scaled) values and affine; trailing axes of size 1 beyond the 3rd are dropped.

    Raises:
        DatasetError: unreadable, truncated, or a colour (RGB) data type.
    """
    img = read_header(path)
    if img.get_data_dtype().fields is not None:
        raise DatasetError(f"{path}: colour (RGB) NIfTI data; convert the image to a single grey channel and import again")
    shape = list(img.header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    try:
        array = np.asanyarray(img.dataobj).reshape(shape)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise DatasetError(f"{path}: truncated or corrupt voxel data ({str(err)[:120]}); copy or download the file again") from None
    return np.asarray(array), np.asarray(img.affine, dtype=np.float64)


def binary_mask(array: np.ndarray, path: Path) -> np.ndarray:
    """A 0/1 mask as uint8: 0/1 integers or floats accepted, 0/255 rescaled; anything else refused.

    Raises:
        DatasetError: fractional, negative or other values, naming the file.
    """
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DatasetError(f"{path}: mask holds NaN or infinite values; masks must be 0/1")
    values = np.unique(array)
    if values.size and np.issubdtype(array.dtype, np.floating) and (values != np.round(values)).any():
        frac = values[values != np.round(values)]
        raise DatasetError(f"{path}: fractional mask value(s) {', '.join(f'{float(v):g}' for v in frac[:3])}; masks must be binary 0/1 (threshold it deliberately in your tool, it is not rounded here)")
    if set(values.tolist()) <= {0, 1}:
        return (array == 1).astype(np.uint8)
    if set(values.tolist()) <= {0, 255}:
        return (array == 255).astype(np.uint8)
    raise DatasetError(f"{path}: mask values {', '.join(f'{float(v):g}' for v in values[:6])} are not binary; masks must hold 0/1 (or 0/255)")


def safe_id(text: str) -> str:
    """``text`` made a valid id: runs of other characters become ``_``, leading ``_``/``-`` dropped."""
    out = re.sub(r"[^A-Za-z0-9_-]+", "_", text).lstrip("_-")
    if not valid_id(out):
        raise DatasetError(f'"{text}": cannot make a case id of this name; rename it with letters and digits')
    return out


def track(items, *, desc: str, enabled: bool):
    """``items`` wrapped in a tqdm progress bar when ``enabled``."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="case", file=sys.stderr)


def unique_test_ids(train: list[str], test: list[str]) -> dict[str, str]:
    """Map held-out ids to ids not used by a training case (``test_`` prefix on a clash)."""
    used = set(train)
    return {t: (f"test_{t}" if t in used else t) for t in test}


from experts.data.converters import msseg2016, nnunet, qubiq  # noqa: E402  (importers use the helpers above)

#: format name -> importer ``convert(*, src, writer, progress, **options)``
IMPORTERS = {"qubiq": qubiq.convert, "msseg2016": msseg2016.convert, "nnunet": nnunet.convert}
