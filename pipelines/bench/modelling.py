"""Multi-expert modelling: one CIN network versus the alternatives, per expert.

- CIN: one network, one row per expert (the shared ``cin`` pretraining);
- pooled: the same network and budget on all experts' labels pooled into one row;
- separate: one network per expert, the pretraining budget split between them (same total compute);
- STAPLE: one network on the STAPLE consensus of the experts' dense labels (SimpleITK).

Every model is scored on each expert's test labels.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

__all__ = ["run", "staple_dataset"]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def staple_dataset(manifest, experts: list[str], out: Path) -> Path:
    """A dataset whose one expert, ``staple``, holds the STAPLE consensus of ``experts``' dense
    training labels (cases with at least two of them)."""
    from experts.consensus import staple
    from experts.data.nifti import load_volume, save_volume

    if out.exists():
        shutil.rmtree(out)
    k = manifest.spec.num_classes
    for case in manifest.case_ids("train"):
        labels = [manifest.label(case, e) for e in experts]
        dense = [lf for lf in labels if lf is not None and lf.kind == "dense"]
        if len(dense) < 2:
            continue
        vols = [load_volume(lf.path, kind="label") for lf in dense]
        est = staple(np.stack([np.asarray(v.array).astype(np.uint8) for v in vols]), num_classes=k)
        save_volume(out / "labelsTr" / "staple" / f"{case}{manifest.spec.file_ending}", est.labels.astype(np.uint8), vols[0].affine)
        for p in manifest.cases[case].images:
            _link(p, out / "imagesTr" / p.name)
    spec = manifest.spec.to_json()
    spec["name"] = f"{manifest.spec.name}STAPLE"
    spec["experts"] = {"staple": {"description": f"STAPLE consensus of {', '.join(experts)}"}}
    (out / "dataset.json").write_text(json.dumps(spec, indent=2))
    return out


def _score(model_dir: str, manifest, rows: dict[str, int]) -> dict:
    from pipelines.runtime.models import load_model
    from experts.training.validation import score_test_cases

    bundle = load_model(model_dir)
    return score_test_cases(bundle.network, manifest, bundle.plan, rows, device="cpu")


def run(ctx) -> dict:
    from experts.data.manifest import scan_dataset
    from pipelines.runtime.config import load_config

    manifest = scan_dataset(ctx.data)
    pre = [e for e in manifest.experts if e not in manifest.new_experts]
    steps = load_config(ctx.config, ctx.overrides).train.steps
    cin = ctx.pretrain("cin", include=pre)
    pooled = ctx.pretrain("pooled", include=pre, overrides=("sampling.pool_experts=true",))
    separate = {}
    for e in pre:
        s = ctx.pretrain(f"separate-{e}", include=[e], overrides=(f"train.steps={max(1, steps // len(pre))}",))
        separate[e] = s["test_dice"].get(e)
    staple_data = staple_dataset(manifest, pre, ctx.out / "data-staple")
    st = ctx.pretrain("staple", data=staple_data)
    return {
        "experts": pre,
        "steps": steps,
        "separate_steps": max(1, steps // len(pre)),
        "cin": {e: cin["test_dice"].get(e) for e in pre},
        "pooled": {e: pooled["test_dice"].get(e) for e in pre},
        "separate": separate,
        "staple": _score(st["model"], manifest, {e: 0 for e in pre}),
        "train_seconds": {name: ctx.runs[name]["train_seconds"] for name in ("cin", "pooled", "staple")},
    }
