"""Run configuration: plain YAML checked against a typed schema.

A config file holds any subset of the sections below; what it leaves out takes the defaults, which
are the embedded defaults the demo runs on (``configs/default.yaml`` spells them out). ``--set
section.key=value`` overrides one value (the value is parsed as YAML). Unknown keys, wrong types and
values outside their choices are errors naming the key and what is allowed. Nothing is evaluated:
configs are data.

Limits, so that a small hostile file fails fast: a config file holds at most :data:`MAX_CONFIG_BYTES`;
YAML (files and ``--set`` values) is read without aliases and at most
:data:`experts.params.MAX_YAML_DEPTH` levels deep (:func:`experts.params.load_yaml`); user values
echoed in messages are shortened (:func:`experts.errors.shorten`). ``data.spacing`` must be positive
and finite here; whether it fits the voxel budget depends on the data and is checked by
:func:`experts.data.plan.make_plan`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from experts.errors import ConfigError, shorten
from experts.params import StrictYAMLLoader, YAMLLimitError, build_dataclass, check_params, load_yaml

__all__ = [
    "Config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "flatten",
    "apply_overrides",
    "MAX_CONFIG_BYTES",
]

#: Largest config file read (configs/default.yaml is 4 kB).
MAX_CONFIG_BYTES = 1 << 20
#: Most levels and widest level of ``network.channels`` (8 levels already need 256-voxel patches).
MAX_LEVELS = 8
MAX_WIDTH = 1024


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
    cin: str = "all"  #: where norms are conditional: experts.networks.CIN_PLACEMENTS (all, encoder, decoder)
    features: list[str] = field(default_factory=lambda: ["decoder.0"])  #: internal features the network returns (for loss terms)
    attention: dict[str, Any] = field(default_factory=dict)  #: a shared self-attention block ({level, heads, radius}); empty: none


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
    mix: float = 0.0  #: probability that a scribbled patch is mixed with another of the same expert (CutMix box)
    occlusion: float = 0.0  #: probability that a box of the patch's image is blanked (labels kept)


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
    cpu_bf16: bool = False  #: bfloat16 autocast on CPUs that support it (off: fp32, the default)


@dataclass
class InitConfig:
    """A registered init strategy (experts.adaptation.INIT_STRATEGIES): mean, nearest, expert."""

    name: str = "nearest"
    params: dict[str, Any] = field(default_factory=dict)  #: e.g. {expert: ref} for name expert


@dataclass
class TrainableConfig:
    """A registered trainable set (experts.adaptation.TRAINABLE_SETS): auto (the cases choose among
    rungs), rows, rows+head, rows+lowrank, decoder, all."""

    name: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdaptConfig:
    steps: int = 200
    batch_size: int = 2
    lr: float = 0.01  #: chosen by an Optuna study on validation cases (see the README); 0.05 was noisier
    head_lr: float = 1e-3  #: learning rate of shared parts when trainable includes them
    average: float = 0.0  #: decay of a moving average of the trained weights, scored and kept instead of the last step (0: off)
    init: InitConfig = field(default_factory=InitConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    holdout: Literal["auto", "none"] = "auto"  #: auto: hold one given case back to pick the best step when K >= 3
    eval_every: int = 25
    checkpoint_every: int = 50


@dataclass
class ScribbleConfig:
    """A registered scribble style (experts.scribbles) simulating partial labels from dense ones
    (``adapt --scribbles``, benchmarks); ``params`` are the style's own, checked by it."""

    name: str = "slicewise"
    params: dict[str, Any] = field(default_factory=lambda: {"density": 0.5, "thickness": 1, "axis": -1})


@dataclass
class InteractiveConfig:
    """Interactive training (``pretrain --interactive MODEL``): a promptable model started from a
    pretrained one, trained with simulated interaction (:mod:`experts.interactive.simulate`)."""

    model: str = ""  #: the pretrained model to start from; "" = ordinary pretraining
    rounds: int = 5  #: most correction rounds per step
    no_prompt: float = 0.1  #: probability of a sample without any prompt
    first: list[str] = field(default_factory=lambda: ["box", "clicks", "scribbles"])  #: first-prompt kinds
    scribble_corrections: float = 0.3  #: probability that a correction is a scribble
    other_prior: float = 0.0  #: probability that the previous prediction starts as another expert's automatic answer
    click_radius: int = 2  #: voxels (model grid)
    scribble_radius: int = 1  #: voxels (model grid)
    decay: float = 0.98  #: weight of a prompt per newer prompt


@dataclass
class PredictConfig:
    overlap: float = 0.5
    sw_batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"


