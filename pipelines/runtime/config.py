"""Run configuration: plain YAML checked against a typed schema.

A config file holds any subset of the sections below; what it leaves out takes the defaults, which
are the embedded defaults the demo runs on (``configs/default.yaml`` spells them out). ``--set
section.key=value`` overrides one value (the value is parsed as YAML). Unknown keys, wrong types and
values outside their choices are errors naming the key and what is allowed. Nothing is evaluated:
configs are data.
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from experts.errors import ConfigError
from experts.params import build_dataclass, check_params

__all__ = [
    "Config",
    "load_config",
    "config_to_dict",
    "flatten",
    "apply_overrides",
]


@dataclass
class DataConfig:
    """Preprocessing plan overrides and the validation split."""

    spacing: list[float] | None = None  #: target spacing in mm; None: the dataset's median spacing
    patch_size: list[int] | None = None  #: training patch; None: planned from the data
    max_patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])  #: cap of the planned patch
    normalization: Literal["auto", "zscore", "ct", "none"] = "auto"
    n_folds: int = 5  #: case-level folds (GroupKFold over case ids)
    fold: int = 0  #: which fold validates
    cache: bool = True  #: keep preprocessed volumes in memory


@dataclass
class NetworkConfig:
    name: str = "cin_unet"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    cin: Literal["all", "encoder", "decoder"] = "all"
    features: list[str] = field(default_factory=lambda: ["decoder.0"])  #: internal features the network returns (for loss terms)


@dataclass
class SamplingConfig:
    """How (case, expert, label) triples are drawn: expert first, then label kind, then case."""

    expert_weights: dict[str, float] = field(default_factory=dict)  #: unlisted experts weigh 1
    kind_weights: dict[str, float] = field(default_factory=lambda: {"dense": 1.0, "partial": 1.0})
    pool_experts: bool = False  #: baseline: all experts share one row (cannot represent styles)


@dataclass
class AugmentConfig:
    flip: bool = True
    rotate90: bool = False
    intensity: bool = True  #: scale/shift/noise


@dataclass
class LossTermConfig:
    """One term of the loss: a registered term, its weight and parameters, and when it starts."""

    name: str = "partial_dice_ce"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)  #: checked by the term itself
    start_step: int = 0  #: weight 0 before this step
    ramp_steps: int = 0  #: linear ramp to ``weight`` over this many steps


@dataclass
class LossConfig:
    """The loss as a list of terms (default: partial Dice + CE alone)."""

    terms: list[LossTermConfig] = field(default_factory=lambda: [LossTermConfig()])


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 2
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    style_lr_scale: float = 1.0  #: learning rate of the experts' CIN rows, relative to lr
    weight_decay: float = 3e-5
    momentum: float = 0.99  #: SGD only
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    warmup_steps: int = 0
    grad_clip: float = 12.0
    val_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 10
    num_workers: int = 0
    threads: int = 0  #: torch CPU threads; 0 = leave torch's default
    deterministic: bool = False  #: deterministic algorithms (bitwise resume on CPU)
    amp: bool = True  #: mixed precision on CUDA (ignored on CPU)


@dataclass
class AdaptConfig:
    steps: int = 200
    batch_size: int = 2
    lr: float = 0.01  #: chosen by an Optuna study on validation cases (see the README); 0.05 was noisier
    head_lr: float = 1e-3  #: learning rate of shared parts when trainable includes them
    init: str = "nearest"  #: "mean", "nearest" or "expert:<id>"
    trainable: Literal["rows", "rows+head", "decoder", "all"] = "rows"
    holdout: Literal["auto", "none"] = "auto"  #: auto: hold one given case back to pick the best step when K >= 3
    eval_every: int = 25
    checkpoint_every: int = 50


@dataclass
class ScribbleConfig:
    """How scribbles are simulated from dense labels (``adapt --scribbles``, benchmarks)."""

    style: str = "slicewise"
    density: float = 0.5  #: fraction of slices annotated
    thickness: int = 1  #: stroke thickness in voxels
    axis: int = -1


@dataclass
class PredictConfig:
    overlap: float = 0.5
    sw_batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"


@dataclass
class TrackingConfig:
    backend: Literal["mlflow", "local"] = "mlflow"
    experiment: str = ""  #: "" = the stage's experiment from mlruns_template/
    model_name: str = ""  #: registered model name; "" = expertseg-<dataset name>
    register: bool = True


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    scribbles: ScribbleConfig = field(default_factory=ScribbleConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides; all checked.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or value, one line each.
    """
    raw: dict = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found; see configs/ for examples") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8 YAML") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{at}; fix the syntax") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections (data:, train:, ...), found {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    raw = _upgrade_legacy_keys(raw, where=where, warn=True)
    problems: list[str] = []
    cfg = build_dataclass(Config, raw, prefix="", where=where, problems=problems)
    if problems:
        raise ConfigError(problems)
    _check_values(cfg, where)
    return cfg


