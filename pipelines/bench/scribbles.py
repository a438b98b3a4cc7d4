"""Scribbles versus dense: the same experts' cases, pretrained from simulated scribbles of their
dense labels or from the dense labels themselves; the ratio of test Dice per expert.

Published partial-loss results in nnU-Net put scribble training at roughly 92-96% of dense.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

__all__ = ["run", "derived_dataset"]


def derived_dataset(manifest, experts: list[str], out: Path, *, scribbles: bool, scribble_cfg) -> Path:
    """The dense training labels of ``experts`` (and their test labels), as they are or as scribbles."""
    from experts.data.nifti import load_volume, save_volume, spacing_of
    from experts.scribbles import simulate_scribbles
    from pipelines.bench.modelling import _link

    if out.exists():
        shutil.rmtree(out)
    k = manifest.spec.num_classes
    used = set()
    for i, lf in enumerate(lf for lf in manifest.labels if lf.expert in experts and lf.kind == "dense"):
        sub = "labelsTr" if lf.split == "train" else "labelsTs"
        dst = out / sub / lf.expert / lf.path.name
        if scribbles and lf.split == "train":
            vol = load_volume(lf.path, kind="label")
            partial = simulate_scribbles(np.asarray(vol.array).astype(np.int64), ignore_label=k, seed=i, spacing=spacing_of(vol.affine), style=scribble_cfg.name, **scribble_cfg.params)
            save_volume(dst, partial.astype(np.uint8), vol.affine)
        else:
            _link(lf.path, dst)
        used.add(lf.case)
    for case in used:
        folder = "imagesTr" if manifest.cases[case].split == "train" else "imagesTs"
        for p in manifest.cases[case].images:
            _link(p, out / folder / p.name)
    spec = manifest.spec.to_json()
    spec["experts"] = {e: {"description": manifest.description_of(e)} for e in experts}
    (out / "dataset.json").write_text(json.dumps(spec, indent=2))
    return out


def run(ctx) -> dict:
    from experts.data.manifest import scan_dataset
    from pipelines.runtime.config import load_config

    manifest = scan_dataset(ctx.data)
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    experts = [e for e in pre if len(manifest.labels_of(expert=e, split="train", kind="dense")) >= 2]
    cfg = load_config(ctx.config, ctx.overrides)
    dense = ctx.pretrain("dense-only", data=derived_dataset(manifest, experts, ctx.out / "data-dense", scribbles=False, scribble_cfg=cfg.scribbles))
    scrib_data = derived_dataset(manifest, experts, ctx.out / "data-scribbles", scribbles=True, scribble_cfg=cfg.scribbles)
    scrib = ctx.pretrain("scribbles-only", data=scrib_data)
    fractions = [lf.annotated_fraction for lf in scan_dataset(scrib_data).labels_of(split="train", kind="partial")]
    ratio = {}
    for e in experts:
        d, s = dense["test_dice"].get(e), scrib["test_dice"].get(e)
        if d and s:
            ratio[e] = s["mean"] / d["mean"]
    return {
        "experts": experts,
        "dense": {e: dense["test_dice"].get(e) for e in experts},
        "scribbles": {e: scrib["test_dice"].get(e) for e in experts},
        "ratio": ratio,
        "mean_ratio": float(np.mean(list(ratio.values()))) if ratio else None,
        "annotated_fraction": {"mean": float(np.mean(fractions)), "min": float(np.min(fractions)), "max": float(np.max(fractions))} if fractions else None,
        "scribble_settings": {"style": cfg.scribbles.name, **cfg.scribbles.params},
    }
