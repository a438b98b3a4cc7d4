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
from collections import defaultdict
from pathlib import Path

import click
import numpy as np

from experts.errors import ConfigError, DatasetError
from pipelines.runtime.common import select_device

__all__ = ["compare"]


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _dice_per_class(a: np.ndarray, b: np.ndarray, k: int) -> dict[int, float | None]:
    from experts.metrics import overlap_metrics

    return {c: m.value for c, m in overlap_metrics(a, b, num_classes=k).dice.items()}


class _Matrix:
    """Accumulates per-case Dice per class for (row, column) pairs."""

    def __init__(self):
        self.values: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))

    def add(self, row: str, col: str, dice: dict[int, float | None]) -> None:
        for c, v in dice.items():
            if v is not None:
                self.values[(row, col)][c].append(v)

    def table(self, rows: list[str], cols: list[str], classes: dict[int, str]) -> dict:
        out = {"rows": rows, "cols": cols, "mean": [], **{name: [] for name in classes.values()}}
        for r in rows:
            means, per = [], {name: [] for name in classes.values()}
            for c in cols:
                cell = self.values.get((r, c), {})
                class_means = {classes[k]: _mean(cell.get(k, [])) for k in classes}
                for name, v in class_means.items():
                    per[name].append(v)
                means.append(_mean(class_means.values()))
            out["mean"].append(means)
            for name in classes.values():
                out[name].append(per[name])
        return out

    def per_case(self, row: str, col: str) -> list[float]:
        cell = self.values.get((row, col), {})
        n = max((len(v) for v in cell.values()), default=0)
        return [float(np.mean([v[i] for v in cell.values() if i < len(v)])) for i in range(n)]


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
    from tqdm.auto import tqdm

    from experts.consensus import majority_vote, staple
    from experts.data.manifest import scan_dataset
    from experts.data.nifti import load_volume
    from experts.metrics import dice_match, dice_max, generalized_energy_distance, soft_dice
    from experts.predictor import disagreement, predict_case
    from experts.styles import style_map, style_vectors
    from pipelines.runtime.config import load_config
    from pipelines.runtime.models import load_model
    from pipelines.report import write_report
    from pipelines.runtime.tracking import Tracker

    t0 = time.perf_counter()
    cfg = load_config(config_path, overrides)
    if tracking:
        cfg.tracking.backend = tracking
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: not empty; pass --overwrite or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    device = select_device()
    bundle = load_model(model, device=device, adapters=list(adapters))
    manifest = scan_dataset(data)
    k = bundle.plan.num_classes
    classes = {c: bundle.plan.class_names[c] for c in range(1, k)}
    cases = [c for c in manifest.case_ids(split) if any(lf.kind == "dense" for lf in manifest.labels_of(split=split) if lf.case == c)]
    if not cases:
        raise DatasetError(f"{data}: no {split} case with a dense label to compare on")
    cases = cases[:max_cases] if max_cases else cases
    model_experts = list(bundle.experts)
    label_experts = [e for e in manifest.experts if any(lf.expert == e and lf.kind == "dense" for lf in manifest.labels_of(split=split))]
    pcfg = cfg.predict

    m_vs_l, l_vs_l, m_vs_m = _Matrix(), _Matrix(), _Matrix()
    cons = _Matrix()
    profile: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    dist: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    show = slice_case if slice_case in cases else cases[0]
    picture = None
    for case in tqdm(cases, desc="compare", disable=not progress, leave=False):
        pred = predict_case(bundle, manifest.cases[case].images, model_experts, device=device, overlap=pcfg.overlap, sw_batch_size=pcfg.sw_batch_size, blend=pcfg.blend)
        preds = dict(zip(model_experts, pred.labels()))
        labels = {}
        for e in label_experts:
            lf = manifest.label(case, e)
            if lf is not None and lf.kind == "dense":
                labels[e] = np.asarray(load_volume(lf.path, kind="label").array).astype(np.uint8)
        for i in model_experts:
            for j, lab in labels.items():
                m_vs_l.add(i, j, _dice_per_class(preds[i], lab, k))
            for j in model_experts:
                if i != j:
                    m_vs_m.add(i, j, _dice_per_class(preds[i], preds[j], k))
        for i in labels:
            for j in labels:
                if i != j:
                    l_vs_l.add(i, j, _dice_per_class(labels[i], labels[j], k))
        if len(labels) >= 2:
            raters = np.stack([labels[e] for e in labels])
            vote = majority_vote(raters, num_classes=k, tie_label=k)
            st = staple(raters, num_classes=k)
            _, model_cons = pred.consensus()
            for name, est in (("majority vote", vote), ("STAPLE", st.labels.astype(np.uint8)), ("model consensus", model_cons)):
                for j, lab in labels.items():
                    cons.add(name, j, _dice_per_class(np.where(est == k, 0, est).astype(np.uint8), lab, k))
            cons.add("model consensus", "majority vote", _dice_per_class(model_cons, np.where(vote == k, 0, vote).astype(np.uint8), k))
            cons.add("model consensus", "STAPLE", _dice_per_class(model_cons, st.labels.astype(np.uint8), k))
            for r, e in enumerate(labels):
                for c, perf in st.profile[r].items():
                    if c == 0:
                        continue
                    for key, mv in perf.items():
                        if mv.value is not None:
                            profile[e][classes[c]][key].append(mv.value)
            for c, name in classes.items():
                pm = np.stack([preds[e] == c for e in model_experts])
                rm = raters == c
                ged = generalized_energy_distance(pm, rm)
                dist[name]["ged"].append(ged.squared)
                sd = soft_dice(pred.probabilities[:, c].mean(0), rm)
                for key, mv in (("soft_dice", sd), ("dmax", dice_max(pm, rm)), ("dmatch", dice_match(pm, rm))):
                    if mv.value is not None:
                        dist[name][key].append(mv.value)
        if case == show:
            image = load_volume(manifest.cases[case].images[0]).array
            picture = {"case": case, "image": image, "affine": pred.affine, "predictions": preds, "labels": labels, "disagreement": disagreement(pred.probabilities)}

    # --- other models -------------------------------------------------------------------------
    others = {}
    for ref in runs:
        other = load_model(ref, device=device)
        scores: dict[str, list[float]] = defaultdict(list)
        for case in cases:
            p = predict_case(other, manifest.cases[case].images, other.experts, device=device, overlap=pcfg.overlap, sw_batch_size=pcfg.sw_batch_size, blend=pcfg.blend)
            for e, lab_pred in zip(other.experts, p.labels()):
                targets = label_experts if e == "pooled" else [e]
                for t in targets:
                    lf = manifest.label(case, t)
                    if lf is not None and lf.kind == "dense":
                        d = _dice_per_class(lab_pred, np.asarray(load_volume(lf.path, kind="label").array).astype(np.uint8), k)
                        scores[t].append(_mean(d.values()))
        others[ref] = {e: _mean(v) for e, v in scores.items()}

    coords, ratios = style_map(style_vectors(bundle.network))
    result = {
        "model": model,
        "model_id": bundle.model_id,
        "split": split,
        "cases": cases,
        "classes": list(classes.values()),
        "model_experts": model_experts,
        "label_experts": label_experts,
        "adapted": bundle.lineage.get("adapted", []),
        "model_vs_labels": m_vs_l.table(model_experts, label_experts, classes),
        "labels_vs_labels": l_vs_l.table(label_experts, label_experts, classes),
        "model_vs_model": m_vs_m.table(model_experts, model_experts, classes),
        "consensus": cons.table(["majority vote", "STAPLE", "model consensus"], label_experts + ["majority vote", "STAPLE"], classes),
        "staple_profile": {e: {c: {k2: _mean(v) for k2, v in per.items()} for c, per in pc.items()} for e, pc in profile.items()},
        "distribution": {c: {k2: _mean(v) for k2, v in per.items()} for c, per in dist.items()},
        "own_labels_per_case": {e: m_vs_l.per_case(e, e) for e in model_experts if e in label_experts},
        "closest_colleague": _closest(l_vs_l.table(label_experts, label_experts, classes)),
        "style_map": {"experts": model_experts, "coords": coords.tolist(), "explained_variance": ratios},
        "other_models": others,
        "conventions": {"tie_label": k, "ged": "GED squared (Kohl et al. 2018), d = 1 - IoU, pairs i = j included", "dice": "classes absent from both volumes are left out of means"},
    }
    figures = write_report(out, result, picture)
    (out / "compare.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    for name in ("model_vs_labels", "labels_vs_labels", "model_vs_model", "consensus"):
        _matrix_csv(out / f"{name}.csv", result[name])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    _track(cfg, out, result, figures, manifest)
    click.echo(f"compared {len(model_experts)} model experts with {len(label_experts)} experts' labels on {len(cases)} {split} cases in {result['seconds']:.0f} s")
    _print_diagonal(result)
    click.echo(f"report: {(out / 'report.html').resolve()}")
    return result


def _closest(table: dict) -> dict:
    """For each expert: the colleague whose labels agree most with theirs, and that Dice."""
    out = {}
    for i, r in enumerate(table["rows"]):
        best = max(((c, v) for c, v in zip(table["cols"], table["mean"][i]) if c != r and v is not None), key=lambda cv: cv[1], default=(None, None))
        out[r] = {"colleague": best[0], "dice": best[1]}
    return out


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