#: keys of the loss section before ``loss.terms``; they configure the ``partial_dice_ce`` term
LEGACY_LOSS_KEYS = ("name", "ce_weight", "dice_weight", "batch_dice")


def _upgrade_legacy_keys(raw: dict, *, where: str, warn: bool) -> dict:
    """Rewrite deprecated keys into their current form (documented in configs/default.yaml).

    ``loss: {name, ce_weight, dice_weight, batch_dice}`` becomes
    ``loss: {terms: [{name, params: {ce_weight, dice_weight, batch_dice}}]}``.
    """
    loss = raw.get("loss")
    if not isinstance(loss, dict) or not any(k in loss for k in LEGACY_LOSS_KEYS):
        return raw
    if "terms" in loss:
        raise ConfigError(f"{where}: 'loss' mixes 'terms' with the old keys {', '.join(k for k in LEGACY_LOSS_KEYS if k in loss)}; move them into a term's params")
    if warn:
        warnings.warn(f"{where}: loss.{{{', '.join(k for k in LEGACY_LOSS_KEYS if k in loss)}}} are deprecated; write loss.terms: [{{name: partial_dice_ce, params: {{...}}}}]", DeprecationWarning, stacklevel=3)
    rest = {k: v for k, v in loss.items() if k not in LEGACY_LOSS_KEYS}
    term = {"name": loss.get("name", "partial_dice_ce"), "params": {k: loss[k] for k in LEGACY_LOSS_KEYS[1:] if k in loss}}
    return {**raw, "loss": {**rest, "terms": [term]}}


