"""The preprocessing plan: computed from the data once, stored as JSON, logged with every run.

nnU-Net's experiment planning in miniature: target spacing (median of the training cases), patch
size (the median resampled shape, capped and made to fit the network's depth) and intensity
normalisation per channel (z-score per image for MRI-like channels; global clipping and z-score
for channels named CT). Orientation is RAS for every volume the network sees.

The voxel budget (:func:`experts.data.nifti.max_voxels`) holds after resampling too:
:func:`make_plan` computes every training case's resampled and padded shape (and the patch) as
numbers, before anything is allocated, and refuses a target spacing that would exceed it, naming
``data.spacing``, the case, the resulting shape and the budget; :func:`check_resampled_size` does the
same for one volume (e.g. an image to predict).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from experts.data.nifti import VOXEL_BUDGET_ENV, load_volume, max_voxels
from experts.errors import ConfigError, DatasetError, shorten

__all__ = ["Plan", "make_plan", "fit_patch", "check_resampled_size"]


@dataclass
class Plan:
    """Everything preprocessing needs, as plain data.

    Attributes:
        spacing: target voxel size in mm (RAS axis order).
        patch_size: training and inference window ``[D, H, W]`` in voxels.
        normalization: per channel ``"zscore"``, ``"ct"`` or ``"none"``.
        ct_stats: per CT channel ``{"lower", "upper", "mean", "std"}``.
        class_names: predicted classes, background first.
        ignore_label: the value of unannotated voxels, or ``None``.
        median_shape: median resampled shape of the training cases.
    """

    spacing: list[float]
    patch_size: list[int]
    normalization: list[str]
    channel_names: list[str]
    class_names: list[str]
    ignore_label: int | None
    median_shape: list[int]
    ct_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    orientation: str = "RAS"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        """A plan from plain data, every field checked (a damaged or hand-edited plan is refused)."""
        from experts.errors import ModelFileError

        problems = _plan_problems(data)
        if problems:
            raise ModelFileError(problems)
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _plan_problems(data) -> list[str]:
    import math

    if not isinstance(data, dict):
        return [f"plan.json: a plan is a mapping, found {type(data).__name__}"]
    names = {f for f in Plan.__dataclass_fields__}
    required = names - {"ct_stats", "orientation"}
    problems = [f"plan.json: missing {k!r}" for k in sorted(required - set(data))] + [f"plan.json: unknown key {k!r}" for k in sorted(set(data) - names)]
    if problems:
        return problems

    def three(key, kind):
        v = data[key]
        ok = isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in v)
        ok = ok and (kind is float or all(float(x).is_integer() for x in v))
        return [] if ok else [f"plan.json: {key!r} must be 3 positive {'numbers' if kind is float else 'integers'}, got {str(v)[:80]}"]

    problems = three("spacing", float) + three("patch_size", int) + three("median_shape", int)
    if not (isinstance(data["class_names"], list) and len(data["class_names"]) >= 2 and all(isinstance(c, str) and c for c in data["class_names"])):
        problems.append("plan.json: 'class_names' must list at least background and one class")
    if not (isinstance(data["channel_names"], list) and data["channel_names"] and all(isinstance(c, str) for c in data["channel_names"])):
        problems.append("plan.json: 'channel_names' must list at least one channel")
    elif not (isinstance(data["normalization"], list) and len(data["normalization"]) == len(data["channel_names"]) and set(data["normalization"]) <= {"zscore", "ct", "none"}):
        problems.append("plan.json: 'normalization' must give zscore, ct or none for each channel")
    ignore = data["ignore_label"]
    if ignore is not None and not (isinstance(ignore, int) and not isinstance(ignore, bool) and ignore >= 2):
        problems.append(f"plan.json: 'ignore_label' must be null or an integer >= 2, got {ignore!r}")
    return problems


def fit_patch(shape, *, cap, divisor: int) -> list[int]:
    """Largest multiple of ``divisor`` not above ``min(shape, cap)`` per axis, at least ``2 * divisor``."""
    return [max(2 * divisor, (min(int(s), int(c)) // divisor) * divisor) for s, c in zip(shape, cap)]


def _ras_extent(shape, affine, spacing) -> np.ndarray:
    """Shape of a volume after reorientation to RAS and resampling to ``spacing``, as floats (so a
    hostile spacing gives a large number rather than an integer overflow)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    order = ornt[:, 0].astype(int)
    extent = np.asarray(shape, float) * np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    ras_extent = np.empty(3)
    ras_extent[order] = extent
    with np.errstate(over="ignore", divide="ignore"):
        return np.maximum(1.0, np.round(ras_extent / np.asarray(spacing, float)))


def _check_spacing(spacing) -> list[float]:
    """A target spacing given by the user: 3 positive finite numbers, else :class:`ConfigError`."""
    try:
        values = [float(s) for s in spacing]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"'data.spacing' must be 3 positive finite numbers (mm), got {shorten(spacing)}; or null for the dataset's median spacing")
    return values


def _shape_text(extent) -> str:
    return "(" + ", ".join(f"{v:.0f}" if v < 1e9 else f"{v:.3g}" for v in extent) + ")"


