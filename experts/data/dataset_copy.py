"""A new dataset derived from an existing one: a linked copy that appears only when complete.

:func:`derived_dataset` copies a dataset folder into a hidden temporary sibling of the destination
(hard links where the filesystem allows, byte copies elsewhere; ``dataset.json`` always a real copy),
lets the caller change the copy, and moves it into place only when the ``with`` block succeeds. The
source is never written: everything the platform writes replaces files by rename
(:func:`~experts.data.nifti.save_volume`, atomic ``dataset.json`` updates), which never changes the
shared inode of a hard link.

Example:
    >>> with derived_dataset("demo_data", "demo_plus") as copy:
    ...     with ExpertWriter(copy, "drnew-line") as writer: ...
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from experts.errors import DatasetError

__all__ = ["derived_dataset", "link_tree"]


@contextmanager
def derived_dataset(src: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a linked copy of dataset ``src`` that becomes ``out`` when the block succeeds.

    Raises:
        DatasetError: ``out`` overlaps ``src``, is a file, or is a non-empty folder without
            ``overwrite``; nothing is written then. An error inside the block removes the copy
            and leaves ``out`` as it was.
    """
    src_path, out_path = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if out_path == src_path or out_path.is_relative_to(src_path) or src_path.is_relative_to(out_path):
        raise DatasetError(f"{out}: overlaps the source dataset {src_path}; choose an --out folder outside it")
    if out_path.exists() and not out_path.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; choose another --out folder")
    if out_path.is_dir() and any(out_path.iterdir()) and not overwrite:
        raise DatasetError(f"{out}: output folder is not empty; pass --overwrite or choose an empty folder")
    created = [p for p in reversed(out_path.parents) if not p.exists()]
    tmp = out_path.parent / f".{out_path.name}.building-{uuid.uuid4().hex[:8]}"
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        link_tree(src_path, tmp)
        yield tmp
        _move_into_place(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                break
        raise


def link_tree(src: Path, dst: Path) -> None:
    """Copy the folder ``src`` to ``dst`` (absent) with hard links, byte copies where linking fails.

    ``dataset.json`` files are copied, never linked; staging leftovers (``.expertseg/staging-*``) are skipped.
    """

    def link_or_copy(a: str, b: str) -> None:
        if Path(a).name == "dataset.json":
            shutil.copy2(a, b)
            return
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(folder).name == ".expertseg" and n.startswith("staging-")]

    shutil.copytree(src, dst, copy_function=link_or_copy, ignore=ignore)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` (absent, empty, or to be overwritten) by ``tmp`` with renames."""
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
