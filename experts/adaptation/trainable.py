"""What trains when a new expert is adapted (config ``adapt.trainable: {name, params}``).

Registered sets (each asks the network's parameter groups, never its attributes):

- ``rows`` (default): only the new CIN rows. The pretrained experts are untouched.
- ``rows+head``: the new rows and a private copy of the output head for the new expert; the
  pretrained experts are still untouched.
- ``decoder``: the new rows, and the shared decoder and head.
- ``all``: the new rows and every shared weight (the other experts' rows stay as they are).

The last two change weights that every expert uses (``forks``), so the adapted model is a fork made
for the new expert: its adapter carries those weights and cannot be stacked with other adapters.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from experts.errors import ConfigError
from experts.networks import ConditionedNetwork
from experts.params import Configurable
from experts.registry import Registry

__all__ = ["TRAINABLE_SETS", "TrainableSet", "create_trainable", "select_trainable"]

TRAINABLE_SETS: Registry = Registry("trainable set")


class TrainableSet(Configurable):
    """Base of the trainable sets: ``shared(net, new_row)`` lists what trains besides the new rows."""

    kind = "adapt.trainable"
    #: whether the set changes weights every expert uses
    forks: ClassVar[bool] = False

    def __init__(self, **params):
        self._check_params(params)

    def shared(self, net: ConditionedNetwork, new_row: int) -> list[torch.nn.Parameter]:
        return []


_register = TRAINABLE_SETS.register_class


@_register("rows")
class Rows(TrainableSet):
    """The new rows alone."""


@_register("rows+head")
class RowsAndHead(TrainableSet):
    """The new rows and a private head (a copy of the shared one) for the new expert."""

    def shared(self, net, new_row):
        return net.add_expert_head(new_row)


@_register("decoder")
class RowsAndDecoder(TrainableSet):
    """The new rows, the shared decoder and the head (a fork)."""

    forks = True

    def shared(self, net, new_row):
        groups = net.parameter_groups()
        return [*groups["shared_decoder"].values(), *groups["head"].values()]


@_register("all")
class Everything(TrainableSet):
    """The new rows and every shared weight (a fork)."""

    forks = True

    def shared(self, net, new_row):
        return net.shared_parameters()


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


def select_trainable(net: ConditionedNetwork, which, *, new_row: int, row_params: list[torch.nn.Parameter]) -> tuple[list, list, bool]:
    """Freeze everything, then unfreeze the new rows and the set ``which`` names.

    Args:
        net: the network with the new rows already added.
        which: a trainable set (name, ``{name, params}`` or instance).
        new_row: the new expert's row index.
        row_params: the new rows' parameters.

    Returns:
        ``(row_params, shared_params, forks)``: two optimiser groups, and whether shared weights change.
    """
    chosen = create_trainable(which)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in row_params:
        p.requires_grad_(True)
    shared = chosen.shared(net, new_row)
    for p in shared:
        p.requires_grad_(True)
    return row_params, shared, chosen.forks
