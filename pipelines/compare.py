"""``expertseg compare``: how the experts differ, and how the expert-specific models differ.

On the held-out cases (``labelsTs``):

- cross-expert matrix: the model conditioned on expert *i* scored against expert *j*'s labels
  (adapted experts included), beside the human agreement matrix (labels vs labels) and the
  model-vs-model matrix (predictions vs predictions);
- consensus baselines: majority vote (explicit tie label) and STAPLE per class of the experts'
  labels, with STAPLE's per-expert sensitivity/specificity as an annotator profile;
- distribution metrics of the set of expert-conditioned predictions against the set of raters:
  GED (d = 1 - IoU), soft Dice at 0.1/0.3/0.5/0.7/0.9 against the mean of raters, Dmax, Dmatch;
- the style map: the experts' CIN rows in 2D;
- optionally, other models (``--runs``: run folders, ``runs:/`` or ``models:/name@alias``), each
  scored on its own experts.

Everything goes to ``<out>/compare.json``, CSV matrices, PNG figures and one self-contained
``report.html``, and is logged to an MLflow run.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import click
import numpy as np

from experts.errors import DatasetError
from pipelines.runtime.common import check_out, open_out, select_device, staged

__all__ = ["compare"]


def compare(
    *,
    model: str,
    data: str,
    out: str,
    runs: tuple[str, ...] = (),
    adapters: tuple[str, ...] = (),
    split: str = "test",
    max_cases: int | None = None,
    slice_case: str | None = None,
    overwrite: bool = False,
    tracking: str | None = None,
    config_path: str | None = None,
    overrides: tuple[str, ...] = (),
    progress: bool = True,
) -> dict:
    """Compute the comparison, write the report, log it; returns the numbers (``compare.json``)."""
    from experts.comparison import ExpertComparison
    from experts.data.manifest import scan_dataset
    from pipelines.runtime.config import load_config
    from pipelines.runtime.models import load_model
    from pipelines.runtime.tracking import Tracker

    t0 = time.perf_counter()
    cfg = load_config(config_path, overrides)
    if tracking:
        cfg.tracking.backend = tracking
    Tracker.probe(cfg)
    out = check_out(out, command="compare", overwrite=overwrite, marker="compare.json")
    device = select_device()
    bundle = load_model(model, device=device, adapters=list(adapters))
    manifest = scan_dataset(data)
    cases, label_experts = _cases(manifest, data, split, max_cases)
    open_out(out, command="compare", overwrite=overwrite)
    comparison = ExpertComparison(class_names=bundle.plan.class_names, model_experts=list(bundle.experts), label_experts=label_experts)
    show = slice_case if slice_case in cases else cases[0]
    picture = _compare_cases(comparison, bundle, manifest, cases, show=show, device=device, pcfg=cfg.predict, progress=progress)
    others = {ref: _score_other(load_model(ref, device=device), manifest, cases, comparison, device=device, pcfg=cfg.predict) for ref in runs}
    result = _result(model, bundle, comparison, split=split, cases=cases, label_experts=label_experts, others=others)
    with staged(out) as stage:  # the report's files move in together, or not at all
        figures = [out / f.relative_to(stage) for f in _write_outputs(stage, result, picture)]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    _track(cfg, out, result, figures, manifest)
    click.echo(f"compared {len(result['model_experts'])} model experts with {len(label_experts)} experts' labels on {len(cases)} {split} cases in {result['seconds']:.0f} s")
    _print_diagonal(result)
    click.echo(f"report: {(out / 'report.html').resolve()}")
    return result


def _result(model: str, bundle, comparison, *, split: str, cases: list[str], label_experts: list[str], others: dict) -> dict:
    from experts.styles import style_map, style_vectors

    coords, ratios = style_map(style_vectors(bundle.network))
    return {
        "model": model,
        "model_id": bundle.model_id,
        "split": split,
        "cases": cases,
        "classes": list(comparison.classes.values()),
        "model_experts": comparison.model_experts,
        "label_experts": label_experts,
        "adapted": bundle.lineage.get("adapted", []),
        **comparison.summary(),
        "style_map": {"experts": comparison.model_experts, "coords": coords.tolist(), "explained_variance": ratios},
        "other_models": others,
        "conventions": comparison.conventions,
    }


def _cases(manifest, data: str, split: str, max_cases: int | None) -> tuple[list[str], list[str]]:
    """The split's cases with a dense label (at most ``max_cases``), and the experts with a dense label in the split."""
    dense = manifest.labels_of(split=split, kind="dense")
    cases = [c for c in manifest.case_ids(split) if any(lf.case == c for lf in dense)]
    if not cases:
        raise DatasetError(f"{data}: no {split} case with a dense label to compare on")
    cases = cases[:max_cases] if max_cases else cases
    return cases, [e for e in manifest.experts if any(lf.expert == e for lf in dense)]


