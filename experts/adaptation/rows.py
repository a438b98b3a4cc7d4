"""How a new expert's rows start (config ``adapt.init: {name, params}``), registered by name.

- ``mean``: the mean of the existing rows, a style in the middle of the known ones;
- ``nearest``: the rows of the existing expert whose predictions best match the new doctor's given
  cases (the caller scores them and passes ``scores``);
- ``expert`` (``params: {expert: <id>}``): the rows of a named expert.

Each strategy checks its own parameters in its constructor and is called with the existing row
tables ``{layer: (gamma [E, C], beta [E, C])}``; it returns ``{layer: (gamma [1, C], beta [1, C])}``
and a word on where the rows came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from experts.errors import ConfigError
from experts.networks import ConditionedNetwork
from experts.params import Configurable
from experts.registry import Registry

__all__ = ["INIT_STRATEGIES", "InitStrategy", "create_init", "initial_rows"]

INIT_STRATEGIES: Registry = Registry("adaptation init strategy")


class InitStrategy(Configurable):
    """Base of the init strategies: parameters checked on construction (``Params``)."""

    kind = "adapt.init"
    #: whether the caller must score the existing experts on the new doctor's cases first
    needs_scores: ClassVar[bool] = False

    def __init__(self, **params):
        self._check_params(params)

    def __call__(self, tables: dict, *, experts: list[str], scores: dict[str, float] | None) -> tuple[dict, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """The strategy as written in adapter files: ``mean``, ``nearest``, ``expert:<id>``."""
        return self.name


_register = INIT_STRATEGIES.register_class


def _rows_of(tables: dict, i: int) -> dict:
    return {k: (g[i : i + 1], b[i : i + 1]) for k, (g, b) in tables.items()}


@_register("mean")
class MeanRows(InitStrategy):
    """The mean of the existing experts' rows."""

    def __call__(self, tables, *, experts, scores=None):
        return {k: (g.mean(0, keepdim=True), b.mean(0, keepdim=True)) for k, (g, b) in tables.items()}, "mean of rows"


@_register("expert")
class NamedExpertRows(InitStrategy):
    """A copy of one named expert's rows."""

    @dataclass
    class Params:
        expert: str  #: the expert whose rows to copy

    def __call__(self, tables, *, experts, scores=None):
        if self.params.expert not in experts:
            raise ConfigError(f"adapt.init: cannot initialise from expert {self.params.expert!r}: the model knows {', '.join(experts)}")
        return _rows_of(tables, experts.index(self.params.expert)), self.params.expert

    def describe(self) -> str:
        return f"expert:{self.params.expert}"


@_register("nearest")
class NearestRows(InitStrategy):
    """A copy of the rows of the existing expert that best matches the new doctor's cases."""

    needs_scores = True

    def __call__(self, tables, *, experts, scores=None):
        if not scores:
            raise ValueError("'nearest' needs scores of the existing experts on the new doctor's cases")
        best = max(scores, key=lambda e: scores[e])
        if best not in experts:
            raise ConfigError(f"adapt.init: scored expert {best!r} is not in the model ({', '.join(experts)})")
        return _rows_of(tables, experts.index(best)), best


def create_init(spec) -> InitStrategy:
    """An :class:`InitStrategy` from a name (``"expert:<id>"`` too), ``{name, params}`` or an instance."""
    if isinstance(spec, InitStrategy):
        return spec
    if isinstance(spec, str):
        name, params = (("expert", {"expert": spec.split(":", 1)[1]}) if spec.startswith("expert:") else (spec, {}))
    else:
        get = spec.get if isinstance(spec, dict) else lambda k, d=None: getattr(spec, k, d)
        name, params = get("name"), get("params") or {}
    if name not in INIT_STRATEGIES:
        raise ConfigError(f"adapt.init: unknown init strategy {name!r}; known: {', '.join(INIT_STRATEGIES.names())}")
    return INIT_STRATEGIES.get(name)(**params)


def initial_rows(net: ConditionedNetwork, strategy, *, experts: list[str], scores: dict[str, float] | None = None) -> tuple[dict, str]:
    """Rows ``{layer: (gamma [1, C], beta [1, C])}`` for a new expert, and what they came from.

    Args:
        net: the pretrained network (its existing rows).
        strategy: a name (``"mean"``, ``"nearest"``, ``"expert:<id>"``), ``{name, params}`` or an
            :class:`InitStrategy`.
        experts: expert ids in row order.
        scores: for ``nearest``: expert id -> how well its predictions match the new doctor.
    """
    return create_init(strategy)(net.row_tables(), experts=experts, scores=scores)
