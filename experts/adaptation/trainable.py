"""What trains when a new expert is adapted (config ``adapt.trainable``).

- ``rows`` (default): only the new CIN rows. The pretrained experts are untouched.
- ``rows+head``: the new rows and a private copy of the output head for the new expert; the
  pretrained experts are still untouched.
- ``decoder``: the new rows, and the shared decoder and head.
- ``all``: the new rows and every shared weight (the other experts' rows stay as they are).

The last two change weights that every expert uses, so the adapted model is a fork made for the new
expert: its adapter carries those weights and cannot be stacked with other adapters.
"""

from __future__ import annotations

import torch

from experts.networks import ConditionedNetwork

__all__ = ["TRAINABLE_SETS", "select_trainable"]

TRAINABLE_SETS = ("rows", "rows+head", "decoder", "all")


def select_trainable(net: ConditionedNetwork, which: str, *, new_row: int, row_params: list[torch.nn.Parameter]) -> tuple[list, list, bool]:
    """Freeze everything, then unfreeze the chosen set (asked of the network's parameter groups).

    Args:
        net: the network with the new rows already added.
        which: one of :data:`TRAINABLE_SETS`.
        new_row: the new expert's row index.
        row_params: the new rows' parameters.

    Returns:
        ``(row_params, shared_params, forks)``: two optimiser groups, and whether shared weights change.
    """
    if which not in TRAINABLE_SETS:
        raise ValueError(f"trainable must be one of {TRAINABLE_SETS}, got {which!r}")
    for p in net.parameters():
        p.requires_grad_(False)
    for p in row_params:
        p.requires_grad_(True)
    shared: list[torch.nn.Parameter] = []
    if which == "rows+head":
        shared = net.add_expert_head(new_row)
    elif which == "decoder":
        groups = net.parameter_groups()
        shared = [*groups["shared_decoder"].values(), *groups["head"].values()]
    elif which == "all":
        shared = net.shared_parameters()
    for p in shared:
        p.requires_grad_(True)
    return row_params, shared, which in ("decoder", "all")
