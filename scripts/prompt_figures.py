"""Render every registered prompt style and annotator habit on a small 3D phantom.

For each style (defaults, plus a few telling variants) and each habit, one PNG in ``docs/prompts/``
(and an index, ``docs/prompts/README.md``):
left, the axial slice holding the most annotated foreground (else the most annotated slice through
the structures) with the partial label over a pseudo-image and the true outlines (white); right,
the strokes projected along Z (the classes annotated anywhere on each column; along Y for 3D
strokes, which tend to run along the long Z extent of the phantom in mm) to show strokes that run
across slices, or for boxes the coronal slice through the structures.

Usage:
    python scripts/prompt_figures.py [--out docs/prompts] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from experts.scribbles import create_scribble_style, list_habits, list_scribble_styles  # noqa: E402

IGNORE = 3
SPACING = (1.0, 1.0, 1.5)
COLOURS = ListedColormap(["#2b83ba", "#d7191c", "#fdae61"])  # background, outer, inner
CORONAL = {"box", "box-2d", "habit-box-then-clicks"}  # projections of a box show nothing
ALONG_Y = {"line-3d", "centreline-3d", "habit-quick-lines"}  # 3D strokes: project along Y
VARIANTS = {  # file stem -> (style, configuration), shown besides each style's defaults
    "line-3d": ("line", {"mode": "3d", "n_strokes": 2}),
    "line-deformed": ("line", {"deform_mm": 2.0, "density": 0.5}),
    "centreline-3d": ("centreline", {"mode": "3d"}),
    "contour-deformed": ("contour", {"deform_mm": 1.5}),
    "clicks-centre": ("clicks", {"mode": "centre", "n_positive": 3}),
    "clicks-border": ("clicks", {"mode": "border", "n_positive": 3}),
    "box-2d": ("box", {"mode": "2d"}),
}


def phantom(n: int = 48, seed: int = 0) -> np.ndarray:
    """Two nested smooth blobs in an [n, n, n] volume: 0 background, 1 outer, 2 inner."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[:n, :n, :n] / (n - 1) - 0.5
    bumps = ndi.gaussian_filter(rng.standard_normal((n, n, n)), n / 6)
    bumps /= np.abs(bumps).max()
    outer = (x / 0.36) ** 2 + (y / 0.30) ** 2 + (z / 0.34) ** 2 + 0.5 * bumps
    inner = ((x - 0.06) / 0.14) ** 2 + ((y + 0.04) / 0.11) ** 2 + (z / 0.16) ** 2 + 0.3 * bumps
    label = np.zeros((n, n, n), dtype=np.int64)
    label[outer < 1] = 1
    label[(inner < 1) & (outer < 1)] = 2
    return label


def best_slice(label: np.ndarray, partial: np.ndarray, axis: int) -> int:
    """The slice along ``axis`` with the most annotated foreground, then the most annotation on foreground slices."""
    others = tuple(a for a in range(3) if a != axis)
    annotated = partial != IGNORE
    score = np.stack([(annotated & (label > 0)).sum(axis=others), (annotated & (label > 0).any(axis=others,
                      keepdims=True)).sum(axis=others), (label > 0).sum(axis=others)])
    return int(np.lexsort(score[::-1])[-1])


def render(label: np.ndarray, partial: np.ndarray, title: str, path: Path, *, coronal: bool, along: int,
           seed: int) -> None:
    """Write the two-panel figure of one partial label to ``path``."""
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(label.astype(float), 1.0) + 0.15 * rng.standard_normal(label.shape)
    z = best_slice(label, partial, 2)
    panels = [(image[:, :, z], label[:, :, z], partial[:, :, z], f"axial slice z={z}")]
    if coronal:
        y = best_slice(label, partial, 1)
        panels.append((image[:, y, :], label[:, y, :], partial[:, y, :], f"coronal slice y={y}"))
    else:
        projected = np.full(np.delete(label.shape, along), IGNORE)
        for k in (0, 1, 2):  # foreground drawn last, on top
            projected[(partial == k).any(axis=along)] = k
        truth = (label > 0).any(axis=along).astype(int) + (label == 2).any(axis=along)
        panels.append((image.mean(axis=along), truth, projected, f"strokes projected along {'xyz'[along]}"))
    fig, axes = plt.subplots(1, 2, figsize=(5.6, 3.0), dpi=90)
    for ax, (img, truth, part, name) in zip(axes, panels):
        ax.imshow(img.T, cmap="gray", origin="lower", interpolation="nearest")
        ax.contour(truth.T, levels=[0.5, 1.5], colors="white", linewidths=0.6, alpha=0.7)
        shown = np.ma.masked_equal(part, IGNORE).T
        ax.imshow(shown, cmap=COLOURS, vmin=-0.5, vmax=2.5, origin="lower", interpolation="nearest", alpha=0.85)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/prompts"), help="folder of the PNGs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom and the prompts")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    label = phantom(seed=args.seed)
    figures = {name: (name, {}) for name in list_scribble_styles() if name != "habit"}
    figures.update(VARIANTS)
    figures.update({f"habit-{h}": ("habit", {"habit": h}) for h in list_habits()})
    rows = []
    for stem, (style_name, config) in figures.items():
        style = create_scribble_style(style_name, **config)
        params = style.make_params(label, ignore_label=IGNORE, rng=np.random.default_rng(args.seed), spacing=SPACING)
        partial = style.apply(label, params, ignore_label=IGNORE, spacing=SPACING)
        fraction = (partial != IGNORE).mean()
        detail = ", ".join(f"{k}={v}" for k, v in config.items())
        title = f"{style_name}({detail}): {100 * fraction:.2f}% annotated"
        path = args.out / f"{stem}.png"
        render(label, partial, title, path, coronal=stem in CORONAL, along=1 if stem in ALONG_Y else 2,
               seed=args.seed)
        print(f"{path}  {100 * fraction:.2f}% annotated")
        rows.append(f"| [{stem}]({stem}.png) | `{style_name}` | `{json.dumps(config)}` | {100 * fraction:.2f} % |")
    index = [
        "# Prompt styles on a phantom",
        "",
        f"Written by `scripts/prompt_figures.py` (seed {args.seed}): two nested blobs, 48^3 voxels at "
        f"{SPACING} mm. Blue: background, red: outer blob, orange: inner blob, white: true outlines; "
        "uncoloured voxels are ignore.",
        "",
        "| figure | style | configuration | annotated |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    (args.out / "README.md").write_text("\n".join(index))


if __name__ == "__main__":
    main()
