"""``expertseg predict``: segment scans the way each requested expert would.

Writes ``<out>/<expert>/<case>.nii.gz`` (the layout of ``labelsTs``, so ``evaluate`` can score it),
``<out>/consensus/<case>.nii.gz`` (argmax of the experts' mean probabilities) and
``<out>/disagreement/<case>.nii.gz`` (per-voxel disagreement in nats), each with exactly the input's
shape and affine. Existing outputs are never overwritten without ``--overwrite``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click
from tqdm.auto import tqdm

from experts.errors import ConfigError, DatasetError
from pipelines.runtime.common import select_device, staged

__all__ = ["predict", "find_cases"]

_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")


def find_cases(images: str | Path, *, num_channels: int) -> dict[str, list[Path]]:
    """Cases in a file or folder: ``<case>_<CCCC>.nii[.gz]`` channel files, or plain single-channel files."""
    path = Path(images)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith(".")) if path.is_dir() else None
    if files is None:
        raise DatasetError(f"{images}: no such file or folder")
    cases: dict[str, dict[int, Path]] = {}
    for f in files:
        m = _CHANNEL.fullmatch(f.name)
        if m:
            cases.setdefault(m["case"], {})[int(m["channel"])] = f
        elif num_channels == 1:
            cases.setdefault(f.name.split(".nii")[0], {})[0] = f
        else:
            raise DatasetError(f"{f}: name must be <case>_<CCCC>.nii.gz for a {num_channels}-channel model")
    out = {}
    for case, chans in sorted(cases.items()):
        extra = sorted(c for c in chans if c >= num_channels)
        if extra:
            raise DatasetError(f"{images}: case {case} has channel file {case}_{extra[0]:04d}.nii.gz but the model takes {num_channels} channel(s); pass only the model's channels")
        missing = [c for c in range(num_channels) if c not in chans]
        if missing:
            raise DatasetError(f"{images}: case {case} lacks channel(s) {missing} ({case}_{missing[0]:04d}.nii.gz)")
        out[case] = [chans[c] for c in range(num_channels)]
    if not out:
        raise DatasetError(f"{images}: no NIfTI image found")
    return out


def predict(*, model: str, images: str, out: str, experts: str = "all", adapters: list[str] | None = None, overwrite: bool = False, overlap: float | None = None, config_path: str | None = None, overrides: tuple[str, ...] = (), progress: bool = True) -> dict:
    """Predict and write NIfTIs; returns the manifest written to ``<out>/predictions.json``.

    The ``predict`` section of the config (``--config`` / ``--set``: overlap, sliding-window batch,
    blending) sets how; ``overlap`` overrides it."""
    from experts.data.locations import check_output_location
    from experts.data.nifti import save_volume
    from experts.predictor import disagreement, predict_case
    from pipelines.runtime.config import load_config
    from pipelines.runtime.models import load_model

    t0 = time.perf_counter()
    pcfg = load_config(config_path, overrides).predict
    check_output_location(out, what="predictions")
    device = select_device()
    bundle = load_model(model, device=device, adapters=adapters)
    wanted = bundle.experts if experts in ("all", "", None) else [e.strip() for e in experts.split(",") if e.strip()]
    for e in wanted:
        bundle.row(e)
    if bundle.lineage.get("forked_for") and wanted != [bundle.lineage["forked_for"]]:
        click.echo(f"warning: this model's shared weights were retrained for {bundle.lineage['forked_for']!r}; other experts' predictions differ from the pretrained model", err=True)
    cases = find_cases(images, num_channels=bundle.plan.num_channels)
    out = Path(out)
    targets = [out / e / f"{c}.nii.gz" for c in cases for e in wanted] + [out / d / f"{c}.nii.gz" for c in cases for d in ("consensus", "disagreement")] + [out / "predictions.json"]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]}: exists ({len(existing)} output file(s) would be replaced); pass --overwrite or choose another --out")
    with staged(out) as stage:  # a failure on any case leaves --out as it was
        for case, paths in tqdm(cases.items(), desc="predict", disable=not progress, leave=False):
            pred = predict_case(bundle, paths, wanted, device=device, overlap=pcfg.overlap if overlap is None else overlap, sw_batch_size=pcfg.sw_batch_size, blend=pcfg.blend)
            for e, lab in zip(wanted, pred.labels()):
                save_volume(stage / e / f"{case}.nii.gz", lab, pred.affine, dtype="uint8")
            _, cons = pred.consensus()
            save_volume(stage / "consensus" / f"{case}.nii.gz", cons, pred.affine, dtype="uint8")
            save_volume(stage / "disagreement" / f"{case}.nii.gz", disagreement(pred.probabilities), pred.affine, dtype="float32")
        _write_manifest(stage, model=model, bundle=bundle, wanted=wanted, cases=cases, seconds=time.perf_counter() - t0)
    manifest = json.loads((out / "predictions.json").read_text())
    click.echo(f"predicted {len(wanted)} expert(s) on {len(cases)} case(s) in {manifest['seconds']:.0f} s: {out.resolve()}")
    return manifest


def _write_manifest(folder: Path, *, model: str, bundle, wanted: list[str], cases: dict, seconds: float) -> None:
    manifest = {
        "model": model,
        "model_id": bundle.model_id,
        "experts": wanted,
        "cases": list(cases),
        "classes": bundle.plan.class_names,
        "outputs": {"experts": "<expert>/<case>.nii.gz", "consensus": "consensus/<case>.nii.gz", "disagreement": "disagreement/<case>.nii.gz (nats)"},
        "seconds": round(seconds, 1),
    }
    (folder / "predictions.json").write_text(json.dumps(manifest, indent=2))
