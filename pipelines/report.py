"""The comparison report: matplotlib figures and one self-contained HTML file.

Every figure is also a PNG in ``<out>/figures/``; the HTML embeds them as data URIs and has no
external reference (no scripts, fonts or style sheets from elsewhere), so it can be mailed or
archived as one file and opens offline.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

__all__ = ["write_report"]

_PALETTE = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a6761d", "#f781bf", "#17becf", "#999999", "#66a61e"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(array, nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS")))


def _values(table: dict) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in table["mean"]], dtype=float)


def _heatmap(ax, table: dict, title: str, *, xlabel: str, ylabel: str, vmin: float):
    values = _values(table)
    im = ax.imshow(values, vmin=vmin, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(table["cols"])), table["cols"], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(table["rows"])), table["rows"], fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if values[i, j] < np.nanmean(values) else "black")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    return im


def _fig_matrices(result: dict, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.4), constrained_layout=True)
    names = ("labels_vs_labels", "model_vs_labels", "model_vs_model")
    finite = np.concatenate([_values(result[n]).ravel() for n in names])
    finite = finite[np.isfinite(finite)]
    vmin = max(0.0, float(finite.min()) - 0.02) if finite.size else 0.0  # one colour scale for the three panels
    _heatmap(axes[0], result["labels_vs_labels"], "Human agreement: labels vs labels", xlabel="expert's labels", ylabel="expert's labels", vmin=vmin)
    _heatmap(axes[1], result["model_vs_labels"], "Model conditioned on row vs column's labels", xlabel="expert's labels", ylabel="model conditioned on", vmin=vmin)
    im = _heatmap(axes[2], result["model_vs_model"], "Model vs model (predictions)", xlabel="model conditioned on", ylabel="model conditioned on", vmin=vmin)
    fig.colorbar(im, ax=axes, shrink=0.8, label="mean Dice over classes and cases")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fig_distributions(result: dict, path: Path) -> Path:
    plt = _plt()
    own = result["own_labels_per_case"]
    experts = [e for e in result["model_experts"] if own.get(e)]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(experts) + 2), 4.5), constrained_layout=True)
    if experts:
        ax.boxplot([own[e] for e in experts], tick_labels=experts, showmeans=True)
        for i, e in enumerate(experts, start=1):
            cc = result["closest_colleague"].get(e, {})
            if cc.get("dice") is not None:
                ax.plot([i - 0.3, i + 0.3], [cc["dice"]] * 2, color="#e41a1c", lw=2, label="closest colleague's labels" if i == 1 else None)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_ylabel("Dice vs the expert's own labels (per case)")
    ax.set_title("Each expert's model against that expert, beside the closest colleague", fontsize=10)
    ax.tick_params(axis="x", rotation=30)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _slice_index(volumes) -> int:
    fg = sum((v > 0).sum(axis=(0, 1)) for v in volumes)
    return int(np.argmax(fg))


def _fig_experts_slice(result: dict, picture: dict, path: Path) -> Path:
    from matplotlib.colors import ListedColormap

    plt = _plt()
    aff = picture["affine"]
    image = _ras(picture["image"], aff)
    preds = {e: _ras(p, aff) for e, p in picture["predictions"].items()}
    z = _slice_index(preds.values())
    names = list(preds)
    cols = min(4, len(names) + 1)
    rows = int(np.ceil((len(names) + 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), constrained_layout=True, squeeze=False)
    classes = result["classes"]
    cmap = ListedColormap(["none"] + _PALETTE[: len(classes)])
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image[:, :, z].T, cmap="gray", origin="lower")
    axes.flat[0].set_title(f"{picture['case']}, axial slice {z}", fontsize=9)
    for ax, e in zip(list(axes.flat)[1:], names):
        ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
        ax.imshow(np.ma.masked_equal(preds[e][:, :, z].T, 0), cmap=cmap, vmin=0, vmax=len(classes), alpha=0.45, origin="lower", interpolation="nearest")
        ax.set_title(f"model for {e}", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_PALETTE[i]) for i in range(len(classes))]
    fig.legend(handles, classes, loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fig_contours(result: dict, picture: dict, path: Path) -> Path:
    plt = _plt()
    aff = picture["affine"]
    image = _ras(picture["image"], aff)
    preds = {e: _ras(p, aff) for e, p in picture["predictions"].items()}
    z = _slice_index(preds.values())
    classes = result["classes"]
    fig, axes = plt.subplots(1, len(classes), figsize=(5.2 * len(classes), 5.4), constrained_layout=True, squeeze=False)
    for ax, (c, name) in zip(axes.flat, enumerate(classes, start=1)):
        ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
        for i, (e, p) in enumerate(preds.items()):
            mask = (p[:, :, z] == c).T.astype(float)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=[_PALETTE[i % len(_PALETTE)]], linewidths=1.0)
            ax.plot([], [], color=_PALETTE[i % len(_PALETTE)], label=e)
        ax.set_title(f"{name}: every expert's boundary ({picture['case']}, slice {z})", fontsize=9)
        ax.axis("off")
        ax.legend(fontsize=7, loc="lower left")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fig_disagreement(picture: dict, path: Path) -> Path:
    plt = _plt()
    aff = picture["affine"]
    image = _ras(picture["image"], aff)
    dis = _ras(picture["disagreement"], aff)
    z = _slice_index([_ras(p, aff) for p in picture["predictions"].values()])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), constrained_layout=True)
    axes[0].imshow(image[:, :, z].T, cmap="gray", origin="lower")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(image[:, :, z].T, cmap="gray", origin="lower")
    im = axes[1].imshow(np.ma.masked_less(dis[:, :, z].T, 1e-3), cmap="magma", origin="lower", alpha=0.85)
    axes[1].set_title("where the expert-conditioned models disagree", fontsize=9)
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="disagreement (nats)")
    for ax in axes:
        ax.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fig_style_map(result: dict, path: Path) -> Path:
    plt = _plt()
    sm = result["style_map"]
    coords = np.array(sm["coords"])
    fig, ax = plt.subplots(figsize=(6.4, 5.2), constrained_layout=True)
    adapted = set(result["adapted"])
    for i, e in enumerate(sm["experts"]):
        marker = "*" if e in adapted else "o"
        ax.scatter(coords[i, 0], coords[i, 1], s=160 if marker == "*" else 70, marker=marker, color=_PALETTE[i % len(_PALETTE)], zorder=3)
        ax.annotate(e + (" (adapted)" if e in adapted else ""), coords[i], textcoords="offset points", xytext=(6, 6), fontsize=9)
    ev = sm["explained_variance"]
    ax.set_xlabel(f"PC1 ({ev[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ev[1]:.0%} of variance)")
    ax.set_title("Style map: experts' CIN rows (PCA)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(table: dict, *, title: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table["cols"])
    rows = []
    for i, r in enumerate(table["rows"]):
        cells = "".join("<td>-</td>" if v is None else f"<td>{v:.3f}</td>" for v in table["mean"][i])
        rows.append(f"<tr><th>{html.escape(r)}</th>{cells}</tr>")
    return f"<h3>{html.escape(title)}</h3><table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _profile_table(profile: dict) -> str:
    if not profile:
        return "<p>No STAPLE profile (fewer than two experts with dense labels).</p>"
    classes = sorted({c for pc in profile.values() for c in pc})
    head = "".join(f"<th>{html.escape(c)} sensitivity</th><th>{html.escape(c)} specificity</th>" for c in classes)
    rows = []
    for e, pc in profile.items():
        cells = ""
        for c in classes:
            for key in ("sensitivity", "specificity"):
                v = pc.get(c, {}).get(key)
                cells += "<td>-</td>" if v is None else f"<td>{v:.4f}</td>"
        rows.append(f"<tr><th>{html.escape(e)}</th>{cells}</tr>")
    return f"<table><tr><th>expert</th>{head}</tr>{''.join(rows)}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def write_report(out: Path, result: dict, picture: dict | None) -> list[Path]:
    """Write the figures and ``report.html``; return the figure paths."""
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = [
        (_fig_matrices(result, fig_dir / "matrices.png"), "Agreement matrices: human labels, model vs labels, model vs model (mean Dice)"),
        (_fig_distributions(result, fig_dir / "own_expert_dice.png"), "Per-expert Dice of each expert's model against that expert's labels"),
    ]
    if picture is not None:
        figures += [
            (_fig_experts_slice(result, picture, fig_dir / "experts_slice.png"), "One slice, every expert's prediction"),
            (_fig_contours(result, picture, fig_dir / "contours.png"), "Every expert's boundary on the same slice"),
            (_fig_disagreement(picture, fig_dir / "disagreement.png"), "Disagreement between the expert-conditioned models"),
        ]
    figures.append((_fig_style_map(result, fig_dir / "style_map.png"), "Style map of the experts' CIN parameters"))
    dist_rows = "".join(
        f"<tr><th>{html.escape(c)}</th>" + "".join("<td>-</td>" if per.get(k) is None else f"<td>{per[k]:.4f}</td>" for k in ("ged", "soft_dice", "dmax", "dmatch")) + "</tr>"
        for c, per in result["distribution"].items()
    )
    others = ""
    if result["other_models"]:
        experts = sorted({e for v in result["other_models"].values() for e in v})
        head = "".join(f"<th>{html.escape(e)}</th>" for e in experts)
        body = "".join(f"<tr><th>{html.escape(m)}</th>" + "".join("<td>-</td>" if v.get(e) is None else f"<td>{v[e]:.3f}</td>" for e in experts) + "</tr>" for m, v in result["other_models"].items())
        others = f"<h2>Other models</h2><p>Mean Dice of each model's experts against their own labels.</p><table><tr><th>model</th>{head}</tr>{body}</table>"
    style = "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:13px;color:#555}"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>expertseg comparison</title><style>{style}</style></head><body>
<h1>Experts and their models</h1>
<p>Model <code>{html.escape(str(result['model']))}</code> ({len(result['model_experts'])} experts{', adapted: ' + html.escape(', '.join(result['adapted'])) if result['adapted'] else ''}),
{len(result['cases'])} {html.escape(result['split'])} cases, classes {html.escape(', '.join(result['classes']))}.</p>
<h2>Agreement</h2>
{_img(*figures[0])}
{_table(result['labels_vs_labels'], title='Human inter-expert agreement (labels vs labels, mean Dice)')}
{_table(result['model_vs_labels'], title='Cross-expert matrix: model conditioned on the row expert vs the column expert labels')}
{_table(result['model_vs_model'], title='Model vs model')}
{_img(*figures[1])}
<h2>Consensus baselines</h2>
{_table(result['consensus'], title='Majority vote (ties: label ' + str(result['conventions']['tie_label']) + ' counted as background), STAPLE and the model consensus against each expert')}
<h3>STAPLE annotator profile</h3>{_profile_table(result['staple_profile'])}
<h2>Distribution metrics</h2>
<p>The set of expert-conditioned predictions against the set of raters, per class, mean over cases.
GED squared with d = 1 - IoU; soft Dice over thresholds 0.1/0.3/0.5/0.7/0.9 against the mean of raters; Dmax and Dmatch (Hungarian).</p>
<table><tr><th>class</th><th>GED</th><th>soft Dice</th><th>Dmax</th><th>Dmatch</th></tr>{dist_rows}</table>
<h2>Pictures</h2>
{''.join(_img(p, a) for p, a in figures[2:])}
{others}
</body></html>
"""
    (out / "report.html").write_text(doc, encoding="utf-8")
    return [p for p, _ in figures]