def _dense_labels(manifest, case: str, experts: list[str]) -> dict[str, np.ndarray]:
    from experts.data.nifti import load_volume

    labels = {}
    for e in experts:
        lf = manifest.label(case, e)
        if lf is not None and lf.kind == "dense":
            labels[e] = np.asarray(load_volume(lf.path, kind="label").array).astype(np.uint8)
    return labels


def _predict(bundle, manifest, case: str, *, device, pcfg):
    """Every expert of ``bundle`` on one case, in one sliding-window pass."""
    from experts.predictor import predict_case

    return predict_case(bundle, manifest.cases[case].images, list(bundle.experts), device=device, overlap=pcfg.overlap, sw_batch_size=pcfg.sw_batch_size, blend=pcfg.blend)


def _compare_cases(comparison, bundle, manifest, cases: list[str], *, show: str, device, pcfg, progress: bool) -> dict | None:
    """Feed every case to ``comparison``; return the pictures' material for case ``show``."""
    from tqdm.auto import tqdm

    from experts.data.nifti import load_volume
    from experts.predictor import disagreement

    picture = None
    for case in tqdm(cases, desc="compare", disable=not progress, leave=False):
        pred = _predict(bundle, manifest, case, device=device, pcfg=pcfg)
        labels = _dense_labels(manifest, case, comparison.label_experts)
        comparison.add_case(case, probabilities=pred.probabilities, labels=labels)
        if case == show:
            image = load_volume(manifest.cases[case].images[0]).array
            preds = dict(zip(comparison.model_experts, pred.labels()))
            picture = {"case": case, "image": image, "affine": pred.affine, "predictions": preds, "labels": labels, "disagreement": disagreement(pred.probabilities)}
    return picture


def _score_other(other, manifest, cases: list[str], comparison, *, device, pcfg) -> dict[str, float | None]:
    """Mean Dice of each of another model's experts against their own labels (``pooled``: every expert's)."""
    from experts.comparison import own_label_dice

    def per_case():
        for case in cases:
            pred = _predict(other, manifest, case, device=device, pcfg=pcfg)
            yield dict(zip(other.experts, pred.labels())), _dense_labels(manifest, case, comparison.label_experts)

    return own_label_dice(per_case(), num_classes=comparison.num_classes)


def _write_outputs(out: Path, result: dict, picture: dict | None) -> list[Path]:
    """``report.html`` and its figures, ``compare.json`` and the matrices as CSV; returns the figures."""
    from pipelines.report import write_report

    figures = write_report(out, result, picture)
    (out / "compare.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    for name in ("model_vs_labels", "labels_vs_labels", "model_vs_model", "consensus"):
        _matrix_csv(out / f"{name}.csv", result[name])
    return figures


def _print_diagonal(result: dict) -> None:
    t = result["model_vs_labels"]
    click.echo("model for expert vs that expert's labels (closest colleague's agreement):")
    for i, r in enumerate(t["rows"]):
        if r in t["cols"]:
            v = t["mean"][i][t["cols"].index(r)]
            cc = result["closest_colleague"].get(r, {})
            extra = f"  ({cc['colleague']}: {cc['dice']:.3f})" if cc.get("dice") is not None else ""
            click.echo(f"  {r}: {v:.3f}{extra}" if v is not None else f"  {r}: -")


def _matrix_csv(path: Path, table: dict) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "col"] + [k for k in table if k not in ("rows", "cols")])
        keys = [k for k in table if k not in ("rows", "cols")]
        for i, r in enumerate(table["rows"]):
            for j, c in enumerate(table["cols"]):
                w.writerow([r, c] + ["" if table[k][i][j] is None else f"{table[k][i][j]:.6g}" for k in keys])


def _track(cfg, out: Path, result: dict, figures: list[Path], manifest) -> None:
    from pipelines.runtime.tracking import Tracker

    tracker = Tracker(run_dir=out, stage="compare", backend=cfg.tracking.backend, experiment=cfg.tracking.experiment, run_name=f"compare-{len(result['model_experts'])}-experts", tags={"model_id": result["model_id"][:16], "adapted": ",".join(result["adapted"])})
    with tracker:
        tracker.log_params({"model": result["model"], "split": result["split"], "n_cases": len(result["cases"]), "other_models": ",".join(result["other_models"])})
        tracker.log_dataset(manifest, context="evaluation")
        t = result["model_vs_labels"]
        metrics = {}
        for i, r in enumerate(t["rows"]):
            if r in t["cols"] and t["mean"][i][t["cols"].index(r)] is not None:
                metrics[f"own_dice/{r}"] = t["mean"][i][t["cols"].index(r)]
        for c, per in result["distribution"].items():
            for key, v in per.items():
                if v is not None:
                    metrics[f"{key}/{c}"] = v
        tracker.log_metrics(metrics, step=0)
        for name in ("report.html", "compare.json", "model_vs_labels.csv", "labels_vs_labels.csv", "model_vs_model.csv", "consensus.csv"):
            tracker.log_artifact(out / name)
        for f in figures:
            tracker.log_artifact(f, "figures")
        result["mlflow_run_id"] = tracker.run_id
        click.echo(tracker.ui_hint())
