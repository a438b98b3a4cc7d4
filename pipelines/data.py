"""``expertseg data``: check, demo, import, and add an expert (simulated or imported scribbles)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import click
import numpy as np

__all__ = ["check", "demo", "import_", "scribble", "format_summary"]


def check(dataset: str, *, quick: bool = False) -> None:
    """Print a dataset summary, or raise :class:`DatasetError` listing every problem."""
    from experts.data.manifest import scan_dataset

    manifest = scan_dataset(dataset, read_voxels=not quick)
    for w in manifest.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(format_summary(manifest, agreement=not quick))


def format_summary(manifest, *, agreement: bool = True) -> str:
    """A human-readable summary: cases, experts, who labelled what, kinds, spacing, agreement."""
    spec = manifest.spec
    lines = [f"dataset {spec.name or manifest.root.name}: {manifest.root}"]
    train, test = manifest.case_ids("train"), manifest.case_ids("test")
    lines.append(f"  cases: {len(train)} training, {len(test)} test; channels: {', '.join(spec.channel_names.values())}")
    lines.append(f"  labels: {', '.join(f'{n}={v}' for n, v in sorted(spec.labels.items(), key=lambda kv: kv[1]))}")
    spacings = np.array([manifest.cases[c].spacing for c in train + test])
    shapes = np.array([manifest.cases[c].shape for c in train + test])
    lines.append(f"  spacing (mm): median {_fmt(np.median(spacings, 0))}, range {_fmt(spacings.min(0))} - {_fmt(spacings.max(0))}")
    lines.append(f"  shape: median {_fmt(np.median(shapes, 0), 0)}, min {_fmt(shapes.min(0), 0)}, max {_fmt(shapes.max(0), 0)}")
    lines.append("  experts:")
    width = max(len(e) for e in manifest.experts) if manifest.experts else 6
    for e in manifest.experts:
        kinds = Counter(lf.kind for lf in manifest.labels_of(expert=e, split="train"))
        n_test = len(manifest.labels_of(expert=e, split="test"))
        role = " [new]" if e in manifest.new_experts else ""
        desc = manifest.description_of(e)
        lines.append(
            f"    {e:<{width}}{role:6} train: {kinds.get('dense', 0):3d} dense {kinds.get('partial', 0):3d} partial; "
            f"test: {n_test:3d}" + (f"  - {desc}" if desc else "")
        )
    lines.append("  who labelled what (D dense, p partial, . none; columns: " + ", ".join(f"{i}={e}" for i, e in enumerate(manifest.experts)) + "):")
    col = max(len(c) for c in train + test) if train + test else 4
    lines.append("    " + " " * col + " " + " ".join(f"{i:>2}" for i in range(len(manifest.experts))))
    for split, ids in (("train", train), ("test", test)):
        for c in ids:
            row = []
            for e in manifest.experts:
                lf = manifest.label(c, e)
                row.append(" ." if lf is None or lf.split != split else (" D" if lf.kind == "dense" else " p"))
            lines.append(f"    {c:<{col}} " + " ".join(row) + ("" if split == "train" else "   (test)"))
    partial = manifest.labels_of(kind="partial")
    if partial:
        lines.append("  annotated-voxel fraction of partial labels:")
        for e in manifest.experts:
            files = [lf for lf in partial if lf.expert == e]
            if files:
                items = [f"{lf.case} {lf.annotated_fraction:.2%}" for lf in files]
                lines += [f"    {e}: " + ", ".join(items[i : i + 6]) for i in range(0, len(items), 6)]
    if agreement:
        from experts.data.agreement import pairwise_agreement

        table = pairwise_agreement(manifest)
        if table:
            lines.append("  pairwise inter-expert Dice per class (mean over cases both labelled densely):")
            experts = [e for e in manifest.experts if any(e in pair for pairs in table.values() for pair in pairs)]
            w = max(8, max(len(e) for e in experts) + 1)
            for cls, pairs in table.items():
                lines.append(f"    {cls:<{w}}" + "".join(f"{e[:w - 1]:>{w}}" for e in experts))
                for a in experts:
                    row = []
                    for b in experts:
                        v = pairs.get((a, b)) or pairs.get((b, a))
                        row.append(f"{'-':>{w}}" if a == b or v is None else f"{v[0]:>{w}.3f}")
                    lines.append(f"    {a:<{w}}" + "".join(row))
    return "\n".join(lines)


def _fmt(values, digits: int = 3) -> str:
    """``(1.0, 1.0, 2.5)``-style text of a vector."""
    return "(" + ", ".join(f"{float(v):.{digits}f}".rstrip("0").rstrip(".") if digits else str(int(v)) for v in values) + ")"


def _dataset_out(out: str, overwrite: bool) -> None:
    """A dataset command's --out: not inside another dataset or the current folder, and replaced
    with --overwrite only when it is a dataset itself (never a folder of other files)."""
    from experts.data.locations import check_output_location, is_dataset
    from experts.errors import DatasetError

    path = check_output_location(out, what="dataset", replacing_dataset=True)
    if overwrite and path.is_dir() and any(path.iterdir()) and not is_dataset(path):
        raise DatasetError(f"{out}: holds files but no dataset; --overwrite replaces only a dataset (dataset.json and imagesTr/); choose an empty or new folder")


def demo(out: str, *, seed: int, n_train: int, n_test: int, spacing: float | None, overwrite: bool, structures: str = "tissue") -> None:
    from experts.data.demo import make_demo_dataset

    _dataset_out(out, overwrite)
    t0 = time.perf_counter()
    path = make_demo_dataset(out, seed=seed, n_train=n_train, n_test=n_test, spacing=spacing, structures=structures, overwrite=overwrite, progress=sys.stderr.isatty())
    click.echo(f"demo dataset written to {Path(path).resolve()} in {time.perf_counter() - t0:.1f} s")
    click.echo(f"next: expertseg data check {out}")


def import_(fmt: str, *, src: str, out, task, expert, overwrite: bool, data=None, unlabelled=None, role=None) -> None:
    """``qubiq|msseg2016|nnunet``: a new dataset in ``out``; ``scribbles``: expert ``expert`` added to ``data``."""
    from experts.errors import ExpertsegError

    if fmt == "scribbles":
        wrong = [f"needs {flag}" for flag, value in (("--data", data), ("--expert", expert), ("--unlabelled", unlabelled)) if value is None]
        wrong += [f"takes no {flag}" for flag, value in (("--out", out), ("--task", task)) if value is not None]
        if wrong:
            raise ExpertsegError(f"data import scribbles {' and '.join(wrong)}: it adds expert --expert to the dataset --data in place, e.g. --src S --data D --expert drscrib --unlabelled zero-shifted")
        from experts.data.scribble_import import import_scribbles

        added = import_scribbles(src, data, expert=expert, unlabelled=unlabelled, role=role or "new", overwrite=overwrite)
        return report_added(added, what=f"scribbles imported from {src}", where=data)
    if out is None or data is not None or unlabelled is not None or role is not None:
        raise ExpertsegError(f"data import {fmt}: needs --out (the dataset to create); --data, --unlabelled and --role are for 'data import scribbles'")
    from experts.data.converters import import_dataset

    _dataset_out(out, overwrite)
    options = {}
    if task is not None:
        options["task"] = task
    if expert is not None:
        options["expert"] = expert
    path = import_dataset(fmt, src=src, out=out, overwrite=overwrite, **options)
    click.echo(f"imported {fmt} dataset into {Path(path).resolve()}")
    click.echo(f"next: expertseg data check {out}")


def scribble(data: str, *, expert: str, style, habit, new_id, role, seed, config_path, overrides, out, overwrite: bool) -> None:
    """Add a simulated doctor: scribbles drawn from ``expert``'s dense labels (see :func:`simulate_expert`)."""
    from experts.data.simulated_expert import resolve_style, simulate_expert

    style = resolve_style(style, habit)
    cfg = scribble_config(style, habit, config_path, overrides)
    added = simulate_expert(
        data, source=expert, style=style, params=cfg.scribbles.params, new_id=new_id, seed=cfg.seed if seed is None else seed,
        role=role or "new", out=out, overwrite=overwrite, progress=sys.stderr.isatty(),
    )
    report_added(added, what=f"{'habit ' + habit if habit else style} scribbles simulated from {expert}'s dense training labels", where=out or data)


