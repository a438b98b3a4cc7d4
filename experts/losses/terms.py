"""Loss terms: each a registered class that takes the output and batch records.

A run's loss is a weighted sum of terms (config ``loss.terms``)::

    loss:
      terms:
        - {name: partial_dice_ce}                        # weight 1, from step 0
        - {name: my_regulariser, weight: 0.1, params: {sigma: 2.0}, start_step: 200, ramp_steps: 300}

A term's weight is 0 before ``start_step``, rises linearly to ``weight`` over ``ramp_steps`` and
stays there; a term whose weight is 0 at a step is not computed at that step. A term

- declares its parameters as a dataclass ``Params`` and gets them checked in its constructor, so a
  wrong key or type is an error naming the term and the key;
- receives a :class:`TermContext` (ignore label, classes, the plan's spacing);
- names the network features it needs in ``features`` (checked against the network before training);
- returns ``{"loss": scalar, **parts}`` from ``forward(outputs, batch)``; the parts are logged as
  ``<term>/<part>``, the weighted contribution as ``<term>``;
- keeps any state that lives across steps in buffers or ``get_extra_state`` / ``set_extra_state``,
  so ``state_dict()`` carries it into checkpoints and resume restores it.

Adding a term is one file with a class decorated ``@register_term("name")``: either a module of
this package imported by ``experts/losses/__init__.py``, or a plugin module named in
``EXPERTSEG_PLUGINS`` (see :mod:`experts.plugins`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from experts.errors import ConfigError, ExpertsegError
from experts.params import Configurable
from experts.records import Batch, NetOutput
from experts.registry import Registry

__all__ = ["LOSS_TERMS", "LossTerm", "TermContext", "TermError", "TermSpec", "TrainingLoss", "register_term", "build_loss"]

LOSS_TERMS: Registry = Registry("loss term")


class TermError(ExpertsegError):
    """A term's loss became NaN or infinite, or its state is invalid; the run stops (before the
    optimiser step, so the last good checkpoint is kept) with a message naming the term."""


def register_term(name: str):
    """Class decorator registering a :class:`LossTerm` subclass under ``name`` (also ``cls.name``)."""
    return LOSS_TERMS.register_class(name)


@dataclass(frozen=True)
class TermContext:
    """What a term may need to know about the run.

    Attributes:
        ignore_label: value of unannotated voxels in ``batch.label`` (``num_classes``), or ``None``.
        num_classes: classes K, background included.
        spacing: the plan's voxel spacing in mm (``D, H, W`` axes of the patches).
    """

    ignore_label: int | None
    num_classes: int
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


class LossTerm(Configurable, nn.Module):
    """Base class of loss terms (see the module docstring)."""

    kind = "loss term"
    #: names of the network features the term reads (``outputs.features[name]``)
    features: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: TermContext, **params):
        nn.Module.__init__(self)
        self.context = context
        self._check_params(params)

    def forward(self, outputs: NetOutput, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class TermSpec:
    """A term's place in the sum: its weight and when it starts."""

    weight: float = 1.0
    start_step: int = 0
    ramp_steps: int = 0

    def weight_at(self, step: int) -> float:
        """The weight at (0-based) ``step``: 0 before ``start_step``, then a linear ramp."""
        if step < self.start_step:
            return 0.0
        if self.ramp_steps <= 0:
            return self.weight
        return self.weight * min(1.0, (step - self.start_step + 1) / self.ramp_steps)


class TrainingLoss(nn.Module):
    """The weighted sum of a run's terms.

    ``forward(outputs, batch, step=0)`` returns ``{"loss": total, "<term>": weighted contribution,
    "<term>/<part>": each logged part}``. ``state_dict()`` holds every term's state.
    """

    def __init__(self, terms: Sequence[tuple[LossTerm, TermSpec]]):
        super().__init__()
        if not terms:
            raise ConfigError("loss.terms is empty; give at least one term, e.g. [{name: partial_dice_ce}]")
        names = [t.name for t, _ in terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"loss.terms names a term twice ({', '.join(names)}); each term may appear once")
        self.terms = nn.ModuleDict({t.name: t for t, _ in terms})
        self.specs = {t.name: s for t, s in terms}

    @property
    def features(self) -> set[str]:
        """Every network feature some term reads."""
        return {f for t in self.terms.values() for f in t.features}

    def forward(self, outputs: NetOutput, batch: Batch, *, step: int = 0) -> dict[str, torch.Tensor]:
        total = None
        parts: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            w = self.specs[name].weight_at(step)
            if w == 0.0:
                continue
            out = term(outputs, batch)
            contribution = w * out["loss"]
            total = contribution if total is None else total + contribution
            parts[name] = contribution.detach()
            parts.update({f"{name}/{k}": torch.as_tensor(v).detach() for k, v in out.items() if k != "loss"})
        if total is None:  # every term still waiting for its start step
            total = outputs.logits.sum() * 0.0
        elif not torch.isfinite(total):
            self._name_the_culprit(parts, step)
        return {"loss": total, **parts}

    def _name_the_culprit(self, parts: dict[str, torch.Tensor], step: int) -> None:
        """A non-finite total: stop with the name of the first term whose contribution is not finite."""
        for name in self.terms:
            if name in parts and not torch.isfinite(parts[name]):
                raise TermError(
                    f"loss term {name!r} became {parts[name].item()} at step {step + 1}; the run stopped and its last good checkpoint is kept; "
                    f"lower its weight or train.lr, delay it with start_step, or resume from the checkpoint"
                )

    def get_params(self) -> dict:
        return {name: {"weight": s.weight, "start_step": s.start_step, "ramp_steps": s.ramp_steps, **self.terms[name].get_params()} for name, s in self.specs.items()}


def build_loss(terms: Sequence[Any], context: TermContext, *, network_features: Sequence[str] | None = None) -> TrainingLoss:
    """Build the :class:`TrainingLoss` of a config's ``loss.terms``.

    Args:
        terms: entries with ``name``, ``weight``, ``params``, ``start_step``, ``ramp_steps``
            (config dataclasses or plain dicts).
        context: the run's :class:`TermContext`.
        network_features: the features the network returns; a term needing another is an error.

    Raises:
        ConfigError: unknown term, bad parameters, a feature the network does not return.
    """
    built = []
    for entry in terms:
        get = entry.get if isinstance(entry, dict) else lambda k, d=None, e=entry: getattr(e, k, d)
        name = get("name")
        if name not in LOSS_TERMS:
            raise ConfigError(f"loss.terms: unknown loss term {name!r}; known: {', '.join(LOSS_TERMS.names())}")
        term = LOSS_TERMS.get(name)(context, **(get("params") or {}))
        spec = TermSpec(weight=float(get("weight", 1.0)), start_step=int(get("start_step", 0)), ramp_steps=int(get("ramp_steps", 0)))
        if spec.weight < 0 or spec.start_step < 0 or spec.ramp_steps < 0:
            raise ConfigError(f"loss term {name!r}: weight, start_step and ramp_steps must be >= 0, got {spec.weight}, {spec.start_step}, {spec.ramp_steps}")
        built.append((term, spec))
    loss = TrainingLoss(built)
    if network_features is not None:
        missing = sorted(loss.features - set(network_features))
        if missing:
            raise ConfigError(f"loss.terms need network feature(s) {', '.join(missing)}, but the network returns {', '.join(network_features) or 'none'}; add them to network.features")
    return loss