@dataclass
class EvaluateConfig:
    tolerance_mm: float = 1.0  #: normalised surface Dice tolerance


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
    interactive: InteractiveConfig = field(default_factory=InteractiveConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
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
            with open(path, "rb") as fh:
                data = fh.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found; see configs/ for examples") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder, not a config file; pass a YAML file (see configs/)") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot be read ({err.strerror or type(err).__name__}); check the path and its permissions") from None
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} kB; a config is a few kB of YAML (see configs/default.yaml)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8 YAML") from None
        raw = load_yaml(text, where=str(path)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections (data:, train:, ...), found {type(raw).__name__}")
    raw = _upgrade_legacy_keys(apply_overrides(_upgrade_legacy_keys(raw, where=where, warn=True), overrides), where=where, warn=True)
    return config_from_dict(raw, where=where)


def config_from_dict(raw: dict, *, where: str = "config", warn: bool = False) -> Config:
    """A checked :class:`Config` from plain data, e.g. the ``config.yaml`` a model was trained with
    (written by this or an earlier version: deprecated keys are read through their aliases)."""
    raw = _upgrade_legacy_keys(raw or {}, where=where, warn=warn)
    problems: list[str] = []
    cfg = build_dataclass(Config, raw, prefix="", where=where, problems=problems)
    if problems:
        raise ConfigError(problems)
    _check_values(cfg, where)
    return cfg


#: keys of the loss section before ``loss.terms``; they configure the ``partial_dice_ce`` term
LEGACY_LOSS_KEYS = ("name", "ce_weight", "dice_weight", "batch_dice")
#: keys of the scribbles section before ``{name, params}``
LEGACY_SCRIBBLE_KEYS = ("style", "density", "thickness", "axis")
#: sections that name a registered component as ``{name, params}``, and their defaults
COMPONENT_SECTIONS = {("adapt", "init"): InitConfig, ("adapt", "trainable"): TrainableConfig, ("scribbles",): ScribbleConfig}


def _upgrade_legacy_keys(raw: dict, *, where: str, warn: bool) -> dict:
    """Rewrite deprecated keys into their current form (the aliases of configs/default.yaml).

    - ``loss: {name, ce_weight, dice_weight, batch_dice}`` -> ``loss: {terms: [{name, params}]}``;
    - ``scribbles: {style, density, thickness, axis}`` -> ``scribbles: {name: style, params}``;
    - ``adapt.init: nearest`` / ``expert:<id>`` and ``adapt.trainable: rows`` (plain names) ->
      ``{name, params}``.

    Component sections given with the default component's name keep the default parameters they do
    not set (``--set scribbles.params.density=0.3`` changes the density alone).
    """
    raw = _deepcopy(raw)
    notes = []
    loss = raw.get("loss")
    if isinstance(loss, dict) and any(k in loss for k in LEGACY_LOSS_KEYS):
        old = [k for k in LEGACY_LOSS_KEYS if k in loss]
        if "terms" in loss:
            raise ConfigError(f"{where}: 'loss' mixes 'terms' with the old keys {', '.join(old)}; move them into a term's params")
        term = {"name": loss.get("name", "partial_dice_ce"), "params": {k: loss[k] for k in LEGACY_LOSS_KEYS[1:] if k in loss}}
        raw["loss"] = {**{k: v for k, v in loss.items() if k not in LEGACY_LOSS_KEYS}, "terms": [term]}
        notes.append(f"loss.{{{', '.join(old)}}} -> loss.terms: [{{name: partial_dice_ce, params: {{...}}}}]")
    sc = raw.get("scribbles")
    if isinstance(sc, dict) and any(k in sc for k in LEGACY_SCRIBBLE_KEYS):
        old = [k for k in LEGACY_SCRIBBLE_KEYS if k in sc]
        if "name" in sc or "params" in sc:
            raise ConfigError(f"{where}: 'scribbles' mixes name/params with the old keys {', '.join(old)}; move them into scribbles.params")
        raw["scribbles"] = {"name": sc.get("style", ScribbleConfig().name), "params": {k: v for k, v in sc.items() if k != "style"}}
        notes.append(f"scribbles.{{{', '.join(old)}}} -> scribbles: {{name, params}}")
    adapt = raw.get("adapt")
    for key in ("init", "trainable"):
        if isinstance(adapt, dict) and isinstance(adapt.get(key), str):
            value = adapt[key]
            adapt[key] = {"name": "expert", "params": {"expert": value.split(":", 1)[1]}} if key == "init" and value.startswith("expert:") else {"name": value}
            notes.append(f"adapt.{key}: {shorten(value, quote=False)} -> adapt.{key}: {{name: {shorten(adapt[key]['name'], quote=False)}{', params: ...' if adapt[key].get('params') else ''}}}")
    for path, cls in COMPONENT_SECTIONS.items():
        node = raw
        for part in path[:-1]:
            node = node.get(part) if isinstance(node.get(part), dict) else {}
        section = node.get(path[-1])
        default = cls()
        if not isinstance(section, dict) or not isinstance(section.get("params", {}), dict):
            continue
        if section.get("name", default.name) == default.name:
            section["params"] = {**default.params, **section.get("params", {})}
        else:  # another component: none of the default's parameters
            section.setdefault("params", {})
    if notes and warn:
        warnings.warn(f"{where}: deprecated config keys, read as: " + "; ".join(notes), DeprecationWarning, stacklevel=3)
    return raw


def apply_overrides(raw: dict, overrides: typing.Sequence[str]) -> dict:
    """Set ``a.b=value`` entries (value parsed as YAML) into a nested dict copy."""
    out = _deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {shorten(item)}: expected section.key=value, e.g. --set train.steps=100")
        try:
            parsed = yaml.load(value, Loader=StrictYAMLLoader) if value.strip() else ""
        except YAMLLimitError as err:
            raise ConfigError(f"--set {shorten(key.strip(), quote=False)}: {err}") from None
        except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
            parsed = value  # not YAML: the text itself (the type check names the key if text is wrong)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {shorten(item)}: {shorten(part)} is a value, not a section")
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
    if not 0 <= cfg.adapt.average < 1:
        problems.append(f"{where}: 'adapt.average' must be in [0, 1) (0: off; 0.95 averages about the last 20 steps), got {cfg.adapt.average}")
    for name, lst in (("data.patch_size", cfg.data.patch_size), ("data.spacing", cfg.data.spacing), ("data.max_patch_size", cfg.data.max_patch_size)):
        if lst is not None and (len(lst) != 3 or not all(math.isfinite(v) and v > 0 for v in lst)):
            problems.append(f"{where}: '{name}' must be 3 positive numbers, got {shorten(lst)}")
    channels = cfg.network.channels
    if not 2 <= len(channels) <= MAX_LEVELS or min(channels) < 1 or max(channels) > MAX_WIDTH:
        problems.append(
            f"{where}: 'network.channels' needs 2 to {MAX_LEVELS} widths between 1 and {MAX_WIDTH}, got {shorten(channels)}; "
            "e.g. [16, 32, 64, 128]"
        )
    if not cfg.evaluate.tolerance_mm >= 0:
        problems.append(f"{where}: 'evaluate.tolerance_mm' must be >= 0, got {cfg.evaluate.tolerance_mm}")
    if not 0 <= cfg.predict.overlap < 1:
        problems.append(f"{where}: 'predict.overlap' must be in [0, 1), got {cfg.predict.overlap}")
    for kind in cfg.sampling.kind_weights:
        if kind not in ("dense", "partial"):
            problems.append(f"{where}: 'sampling.kind_weights' keys are 'dense' and 'partial', got {shorten(kind)}")
    if any(w < 0 for w in list(cfg.sampling.kind_weights.values()) + list(cfg.sampling.expert_weights.values())):
        problems.append(f"{where}: sampling weights must be >= 0")
    for name, value in (("augment.mix", cfg.augment.mix), ("augment.occlusion", cfg.augment.occlusion)):
        if not 0 <= value <= 1:
            problems.append(f"{where}: '{name}' is a probability in [0, 1], got {value}")
    problems += _check_loss_terms(cfg.loss, where)
    problems += _check_components(cfg, where)
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
            problems.append(f"{where}: 'loss.terms[{i}].name' is {shorten(t.name)}; known loss terms: {', '.join(LOSS_TERMS.names())}")
            continue
        if t.weight < 0 or t.start_step < 0 or t.ramp_steps < 0:
            problems.append(f"{where}: 'loss.terms[{i}]' weight, start_step and ramp_steps must be >= 0")
        try:
            check_params(LOSS_TERMS.get(t.name).Params, t.params, owner=f"{where}: loss term {t.name!r} (loss.terms[{i}].params)")
        except ConfigError as err:
            problems += err.problems
    return problems


def _check_components(cfg: Config, where: str) -> list[str]:
    """Every section that names a component, by that component's registry and constructor."""
    from experts.adaptation import create_init, create_trainable
    from experts.networks import NETWORKS
    from experts.scribbles import create_scribble_style

    problems = []
    from experts.networks import CIN_PLACEMENTS

    if cfg.network.name not in NETWORKS:
        problems.append(f"{where}: 'network.name' is {shorten(cfg.network.name)}; known networks: {', '.join(NETWORKS.names())}")
    if cfg.network.cin not in CIN_PLACEMENTS:
        problems.append(f"{where}: 'network.cin' must be one of {', '.join(map(repr, CIN_PLACEMENTS))}, got {shorten(cfg.network.cin)}")
    checks = (("adapt.init", create_init, cfg.adapt.init), ("adapt.trainable", create_trainable, cfg.adapt.trainable))
    for key, create, section in checks:
        try:
            create(section)
        except ConfigError as err:
            problems += [f"{where}: {line}" for line in err.problems]
    try:
        create_scribble_style(cfg.scribbles.name, **cfg.scribbles.params)
    except (ValueError, TypeError) as err:
        problems.append(f"{where}: 'scribbles' ({cfg.scribbles.name}): {str(err).splitlines()[0][:300]}")
    return problems


def _deepcopy(d):
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}
