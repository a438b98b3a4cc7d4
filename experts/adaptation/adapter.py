"""Adapters: only what adaptation trained, a few KB, loadable onto the pretrained model.

An adapter folder holds ``adapter.pt`` (+ ``.sha256``: the trained tensors, read with
``torch.load(weights_only=True)``) and ``adapter.json`` (the new expert's id, the pretrained model's
id it belongs to, the init strategy and trainable set, and where the pretrained model lives). Loading
checks that the adapter was trained on *this* pretrained model (same ``model_id``) and appends the
new expert's row; adapters of the sets that leave shared weights alone (``rows``, ``rows+head``,
``rows+lowrank``) stack, one expert each.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path


from experts.bundle import ModelBundle
from experts.networks import ROW_ROLES, ConditionedNetwork
from experts.errors import ModelFileError
from experts.training.checkpoint import load_checked, save_checked

__all__ = ["save_adapter", "read_adapter_meta", "apply_adapter", "is_adapter"]

FORMAT = "expertseg-adapter"
VERSION = 1
READABLE_VERSIONS = (1,)


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / "adapter.json").is_file()


def save_adapter(folder: str | Path, *, net: ConditionedNetwork, expert: str, row: int, base_model_id: str, base_ref: str, init: str, trainable: str, forks: bool, extra: dict | None = None) -> Path:
    """Write the new expert's rows (and head or forked weights) of an adapted network.

    Args:
        folder: output folder.
        net: the adapted network.
        expert: the new expert's id.
        row: its row index in ``net``.
        base_model_id: ``model_id`` of the pretrained bundle.
        base_ref: where the pretrained bundle can be found (a folder or ``models:/...`` URI).
        init / trainable / forks: how it was adapted.
        extra: more metadata (n_shots, label kind, scores, ...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = {name: {"gamma": g.cpu(), "beta": b.cpu()} for name, (g, b) in net.expert_rows(row).items()}
    head = net.expert_head_state(row)
    low_rank = net.expert_low_rank_state(row)
    shared = {}
    if forks:  # every shared weight; the experts' rows travel in ``rows``, the pretrained ones in the base
        names = {n for role, group in net.parameter_groups().items() if role not in ROW_ROLES for n in group}
        shared = {k: v.detach().cpu().clone() for k, v in net.state_dict().items() if k in names}
    save_checked(folder / "adapter.pt", {"rows": rows, "head": head, "shared": shared, **({"low_rank": low_rank} if low_rank else {})})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "expert": expert,
        "base_model_id": base_model_id,
        "base": base_ref,
        "init": init,
        "trainable": trainable,
        "forks": forks,
        **(extra or {}),
    }
    (folder / "adapter.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def read_adapter_meta(folder: str | Path) -> dict:
    path = Path(folder) / "adapter.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{folder}: no adapter.json; pass an adapter folder written by 'expertseg adapt'") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelFileError(f"{path}: not valid JSON; the adapter is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") not in READABLE_VERSIONS:
        raise ModelFileError(f"{path}: not an expertseg adapter (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    missing = [k for k in ("expert", "base_model_id", "base", "forks") if k not in meta]
    if missing:
        raise ModelFileError(f"{path}: lacks {', '.join(missing)}; the adapter is damaged or was not written by expertseg")
    if not (isinstance(meta["expert"], str) and meta["expert"] and isinstance(meta["base"], str) and meta["base"] and isinstance(meta["base_model_id"], str) and isinstance(meta["forks"], bool)):
        raise ModelFileError(f"{path}: expert, base and base_model_id must be text and forks true or false")
    return meta


def apply_adapter(bundle: ModelBundle, folder: str | Path) -> ModelBundle:
    """Append the adapter's expert to (a copy of) ``bundle``. On an interactive model the adapter
    goes onto its automatic network, and the expert's interactive row copies the colleague the
    adaptation started from (:func:`experts.interactive.building.with_automatic`).

    Raises:
        ModelFileError: the adapter belongs to another pretrained model, its expert is already in the
            model, its tensors do not fit, or a forked adapter would be stacked.
    """
    folder = Path(folder)
    meta = read_adapter_meta(folder)
    if getattr(bundle.network, "prompt_channels", 0):  # an interactive model: onto its automatic network
        from experts.interactive.building import automatic_bundle, with_automatic

        return with_automatic(bundle, apply_adapter(automatic_bundle(bundle), folder), source=meta.get("init_source"))
    base_id = bundle.lineage.get("base_model_id", bundle.model_id)
    if meta["base_model_id"] != base_id:
        raise ModelFileError(
            f"{folder}: adapter for expert {meta['expert']!r} was trained on pretrained model {meta['base_model_id'][:12]}, "
            f"not on this one ({base_id[:12]}); load it onto the model it was trained on"
        )
    if meta["expert"] in bundle.experts:
        raise ModelFileError(f"{folder}: expert {meta['expert']!r} is already in the model; adapters add new experts")
    if bundle.lineage.get("forked_for") or (meta["forks"] and bundle.lineage.get("adapted")):
        raise ModelFileError(f"{folder}: adapters that retrain shared weights (trainable 'decoder'/'all') cannot be stacked with other adapters")
    payload = load_checked(folder / "adapter.pt")
    net = copy.deepcopy(bundle.network)
    names = set(net.cin_layers())
    if set(payload["rows"]) != names:
        raise ModelFileError(f"{folder}: adapter rows do not match this network's layers; it was made for another architecture")
    try:
        if meta["forks"]:
            net.load_state_dict({**net.state_dict(), **payload["shared"]})
        row, _ = net.add_expert({n: (payload["rows"][n]["gamma"], payload["rows"][n]["beta"]) for n in names})
        if payload["head"]:
            net.add_expert_head(row, payload["head"])
        if payload.get("low_rank"):
            net.add_expert_low_rank(row, state=payload["low_rank"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise ModelFileError(f"{folder}: adapter tensors do not fit this model ({str(err).splitlines()[0][:160]})") from None
    for p in net.parameters():
        p.requires_grad_(True)
    lineage = dict(bundle.lineage)
    lineage["base_model_id"] = base_id
    lineage["adapted"] = list(lineage.get("adapted", [])) + [meta["expert"]]
    if meta["forks"]:
        lineage["forked_for"] = meta["expert"]
    return ModelBundle(network=net, experts=bundle.experts + [meta["expert"]], plan=bundle.plan, arch=bundle.arch, config=bundle.config, model_id=bundle.model_id, lineage=lineage)
