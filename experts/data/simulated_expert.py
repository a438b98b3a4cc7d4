"""A simulated doctor: partial labels drawn from an expert's dense labels, added as a new expert.

:func:`simulate_expert` draws, for every dense training label of expert ``source``, a partial label
with a registered scribble style (:mod:`experts.scribbles`; a habit is the style ``"habit"``): the
style's random choices are made with ``numpy.random.default_rng(seed * 1000 + i)`` (``i`` the case's
position among ``source``'s training labels, sorted by case id), at the voxel spacing of the label's
affine, then drawn deterministically, so the same call writes byte-identical files. The new expert's
held-out labels (``labelsTs``) are copies of ``source``'s dense ones, so the simulated doctor can be
scored. The files are added with an :class:`~experts.data.expert_writer.ExpertWriter` (all or
nothing, only under the new expert's folders, ``dataset.json`` updated atomically), in place or
into a new dataset (``out``). Every case's drawn parameters are logged to
``<dataset>/.expertseg/scribbles-<expert>.json`` (replayable with the style's ``apply``).

Example:
    >>> simulate_expert("demo_data", source="drnew", style="habit", params={"habit": "contour-tracer"}, seed=0)
    AddedExpert(root=PosixPath('demo_data'), expert='drnew-contour-tracer', ...)
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from experts.data.dataset_copy import derived_dataset
from experts.data.expert_writer import META_DIR, AddedExpert, ExpertWriter, check_new_expert, expert_entry
from experts.data.manifest import Manifest, label_kind, scan_dataset
from experts.data.nifti import load_volume, spacing_of
from experts.errors import ConfigError, DatasetError

__all__ = ["resolve_style", "scribble_style", "default_expert_id", "simulate_expert", "case_seed"]


def resolve_style(style: str | None, habit: str | None = None) -> str:
    """The style name from ``--style`` and ``--habit`` (a habit implies the style ``"habit"``).

    Raises:
        ConfigError: neither given, an unknown style or habit, or a habit with another style.
    """
    from experts.scribbles import list_habits, list_scribble_styles

    if habit is not None:
        if style not in (None, "habit"):
            raise ConfigError(f"--habit {habit} goes with --style habit, not --style {style}; drop one of them")
        if habit not in list_habits():
            raise ConfigError(f"unknown annotator habit {habit!r}; known habits: {', '.join(list_habits())}")
        return "habit"
    if style is None:
        raise ConfigError(f"no scribble style; pass --style (one of {', '.join(list_scribble_styles())}) or --habit NAME")
    if style not in list_scribble_styles():
        raise ConfigError(f"unknown scribble style {style!r}; known styles: {', '.join(list_scribble_styles())}")
    return style


def scribble_style(style: str, params: dict | None = None):
    """The configured :class:`~experts.scribbles.ScribbleStyle`.

    Raises:
        ConfigError: unknown style or parameters it rejects (one line).
    """
    from experts.scribbles import create_scribble_style

    try:
        return create_scribble_style(style, **dict(params or {}))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"scribble style {style!r} with params {dict(params or {})}: {str(err).splitlines()[0][:300]}") from None


def default_expert_id(source: str, style) -> str:
    """``<source>-<style name>``, or ``<source>-<habit>`` for the habit style."""
    return f"{source}-{style.get_params()['habit'] if style.name == 'habit' else style.name}"


def case_seed(seed: int, index: int) -> int:
    """Seed of the ``index``-th training label: ``seed * 1000 + index``."""
    return int(seed) * 1000 + int(index)


def simulate_expert(root: str | os.PathLike, *, source: str, style: str, params: dict | None = None, new_id: str | None = None,
                    seed: int = 0, role: str | None = "new", out: str | os.PathLike | None = None, overwrite: bool = False,
                    progress: bool = False) -> AddedExpert:
    """Add expert ``new_id`` whose labels are scribbles simulated from ``source``'s dense labels.

    Args:
        root: the dataset folder; changed in place unless ``out`` is given.
        source: the expert whose dense training labels are scribbled on.
        style: a registered scribble style name; ``params`` its configuration (``{"habit": name}`` for ``"habit"``).
        new_id: the new expert's id (default :func:`default_expert_id`).
        seed: base seed (:func:`case_seed`).
        role: ``"new"`` (default: kept out of pretraining) or ``"pretrain"``.
        out: write a new dataset (``root`` plus the expert) there instead; ``root`` is not changed.
        overwrite: replace an existing ``new_id`` (only its label folders and entry) and a non-empty ``out``.
        progress: show a progress bar.

    Returns:
        The :class:`AddedExpert` (its ``root`` is ``out`` when given).

    Raises:
        DatasetError / ConfigError: one line per problem; the dataset (and ``out``) unchanged.
    """
    manifest = scan_dataset(root, read_voxels=False)
    ignore = _ignore_label(manifest)
    if source not in manifest.experts:
        raise DatasetError(f"{manifest.root}: no expert {source!r}; experts: {', '.join(manifest.experts)}")
    instance = scribble_style(style, params)
    new_id = new_id or default_expert_id(source, instance)
    if new_id == source:
        raise DatasetError(f"expert {new_id!r} would replace the labels it is simulated from; choose another id")
    check_new_expert(manifest.root, new_id, overwrite=overwrite)
    train = sorted(manifest.labels_of(expert=source, split="train"), key=lambda lf: lf.case)
    if not train:
        raise DatasetError(f"{manifest.root / 'labelsTr' / source}: expert {source!r} has no training label to simulate scribbles from")
    target = derived_dataset(manifest.root, out, overwrite=overwrite) if out is not None else contextlib.nullcontext(manifest.root)
    with target as dest, ExpertWriter(dest, new_id, overwrite=overwrite) as writer:
        cases = _write_train(writer, manifest, train, instance, ignore=ignore, seed=seed, progress=progress)
        if not cases:
            raise DatasetError(f"{manifest.root / 'labelsTr' / source}: expert {source!r} has no dense training label (all are partial); simulate from an expert with dense labels")
        for lf in sorted(manifest.labels_of(expert=source, split="test"), key=lambda lf: lf.case):
            if _dense(lf.path, manifest, ignore) is None:
                writer.warn(f"{lf.path}: partial; the new expert's held-out labels are copies of dense ones only, case skipped")
            else:
                writer.copy(split="test", case=lf.case, source=lf.path)
        config = instance.get_params()
        description = (f"scribbles simulated from {source}'s dense training labels: style {instance.name} {json.dumps(config)}, seed {seed} "
                       f"(case i: seed*1000+i); test labels are copies of {source}'s; per-case parameters in {META_DIR}/scribbles-{new_id}.json")
        log = {"tool": "expertseg data scribble", "source": source, "expert": new_id, "style": instance.name, "config": config,
               "seed": seed, "case_seed": "seed * 1000 + index of the case among the source's training labels (sorted by case id)",
               "ignore_label": ignore, "train": cases, "test_copies": list(writer.written["test"]), "skipped": list(writer.warnings)}
        added = writer.commit(entry=expert_entry(description, role), log=log, log_kind="scribbles")
    if out is not None:
        final = Path(out).expanduser().resolve()
        added = replace(added, root=final, log=final / META_DIR / added.log.name)
    return added


def _write_train(writer: ExpertWriter, manifest: Manifest, train, instance, *, ignore: int, seed: int, progress: bool) -> list[dict]:
    """Simulate and stage every dense training label; return the log of each written case."""
    from experts.data.converters import track

    logged = []
    for i, lf in enumerate(track(train, desc=f"scribbles ({instance.name})", enabled=progress)):
        vol = load_volume(lf.path, kind="label")
        dense = _dense(lf.path, manifest, ignore, array=vol.array)
        if dense is None:
            writer.warn(f"{lf.path}: already partial; scribbles are simulated from dense labels only, case skipped")
            continue
        spacing = spacing_of(vol.affine)
        s = case_seed(seed, i)
        params = instance.make_params(dense, ignore_label=ignore, rng=np.random.default_rng(s), spacing=spacing)
        partial = instance.apply(dense, params, ignore_label=ignore, spacing=spacing)
        if not (partial != ignore).any():
            writer.warn(f"{lf.path}: the simulated scribbles annotate no voxel; case skipped")
            continue
        writer.write(split="train", case=lf.case, array=partial, affine=vol.affine)
        logged.append({"case": lf.case, "seed": s, "spacing": list(spacing), "annotated_fraction": float((partial != ignore).mean()), "params": params})
    return logged


def _dense(path: Path, manifest: Manifest, ignore: int, *, array=None) -> np.ndarray | None:
    """The label as int64 when it is dense; ``None`` when partial. Values are checked against dataset.json."""
    arr = np.asarray(load_volume(path, kind="label").array if array is None else array)
    if np.issubdtype(arr.dtype, np.floating) and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
        raise DatasetError(f"{path}: label values are not whole numbers; run 'expertseg data check {manifest.root}'")
    values = np.unique(arr)
    unknown = values[~np.isin(values, list(manifest.spec.labels.values()))]
    if unknown.size:
        raise DatasetError(f"{path}: label value(s) {', '.join(f'{float(v):g}' for v in unknown[:5])} not declared in dataset.json labels; run 'expertseg data check {manifest.root}'")
    return None if label_kind(arr, ignore) == "partial" else arr.astype(np.int64)


def _ignore_label(manifest: Manifest) -> int:
    ignore = manifest.spec.ignore_label
    if ignore is None:
        k = max(manifest.spec.labels.values()) + 1
        raise DatasetError(f'{manifest.root / "dataset.json"}: labels declare no "ignore" value, which partial labels need; add "ignore": {k} (the highest value) to "labels"')
    return ignore
