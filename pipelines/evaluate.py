"""``expertseg evaluate``: score predictions against the experts' labels.

Predictions are found as ``<pred>/<expert>/<case>.nii.gz`` (what ``predict`` writes) and scored
against the same expert's label of that case in the dataset (``labelsTs``, else ``labelsTr``);
``<pred>/consensus/`` is scored against every expert. Per case, expert and class: Dice, IoU, HD95,
ASSD and normalised surface Dice at ``--tolerance`` mm, all with the voxel spacing. Against a
partial label only Dice and IoU on annotated voxels are reported (``reference_kind = partial``);
surface distances are not. A value that is undefined (e.g. a class absent from both) is ``null``
with a reason in JSON and empty with a reason column in CSV.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import click
import numpy as np

from experts.errors import ConfigError, DatasetError

__all__ = ["evaluate", "score_pair", "METRICS"]

METRICS = ("dice", "iou", "hd95", "assd", "nsd")


def score_pair(prediction: np.ndarray, reference: np.ndarray, *, class_names: list[str], spacing, tolerance_mm: float, ignore_label: int | None) -> list[dict]:
    """One row per foreground class: metric -> ``{"value", "reason"}``, plus the reference kind."""
    from experts.metrics import overlap_metrics, surface_metrics

    k = len(class_names)
    partial = ignore_label is not None and bool((reference == ignore_label).any())
    ov = overlap_metrics(prediction, reference, num_classes=k, ignore_label=ignore_label if partial else None)
    sf = None if partial else surface_metrics(prediction, reference, num_classes=k, spacing=spacing, tolerance_mm=tolerance_mm)
    rows = []
    for c in range(1, k):
        row = {"class": class_names[c], "reference_kind": "partial" if partial else "dense", "dice": ov.dice[c].to_dict(), "iou": ov.iou[c].to_dict()}
        for m in ("hd95", "assd", "nsd"):
            row[m] = getattr(sf, m)[c].to_dict() if sf else {"value": None, "reason": "not defined against a partial reference"}
        rows.append(row)
    return rows


def evaluate(*, pred: str, data: str, tolerance: float | None = None, out: str | None = None, config_path: str | None = None, overrides: tuple[str, ...] = (), progress: bool = True) -> dict:
    """Score every prediction that has a matching label; write ``evaluation.json`` and ``.csv``.

    ``tolerance`` (mm, normalised surface Dice) defaults to the config's ``evaluate.tolerance_mm``."""
    import math

    from pipelines.runtime.config import load_config

    if tolerance is None:
        tolerance = load_config(config_path, overrides).evaluate.tolerance_mm
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"--tolerance must be a number of mm >= 0, got {tolerance}")
    from tqdm.auto import tqdm

    from experts.data.manifest import scan_dataset
    from experts.data.nifti import load_volume, spacing_of

    pred_dir = Path(pred)
    if not pred_dir.is_dir():
        raise DatasetError(f"{pred}: no such prediction folder; pass the --out folder of 'expertseg predict'")
    manifest = scan_dataset(data)
    names = manifest.spec.class_names
    jobs = []
    for sub in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
        refs = manifest.experts if sub.name == "consensus" else [sub.name] if sub.name in manifest.experts else []
        for f in sorted(sub.glob("*.nii*")):
            case = f.name.split(".nii")[0]
            for ref_expert in refs:
                lf = manifest.label(case, ref_expert)
                if lf is not None:
                    jobs.append((sub.name, ref_expert, case, f, lf))
    if not jobs:
        raise DatasetError(f"{pred}: no prediction matches a label in {data} (expected <pred>/<expert>/<case>.nii.gz for the dataset's experts)")
    rows = []
    for pred_expert, ref_expert, case, f, lf in tqdm(jobs, desc="evaluate", disable=not progress, leave=False):
        p, r = load_volume(f, kind="label"), load_volume(lf.path, kind="label")
        if p.array.shape != r.array.shape or not np.allclose(p.affine, r.affine, atol=1e-3):
            raise DatasetError(f"{f}: shape/affine {p.array.shape} differ from the label {lf.path} {r.array.shape}; predict on this dataset's images")
        pred_labels = np.asarray(p.array)
        bad = np.setdiff1d(np.unique(pred_labels), np.arange(len(names)))
        if bad.size:
            raise DatasetError(f"{f}: holds label value {bad[0]!r}, not a class of {data} (0..{len(names) - 1}); a prediction holds only the dataset's classes")
        for row in score_pair(pred_labels.astype(np.int64), np.asarray(r.array).astype(np.int64), class_names=names, spacing=spacing_of(r.affine), tolerance_mm=tolerance, ignore_label=manifest.spec.ignore_label):
            rows.append({"case": case, "prediction": pred_expert, "reference": ref_expert, "split": lf.split, **row})
    summary = _summarise(rows)
    result = {"tolerance_mm": tolerance, "classes": names[1:], "rows": rows, "summary": summary, "conventions": _CONVENTIONS}
    out_dir = Path(out) if out else pred_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    _write_csv(out_dir / "evaluation.csv", rows)
    _print(summary, out_dir)
    return result


_CONVENTIONS = {
    "dice/iou": "class absent from both prediction and reference: null; from exactly one: 0",
    "hd95/assd": "null when the prediction or the reference has no voxel of the class",
    "nsd": "both empty: null; exactly one empty: 0",
    "partial": "against a partial label, Dice/IoU on annotated voxels only; no surface metrics",
}


def _summarise(rows: list[dict]) -> dict:
    acc: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for m in METRICS:
            if r[m]["value"] is not None:
                acc[(r["prediction"], r["reference"], r["class"])][m].append(r[m]["value"])
    out: dict[str, dict] = {}
    for (pe, re, cls), ms in sorted(acc.items()):
        out.setdefault(f"{pe} vs {re}", {})[cls] = {m: {"mean": float(np.mean(v)), "n": len(v)} for m, v in ms.items()}
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["case", "prediction", "reference", "split", "class", "reference_kind"] + [x for m in METRICS for x in (m, f"{m}_reason")]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            flat = {k: r[k] for k in fields[:6]}
            for m in METRICS:
                flat[m] = "" if r[m]["value"] is None else f"{r[m]['value']:.6g}"
                flat[f"{m}_reason"] = r[m]["reason"] or ""
            w.writerow(flat)


def _print(summary: dict, out_dir: Path) -> None:
    click.echo("mean over cases (undefined values left out):")
    fmt = {"dice": "Dice {:.3f}", "hd95": "HD95 {:.2f} mm", "nsd": "NSD {:.3f}"}
    for pair, per_class in summary.items():
        parts = [f"{cls}: " + ", ".join(f.format(ms[m]["mean"]) for m, f in fmt.items() if m in ms) for cls, ms in per_class.items()]
        click.echo(f"  {pair}: " + "; ".join(parts))
    click.echo(f"written: {out_dir / 'evaluation.json'} and {out_dir / 'evaluation.csv'}")
