"""A trained model on disk: weights, architecture, experts, plan and config, loaded by our own code.

A bundle is a folder::

    weights.pt  weights.pt.sha256   state_dict (plain tensors, checksummed)
    model.json                      architecture, expert ids (row order), classes, ids
    plan.json                       preprocessing plan
    config.yaml                     the resolved run config
    bundle.sha256                   checksums of the four files above (format 2)

Loading checks every file against ``bundle.sha256`` and validates ``model.json`` and ``plan.json``
field by field, so a damaged or hand-edited plan (``patch_size: [0, 0, 0]``) is refused instead of
predicting nonsense.

It is what pretraining registers in MLflow and what ``adapt``, ``predict`` and ``compare`` load:
the network is rebuilt from code + ``model.json`` and the weights are read with
``torch.load(weights_only=True)``. MLflow's own PyTorch flavour would unpickle, and a torch.export
model cannot be trained further.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from experts.data.plan import Plan
from experts.errors import ModelFileError
from experts.networks import NETWORKS, ConditionedNetwork, create_network
from experts.params import load_yaml
from experts.training.checkpoint import atomic_write_bytes, file_digest, load_checked, save_checked

__all__ = ["ModelBundle", "save_bundle", "load_bundle", "FORMAT", "VERSION", "READABLE_VERSIONS"]

FORMAT = "expertseg-model"
#: version 2: ``arch.kwargs`` may name the network's returned ``features`` and ``config.yaml`` holds
#: loss terms and ``{name, params}`` components (version 1 files load through the config aliases)
VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass
class ModelBundle:
    """A network with everything needed to use it.

    Attributes:
        network: the module, rows in the order of ``experts``.
        experts: expert ids; ``experts[i]`` is row ``i`` of every CIN table.
        plan: the preprocessing plan.
        arch: ``{"name": registry name, "kwargs": {...}}`` without in/out sizes and expert count.
        config: the resolved config of the run that produced it.
        model_id: sha256 of the weights file when loaded or saved.
        lineage: e.g. ``{"base_model_id": ..., "adapted": [...]}`` for adapted models.
    """

    network: ConditionedNetwork
    experts: list[str]
    plan: Plan
    arch: dict
    config: dict = field(default_factory=dict)
    model_id: str = ""
    lineage: dict = field(default_factory=dict)

    def row(self, expert: str) -> int:
        try:
            return self.experts.index(expert)
        except ValueError:
            raise ModelFileError(f"expert {expert!r} is not in this model; it knows {', '.join(self.experts)}") from None


def build_network(arch: dict, *, plan: Plan, num_experts: int) -> ConditionedNetwork:
    return create_network(arch["name"], in_channels=plan.num_channels, num_classes=plan.num_classes, num_experts=num_experts, **arch.get("kwargs", {}))


def save_bundle(folder: str | Path, bundle: ModelBundle) -> Path:
    """Write the bundle; CIN blocks are merged into one table per layer first (on a copy)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(bundle.network).cpu()
    net.merge_row_blocks()
    digest = save_checked(folder / "weights.pt", net.state_dict())
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "arch": bundle.arch,
        "experts": list(bundle.experts),
        "in_channels": bundle.plan.num_channels,
        "num_classes": bundle.plan.num_classes,
        "expert_heads": net.expert_head_rows(),
        **({"expert_low_rank": _low_rank_meta(net)} if net.expert_low_rank_rows() else {}),
        "model_id": digest,
        "lineage": bundle.lineage,
    }
    (folder / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    bundle.plan.save(folder / "plan.json")
    (folder / "config.yaml").write_text(yaml.safe_dump(bundle.config, sort_keys=False))
    sums = "".join(f"{file_digest(folder / name)}  {name}\n" for name in BUNDLE_FILES)
    atomic_write_bytes(folder / "bundle.sha256", sums.encode())
    bundle.model_id = digest
    return folder


def _low_rank_meta(net: ConditionedNetwork) -> dict[str, dict]:
    """``{row: {rank, sites}}`` of the experts with low-rank residuals (to rebuild them on load)."""
    out = {}
    for row, sites in net.expert_low_rank_rows().items():
        state = net.expert_low_rank_state(row)
        out[str(row)] = {"rank": int(state[sites[0]]["0.weight"].shape[0]), "sites": sites}
    return out


#: the files a bundle's checksum covers
BUNDLE_FILES = ("weights.pt", "model.json", "plan.json", "config.yaml")


def _check_bundle_sums(folder: Path, version: int) -> None:
    sums = folder / "bundle.sha256"
    if not sums.is_file():
        if version >= 2:
            raise ModelFileError(f"{folder}: no bundle.sha256; the model folder is incomplete or was not written by expertseg")
        return  # format 1 bundles predate it; their weights still carry their own checksum
    listed = dict(reversed(line.split(None, 1)) for line in sums.read_text().splitlines() if line.strip())
    for name in BUNDLE_FILES:
        if name not in listed or not (folder / name).is_file() or file_digest(folder / name) != listed[name].strip():
            raise ModelFileError(f"{folder / name}: does not match bundle.sha256; the model folder was changed or damaged; use the original or retrain")


def _model_meta_problems(meta: dict, path: Path) -> list[str]:
    import re

    experts = meta.get("experts")
    if not (isinstance(experts, list) and experts and all(isinstance(e, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", e) for e in experts)):
        return [f"{path}: 'experts' must list the expert ids in row order, got {str(experts)[:80]}"]
    if len(set(experts)) != len(experts):
        return [f"{path}: 'experts' names an expert twice"]
    heads = meta.get("expert_heads", [])
    if not (isinstance(heads, list) and all(isinstance(h, int) and 0 <= h < len(experts) for h in heads)):
        return [f"{path}: 'expert_heads' must list rows of existing experts"]
    low_rank = meta.get("expert_low_rank", {})
    if not (isinstance(low_rank, dict) and all(k.isdigit() and int(k) < len(experts) and isinstance(v, dict) and isinstance(v.get("rank"), int) and v["rank"] > 0 and isinstance(v.get("sites"), list) and all(isinstance(n, str) for n in v["sites"]) for k, v in low_rank.items())):
        return [f"{path}: 'expert_low_rank' must map rows of existing experts to {{rank, sites}}"]
    if not isinstance(meta.get("arch"), dict) or not isinstance(meta["arch"].get("kwargs", {}), dict):
        return [f"{path}: 'arch' must be a mapping with name and kwargs"]
    return []


def load_bundle(folder: str | Path, *, device: str | torch.device = "cpu") -> ModelBundle:
    """Rebuild the network from ``model.json`` and load the checked weights.

    Raises:
        ModelFileError: missing files, a format this code does not read, an unknown architecture,
            or weights that do not fit (another architecture, another number of experts).
    """
    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise ModelFileError(f"{folder}: no model.json; pass a model folder written by expertseg (a run's model/ folder)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelFileError(f"{meta_path}: not valid JSON; the model folder is damaged") from None
    if meta.get("format") != FORMAT or meta.get("version") not in READABLE_VERSIONS:
        raise ModelFileError(f"{meta_path}: not an expertseg model (format {meta.get('format')!r} version {meta.get('version')!r})")
    problems = _model_meta_problems(meta, meta_path)
    if problems:
        raise ModelFileError(problems)
    _check_bundle_sums(folder, meta["version"])
    arch = meta.get("arch") or {}
    if arch.get("name") not in NETWORKS:
        raise ModelFileError(f"{meta_path}: unknown architecture {arch.get('name')!r}; known: {', '.join(NETWORKS.names())}")
    try:
        plan = Plan.load(folder / "plan.json")
    except (FileNotFoundError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise ModelFileError(f"{folder / 'plan.json'}: missing or damaged preprocessing plan") from None
    config = load_yaml((folder / "config.yaml").read_text(), where=str(folder / "config.yaml"), error=ModelFileError) if (folder / "config.yaml").is_file() else {}
    experts = list(meta["experts"])
    try:
        net = build_network(arch, plan=plan, num_experts=len(experts))
        net.check_input_size(plan.patch_size)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{meta_path}: the architecture and plan do not fit ({str(err).splitlines()[0][:200]})") from None
    try:
        for idx in meta.get("expert_heads", []):
            net.add_expert_head(int(idx))
        for idx, low in meta.get("expert_low_rank", {}).items():
            net.add_expert_low_rank(int(idx), rank=low["rank"], sites=low["sites"])
    except ValueError as err:
        raise ModelFileError(f"{meta_path}: {err}") from None
    state = load_checked(folder / "weights.pt")
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)[:200]
        raise ModelFileError(
            f"{folder / 'weights.pt'}: weights do not fit a {arch['name']} with {len(experts)} experts ({first}); "
            "the file comes from another architecture or a different number of experts"
        ) from None
    net.to(device)
    return ModelBundle(network=net, experts=experts, plan=plan, arch=arch, config=config or {}, model_id=meta.get("model_id", ""), lineage=meta.get("lineage", {}))