def check_resampled_size(shape, affine, spacing, *, where: str, patch_size=None) -> None:
    """Refuse a volume that would exceed the voxel budget once resampled to ``spacing`` (and padded
    to ``patch_size``); nothing is allocated.

    Args:
        shape: ``[X, Y, Z]`` voxels of the volume as stored.
        affine: ``[4, 4]`` its voxel-to-world matrix.
        spacing: target spacing in mm (RAS order).
        where: the file or case, for the message.
        patch_size: pad to at least this (training), or ``None``.

    Raises:
        DatasetError: the resampled volume holds more voxels than :func:`~experts.data.nifti.max_voxels`.
    """
    budget = max_voxels()
    extent = _ras_extent(shape, affine, spacing)
    if patch_size is not None:
        extent = np.maximum(extent, np.asarray(patch_size, float))
    total = float(np.prod(extent))
    if total > budget:
        raise DatasetError(
            f"{where}: resampling shape {tuple(int(s) for s in shape)} to spacing ({', '.join(f'{float(v):g}' for v in spacing)}) mm "
            f"gives {_shape_text(extent)} = {total:.3g} voxels, above the voxel budget of {budget:,}; "
            f"predict with a coarser model or crop the image, or raise {VOXEL_BUDGET_ENV}"
        )


def make_plan(
    manifest,
    *,
    divisor: int,
    spacing=None,
    patch_size=None,
    max_patch_size=(64, 64, 64),
    normalization: str = "auto",
) -> Plan:
    """Plan preprocessing for a dataset.

    Args:
        manifest: the checked dataset (:func:`experts.data.manifest.scan_dataset`).
        divisor: the network's size divisor (``2 ** (levels - 1)``).
        spacing: target spacing in mm, or ``None`` for the median of the training cases.
        patch_size: patch in voxels, or ``None`` to plan it.
        max_patch_size: cap of a planned patch.
        normalization: ``"auto"`` (CT for channels named CT, else z-score), ``"zscore"``, ``"ct"``, ``"none"``.

    Returns:
        The :class:`Plan`.
    """
    import nibabel as nib

    train = manifest.case_ids("train")
    cases = [manifest.cases[c] for c in train]
    spacings = []
    for c in cases:
        ornt = nib.orientations.io_orientation(c.affine)
        sp = np.empty(3)
        sp[ornt[:, 0].astype(int)] = c.spacing
        spacings.append(sp)
    target = [float(s) for s in np.median(spacings, axis=0)] if spacing is None else _check_spacing(spacing)
    budget = max_voxels()
    extents = np.array([_ras_extent(c.shape, c.affine, target) for c in cases])
    _check_budget(extents, cases, target, budget=budget, given=spacing is not None, what="resamples")
    shapes = extents.astype(int)
    median_shape = [int(s) for s in np.median(shapes, axis=0)]
    if patch_size is None:
        patch = fit_patch(median_shape, cap=max_patch_size, divisor=divisor)
    else:
        patch = [int(p) for p in patch_size]
        bad = [p for p in patch if p % divisor or p < 2 * divisor]
        if bad:
            raise ConfigError(f"'data.patch_size' {tuple(patch)}: every axis must be a multiple of {divisor} and at least {2 * divisor} for this network depth")
    if math.prod(patch) > budget:
        key = "data.max_patch_size" if patch_size is None else "data.patch_size"
        raise ConfigError(f"'{key}' gives a patch of {tuple(patch)} = {math.prod(patch):,} voxels, above the voxel budget of {budget:,} ({VOXEL_BUDGET_ENV}); use a smaller patch")
    _check_budget(np.maximum(extents, np.asarray(patch, float)), cases, target, budget=budget, given=spacing is not None, what=f"with patch {tuple(patch)} pads")
    channel_names = [manifest.spec.channel_names[str(i)] for i in range(manifest.spec.num_channels)]
    norms = []
    for name in channel_names:
        if normalization == "auto":
            norms.append("ct" if name.strip().upper() == "CT" else "zscore")
        else:
            norms.append(normalization)
    ct_stats = {}
    for i, n in enumerate(norms):
        if n == "ct":
            ct_stats[str(i)] = _ct_stats(manifest, train, i)
    return Plan(
        spacing=target,
        patch_size=patch,
        normalization=norms,
        channel_names=channel_names,
        class_names=manifest.spec.class_names,
        ignore_label=manifest.spec.ignore_label,
        median_shape=median_shape,
        ct_stats=ct_stats,
    )


def _check_budget(extents: np.ndarray, cases, target, *, budget: int, given: bool, what: str) -> None:
    """Refuse the plan if a case's resampled (or padded) volume exceeds the voxel budget."""
    if not len(extents):
        return
    totals = np.prod(extents, axis=1)
    worst = int(np.argmax(totals))
    if totals[worst] <= budget:
        return
    c = cases[worst]
    spacing = "(" + ", ".join(f"{v:g}" for v in target) + ")"
    head = f"'data.spacing' {spacing} mm" if given else f"the dataset's median spacing {spacing} mm"
    fix = "use a coarser spacing (null: the dataset's median)" if given else "set a coarser 'data.spacing' or resample the finest cases"
    raise (ConfigError if given else DatasetError)(
        f"{head} {what} case {c.case} (shape {tuple(c.shape)}) to {_shape_text(extents[worst])} = {totals[worst]:.3g} voxels, "
        f"above the voxel budget of {budget:,} ({VOXEL_BUDGET_ENV}); {fix}"
    )


def _ct_stats(manifest, cases, channel: int, *, per_case: int = 20000, seed: int = 0) -> dict[str, float]:
    """Clip range (0.5 and 99.5 percentiles) and mean/std of CT intensities, from a voxel sample."""
    rng = np.random.default_rng(seed)
    samples = []
    for c in cases:
        arr = load_volume(manifest.cases[c].images[channel]).array.ravel()
        samples.append(rng.choice(arr, size=min(per_case, arr.size), replace=False))
    values = np.concatenate(samples)
    lower, upper = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, lower, upper)
    return {"lower": float(lower), "upper": float(upper), "mean": float(clipped.mean()), "std": float(clipped.std() + 1e-8)}
