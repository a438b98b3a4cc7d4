"""What trains when a new expert is adapted (config ``adapt.trainable: {name, params}``).

A ladder of capacity, each rung a registered set (each asks the network's parameter groups, never
its attributes):

- ``rows``: only the new CIN rows. The pretrained experts are untouched.
- ``rows+head``: the new rows and a private copy of the output head for the new expert.
- ``rows+lowrank`` (``params: {rank: 4, roles: [shared_decoder]}``): the new rows and per-expert
  low-rank residuals on the convolutions of the named roles, zero-initialised (the model is exactly
  the pretrained one until they train; :mod:`experts.networks.lowrank`). With rank 4 on the demo
  network's decoder the adapter is about 150 KB.
- ``decoder`` (``params: {l2sp: 0.01}``): the new rows, and the shared decoder and head, pulled
  toward their pretrained values by the L2-SP penalty ``l2sp * sum (w - w0)^2`` (Li et al., ICML
  2018, "Explicit inductive bias for transfer learning"; 0 turns it off).
- ``all`` (``params: {l2sp: 0.01}``): the new rows and every shared weight, with the same penalty.
- ``auto`` (the default): the doctor's own cases choose the rung and the step count by
  cross-validation, the initial row (no training) always a candidate; see
  :class:`~experts.adaptation.fitting.Adapter`.

The first three leave every pretrained weight alone: their adapters stack onto the unchanged
pretrained model. ``decoder`` and ``all`` change weights that every expert uses (``forks``), so the
adapted model is a fork made for the new expert: its adapter carries those weights and cannot be
stacked with other adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from experts.errors import ConfigError
from experts.networks import ConditionedNetwork
from experts.params import Configurable
from experts.registry import Registry

__all__ = ["TRAINABLE_SETS", "TrainableSet", "Auto", "PenalisedLoss", "create_trainable", "select_trainable"]

TRAINABLE_SETS: Registry = Registry("trainable set")


class TrainableSet(Configurable):
    """Base of the trainable sets: ``shared(net, new_row)`` lists what trains besides the new rows."""

    kind = "adapt.trainable"
    #: whether the set changes weights every expert uses
    forks: ClassVar[bool] = False

    def __init__(self, **params):
        self._check_params(params)
        self._check()

    def _check(self) -> None:
        """Checks beyond the parameters' types (override)."""

    def shared(self, net: ConditionedNetwork, new_row: int) -> list[torch.nn.Parameter]:
        return []

    def penalty(self, params: list[torch.nn.Parameter]):
        """A function of no arguments returning the penalty on ``params`` (the set's shared
        parameters, at their starting values now), or None."""
        return None


_register = TRAINABLE_SETS.register_class


@_register("rows")
class Rows(TrainableSet):
    """The new rows alone."""


@_register("rows+head")
class RowsAndHead(TrainableSet):
    """The new rows and a private head (a copy of the shared one) for the new expert."""

    def shared(self, net, new_row):
        return net.add_expert_head(new_row)


@_register("rows+lowrank")
class RowsAndLowRank(TrainableSet):
    """The new rows and zero-initialised per-expert low-rank residuals on the roles' convolutions."""

    @dataclass
    class Params:
        rank: int = 4  #: the residuals' rank
        roles: list[str] = field(default_factory=lambda: ["shared_decoder"])  #: where: shared_encoder, shared_decoder

    def _check(self) -> None:
        if self.params.rank < 1:
            raise ConfigError(f"adapt.trainable 'rows+lowrank': rank must be >= 1, got {self.params.rank}")

    def shared(self, net, new_row):
        try:
            sites = net.low_rank_sites(self.params.roles)
        except ValueError as err:
            raise ConfigError(f"adapt.trainable 'rows+lowrank': {err}") from None
        if not sites:
            raise ConfigError(f"adapt.trainable 'rows+lowrank': the network has no convolutions that take low-rank residuals in {', '.join(self.params.roles)}")
        return net.add_expert_low_rank(new_row, rank=self.params.rank, sites=list(sites))


class _Forking(TrainableSet):
    """A rung that retrains shared weights, held near their pretrained values by L2-SP."""

    forks = True

    @dataclass
    class Params:
        l2sp: float = 0.01  #: weight of sum (w - w_pretrained)^2 over the retrained shared weights; 0: none

    def _check(self) -> None:
        if self.params.l2sp < 0:
            raise ConfigError(f"adapt.trainable {self.name!r}: l2sp must be >= 0, got {self.params.l2sp}")

    def penalty(self, params):
        if not self.params.l2sp or not params:
            return None
        start = [p.detach().clone() for p in params]
        weight = self.params.l2sp
        return lambda: weight * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start))


