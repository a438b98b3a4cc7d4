"""A new expert row in every CIN table, and how to initialise it.

Strategies (config ``adapt.init``), registered by name:

- ``mean``: the mean of the existing rows, a style in the middle of the known ones;
- ``nearest``: the rows of the existing expert whose predictions best match the new doctor's given
  cases (the caller scores them and passes ``scores``);
- ``expert:<id>``: the rows of a named expert.
"""

from __future__ import annotations

from experts.networks import ConditionedNetwork
from experts.registry import Registry

__all__ = ["INIT_STRATEGIES", "initial_rows"]

INIT_STRATEGIES: Registry = Registry("adaptation init strategy")


@INIT_STRATEGIES.register("mean")
def _mean(tables: dict, *, experts: list[str], scores=None, name=None) -> tuple[dict, str]:
    return {k: (g.mean(0, keepdim=True), b.mean(0, keepdim=True)) for k, (g, b) in tables.items()}, "mean of rows"


@INIT_STRATEGIES.register("expert")
def _named(tables: dict, *, experts: list[str], scores=None, name=None) -> tuple[dict, str]:
    if name not in experts:
        raise ValueError(f"cannot initialise from expert {name!r}: the model knows {', '.join(experts)}")
    i = experts.index(name)
    return {k: (g[i : i + 1], b[i : i + 1]) for k, (g, b) in tables.items()}, name


@INIT_STRATEGIES.register("nearest")
def _nearest(tables: dict, *, experts: list[str], scores=None, name=None) -> tuple[dict, str]:
    if not scores:
        raise ValueError("'nearest' needs scores of the existing experts on the new doctor's cases")
    best = max(scores, key=lambda e: scores[e])
    return _named(tables, experts=experts, name=best)


def initial_rows(net: ConditionedNetwork, strategy: str, *, experts: list[str], scores: dict[str, float] | None = None) -> tuple[dict, str]:
    """Rows ``{layer: (gamma [1, C], beta [1, C])}`` for a new expert, and what they came from.

    Args:
        net: the pretrained network (its existing rows).
        strategy: ``"mean"``, ``"nearest"`` or ``"expert:<id>"``.
        experts: expert ids in row order.
        scores: for ``nearest``: expert id -> how well its predictions match the new doctor.
    """
    name = None
    if strategy.startswith("expert:"):
        strategy, name = "expert", strategy.split(":", 1)[1]
    return INIT_STRATEGIES.get(strategy)(net.row_tables(), experts=experts, scores=scores, name=name)