def scribble_config(style: str, habit, config_path, overrides):
    """The run config whose ``scribbles`` section configures ``style``: the config file's section when
    it names ``style``, else the style's defaults (for ``slicewise``: the embedded defaults), then
    ``--habit`` and the ``--set`` overrides (``scribbles.params.k=v``)."""
    from experts.errors import ConfigError
    from pipelines.runtime.config import load_config

    base = load_config(config_path)
    extra = [] if base.scribbles.name == style else [f"scribbles.name={style}", "scribbles.params={}"]
    if habit is not None:
        extra.append(f"scribbles.params.habit={habit}")
    cfg = load_config(config_path, [*extra, *overrides])
    if cfg.scribbles.name != style:
        raise ConfigError(f"--set scribbles.name={cfg.scribbles.name} disagrees with --style {style}; give the style with --style only")
    return cfg


def report_added(added, *, what: str, where: str) -> None:
    """Print what an added expert received, its warnings, its log and the next command."""
    for line in added.warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"added expert {added.expert} to {added.root}: {what}")
    click.echo(f"  labelsTr/{added.expert}/: {len(added.train)} files; labelsTs/{added.expert}/: {len(added.test)} files")
    if added.log is not None:
        click.echo(f"  parameters and provenance: {added.log}")
    click.echo(f"next: expertseg data check {where}")