@_register("decoder")
class RowsAndDecoder(_Forking):
    """The new rows, the shared decoder and the head (a fork)."""

    def shared(self, net, new_row):
        groups = net.parameter_groups()
        return [*groups["shared_decoder"].values(), *groups["head"].values()]


@_register("all")
class Everything(_Forking):
    """The new rows and every shared weight (a fork)."""

    def shared(self, net, new_row):
        return net.shared_parameters()


@_register("auto")
class Auto(TrainableSet):
    """Not a set but a choice among ``rungs``, made on the doctor's own cases.

    With K >= 2 cases: leave one case out, for ``folds`` of them (the last cases given); each fold
    trains every rung on the other cases and scores the left-out case every ``eval_every`` steps
    and before training (step 0, the initial row). After the first fold only the ``keep`` best
    rungs go on. The rung and step count with the best mean score over the folds win; when that
    is step 0, the expert keeps the initial row (adapting never ends worse than not adapting, on
    the doctor's evidence). With one case, nothing can be held out: ``single`` trains for the
    full budget; ``rows`` was chosen on pretraining experts held out of their own pretraining
    (BENCHMARKS.md, "Capacity ladder on configs/demo.yaml, and the rule for one case": from one
    case, ``rows`` gained the most over the nearest row on average and ``decoder`` the least, with
    the worst single loss).
    """

    @dataclass
    class Params:
        rungs: list[str] = field(default_factory=lambda: ["rows", "rows+lowrank", "decoder"])  #: candidate rungs, simplest first
        folds: int = 2  #: left-out cases (at most K)
        keep: int = 1  #: rungs that go on after the first fold (1 keeps auto near 3x a rows-only adaptation)
        single: str = "rows"  #: the rung for a single case

    def _check(self) -> None:
        names = [*self.params.rungs, self.params.single]
        bad = [n for n in names if n not in TRAINABLE_SETS or n == "auto"]
        if bad:
            raise ConfigError(f"adapt.trainable 'auto': unknown rung(s) {', '.join(map(repr, bad))}; known: {', '.join(n for n in TRAINABLE_SETS.names() if n != 'auto')}")
        if not self.params.rungs or self.params.folds < 1 or self.params.keep < 1:
            raise ConfigError("adapt.trainable 'auto': needs at least one rung, folds >= 1 and keep >= 1")

    def shared(self, net, new_row):  # pragma: no cover - the adapter resolves auto to a rung first
        raise ConfigError("adapt.trainable 'auto' is a choice among rungs, resolved by the adapter")


class PenalisedLoss(torch.nn.Module):
    """The training loss plus a trainable set's penalty, logged as the part ``penalty``."""

    def __init__(self, loss: torch.nn.Module, penalty):
        super().__init__()
        self.loss, self.penalty = loss, penalty

    def forward(self, outputs, batch, *, step: int = 0):
        parts = self.loss(outputs, batch, step=step)
        if self.penalty is None:
            return parts
        extra = self.penalty()
        return {**parts, "loss": parts["loss"] + extra, "penalty": extra.detach()}


def create_trainable(spec) -> TrainableSet:
    """A :class:`TrainableSet` from a name, ``{name, params}`` or an instance."""
    if isinstance(spec, TrainableSet):
        return spec
    if isinstance(spec, str):
        name, params = spec, {}
    else:
        get = spec.get if isinstance(spec, dict) else lambda k, d=None: getattr(spec, k, d)
        name, params = get("name"), get("params") or {}
    if name not in TRAINABLE_SETS:
        raise ConfigError(f"adapt.trainable: unknown trainable set {name!r}; known: {', '.join(TRAINABLE_SETS.names())}")
    return TRAINABLE_SETS.get(name)(**params)


def select_trainable(net: ConditionedNetwork, which, *, new_row: int, row_params: list[torch.nn.Parameter]) -> tuple[list, list, bool, object]:
    """Freeze everything, then unfreeze the new rows and the set ``which`` names.

    Args:
        net: the network with the new rows already added.
        which: a trainable set (name, ``{name, params}`` or instance).
        new_row: the new expert's row index.
        row_params: the new rows' parameters.

    Returns:
        ``(row_params, shared_params, forks, penalty)``: two optimiser groups, whether shared
        weights change, and the set's penalty function (or None).
    """
    chosen = create_trainable(which)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in row_params:
        p.requires_grad_(True)
    shared = chosen.shared(net, new_row)
    for p in shared:
        p.requires_grad_(True)
    return row_params, shared, chosen.forks, chosen.penalty(shared)