def loss_section(raw: dict | None, *, where: str = "model config") -> LossConfig:
    """A saved run's ``loss`` section (either form) as a checked :class:`LossConfig`."""
    upgraded = _upgrade_legacy_keys({"loss": dict(raw or {})}, where=where, warn=False)["loss"]
    problems: list[str] = []
    cfg = build_dataclass(LossConfig, upgraded, prefix="loss.", where=where, problems=problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def apply_overrides(raw: dict, overrides: typing.Sequence[str]) -> dict:
    """Set ``a.b=value`` entries (value parsed as YAML) into a nested dict copy."""
    out = _deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.steps=100")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
        node[parts[-1]] = parsed
    return out


def config_to_dict(cfg) -> dict:
    """The config as plain data (for YAML, JSON and logging)."""
    return dataclasses.asdict(cfg)


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (what ``mlflow.log_params`` takes)."""
    out: dict[str, object] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_values(cfg: Config, where: str) -> None:
    problems = []

    def positive(name, value, minimum=1):
        if value < minimum:
            problems.append(f"{where}: '{name}' must be >= {minimum}, got {value}")

    positive("train.steps", cfg.train.steps)
    positive("train.batch_size", cfg.train.batch_size)
    positive("train.val_every", cfg.train.val_every)
    positive("train.checkpoint_every", cfg.train.checkpoint_every)
    positive("train.log_every", cfg.train.log_every)
    positive("train.num_workers", cfg.train.num_workers, 0)
    positive("train.threads", cfg.train.threads, 0)
    positive("adapt.steps", cfg.adapt.steps)
    positive("adapt.batch_size", cfg.adapt.batch_size)
    positive("adapt.eval_every", cfg.adapt.eval_every)
    positive("adapt.checkpoint_every", cfg.adapt.checkpoint_every)
    positive("data.n_folds", cfg.data.n_folds, 2)
    if not 0 <= cfg.data.fold < cfg.data.n_folds:
        problems.append(f"{where}: 'data.fold' must be in 0..{cfg.data.n_folds - 1}, got {cfg.data.fold}")
    for name, value in (("train.lr", cfg.train.lr), ("train.style_lr_scale", cfg.train.style_lr_scale), ("adapt.lr", cfg.adapt.lr), ("adapt.head_lr", cfg.adapt.head_lr)):
        if not value > 0:
            problems.append(f"{where}: '{name}' must be > 0, got {value}")
    for name, lst in (("data.patch_size", cfg.data.patch_size), ("data.spacing", cfg.data.spacing), ("data.max_patch_size", cfg.data.max_patch_size)):
        if lst is not None and (len(lst) != 3 or min(lst) <= 0):
            problems.append(f"{where}: '{name}' must be 3 positive numbers, got {lst}")
    if len(cfg.network.channels) < 2 or min(cfg.network.channels) < 1:
        problems.append(f"{where}: 'network.channels' needs at least 2 positive widths, got {cfg.network.channels}")
    if not (cfg.adapt.init in ("mean", "nearest") or cfg.adapt.init.startswith("expert:")):
        problems.append(f"{where}: 'adapt.init' must be 'mean', 'nearest' or 'expert:<id>', got {cfg.adapt.init!r}")
    if not 0 < cfg.scribbles.density <= 1:
        problems.append(f"{where}: 'scribbles.density' must be in (0, 1], got {cfg.scribbles.density}")
    positive("scribbles.thickness", cfg.scribbles.thickness)
    if not 0 <= cfg.predict.overlap < 1:
        problems.append(f"{where}: 'predict.overlap' must be in [0, 1), got {cfg.predict.overlap}")
    for kind in cfg.sampling.kind_weights:
        if kind not in ("dense", "partial"):
            problems.append(f"{where}: 'sampling.kind_weights' keys are 'dense' and 'partial', got {kind!r}")
    if any(w < 0 for w in list(cfg.sampling.kind_weights.values()) + list(cfg.sampling.expert_weights.values())):
        problems.append(f"{where}: sampling weights must be >= 0")
    problems += _check_loss_terms(cfg.loss, where)
    if problems:
        raise ConfigError(problems)


def _check_loss_terms(loss: LossConfig, where: str) -> list[str]:
    """Each term by its own registry entry: a known name and parameters its ``Params`` accepts."""
    from experts.losses import LOSS_TERMS

    problems = []
    names = [t.name for t in loss.terms]
    if not names:
        problems.append(f"{where}: 'loss.terms' is empty; give at least one term, e.g. [{{name: partial_dice_ce}}]")
    if len(set(names)) != len(names):
        problems.append(f"{where}: 'loss.terms' names a term twice ({', '.join(names)})")
    for i, t in enumerate(loss.terms):
        if t.name not in LOSS_TERMS:
            problems.append(f"{where}: 'loss.terms[{i}].name' is {t.name!r}; known loss terms: {', '.join(LOSS_TERMS.names())}")
            continue
        if t.weight < 0 or t.start_step < 0 or t.ramp_steps < 0:
            problems.append(f"{where}: 'loss.terms[{i}]' weight, start_step and ramp_steps must be >= 0")
        try:
            check_params(LOSS_TERMS.get(t.name).Params, t.params, owner=f"{where}: loss term {t.name!r} (loss.terms[{i}].params)")
        except ConfigError as err:
            problems += err.problems
    return problems


def _deepcopy(d):
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}
