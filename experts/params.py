"""Plain data (YAML, JSON) checked against a dataclass schema.

The run config and every component that takes parameters from it (loss terms, and later styles and
strategies) declare their parameters as a dataclass; :func:`build_dataclass` turns a mapping into
that dataclass, collecting one line per problem: an unknown key (with a close match), a wrong type,
a value outside its choices. Ints are accepted for floats, booleans never pass as numbers, and YAML
1.1's ``1e-3`` (read as text) counts as a number. Nothing is evaluated: parameters are data.

YAML from users is read by :func:`load_yaml`: a :class:`StrictYAMLLoader` (``yaml.SafeLoader`` that
refuses aliases and nests at most :data:`MAX_YAML_DEPTH` levels), so a few hundred bytes cannot
expand into gigabytes ("billion laughs"). Values echoed in messages are cut by
:func:`experts.errors.shorten`.

Example:
    >>> @dataclass
    ... class P:
    ...     sigma: float = 1.0
    >>> check_params(P, {"sigma": 2}, owner="loss term 'crf'")
    P(sigma=2.0)
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal

import yaml

from experts.errors import ConfigError, shorten

__all__ = [
    "Configurable",
    "MAX_YAML_DEPTH",
    "StrictYAMLLoader",
    "YAMLLimitError",
    "load_yaml",
    "build_dataclass",
    "check_params",
    "describe_type",
]

#: Deepest nesting a YAML document may have (a run config nests 5 levels: loss.terms[0].params.x).
MAX_YAML_DEPTH = 32


class YAMLLimitError(Exception):
    """A YAML document uses an alias or nests too deeply; the message says where (no ``where`` prefix)."""


class StrictYAMLLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``, merge keys ``<<: *name``) and documents
    nested deeper than :data:`MAX_YAML_DEPTH`.

    An alias repeats a node without copying it, so 9 aliases of 9 aliases of ... expand into 9**n
    values when the document is walked or printed; refusing them keeps the cost of a document
    proportional to its size. Anchors without aliases are harmless and accepted.
    """

    max_depth = MAX_YAML_DEPTH

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YAMLLimitError(
                f"line {event.start_mark.line + 1}: YAML alias *{shorten(event.anchor, 40, quote=False)} is not accepted "
                "(aliases and merge keys can expand a small file into gigabytes); write the values out"
            )
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise YAMLLimitError(f"line {mark.line + 1}: nested deeper than {self.max_depth} levels; flatten the document")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, *, where: str, error: type = ConfigError):
    """Parse YAML text from a user with :class:`StrictYAMLLoader`.

    Args:
        text: the document.
        where: the file (or option) for messages.
        error: the :class:`~experts.errors.ExpertsegError` subclass to raise.

    Raises:
        error: an alias, too deep nesting, a syntax error or a value that cannot be built, one line.
    """
    try:
        return yaml.load(text, Loader=StrictYAMLLoader)  # a SafeLoader subclass: builds plain data only
    except YAMLLimitError as err:
        raise error(f"{where}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise error(f"{where}: not valid YAML{at}; fix the syntax") from None
    except (ValueError, OverflowError, RecursionError) as err:  # e.g. an integer of 10,000 digits
        reason = str(err) or type(err).__name__
        raise error(f"{where}: a value cannot be read ({shorten(reason, quote=False)}); fix it") from None


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def check_params(schema: type, params: dict | None, *, owner: str):
    """Build ``schema`` from ``params`` or raise one :class:`ConfigError` naming ``owner`` and each key.

    Args:
        schema: a dataclass whose fields all have defaults (or are given in ``params``).
        params: the parameters as plain data; ``None`` means none.
        owner: what the parameters belong to, for messages (e.g. ``"loss term 'partial_dice_ce'"``).
    """
    problems: list[str] = []
    value = build_dataclass(schema, {} if params is None else params, prefix="", where=owner, problems=problems)
    if problems:
        raise ConfigError(problems)
    return value


def build_dataclass(cls, raw, *, prefix: str, where: str, problems: list[str]):
    """``cls(**raw)`` with every key and value checked; problems are appended, never raised."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: {prefix.rstrip('.') or 'the parameters'} must be a mapping, found {shorten(raw)}")
        return _default(cls)
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    for key in raw:
        if key not in names:
            close = [n for n in sorted(names) if n.startswith(str(key)[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}: unknown key '{prefix}{shorten(key, quote=False)}'{hint}; known keys: {', '.join(sorted(names)) or 'none'}")
    kwargs = {}
    for f in fields:
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{where}: '{prefix}{f.name}' is required")
            continue
        ok, converted = _coerce(raw[f.name], hints[f.name], prefix=f"{prefix}{f.name}.", where=where, problems=problems)
        if not ok:
            problems.append(f"{where}: '{prefix}{f.name}' must be {describe_type(hints[f.name])}, got {shorten(raw[f.name])}")
            continue
        kwargs[f.name] = converted
    try:
        return cls(**kwargs)
    except TypeError:  # a required field was missing: reported above
        return None


def _default(cls):
    try:
        return cls()
    except TypeError:
        return None


def _coerce(value, hint, *, prefix: str = "", where: str = "", problems: list[str] | None = None):
    """Return ``(ok, value)``. Nested dataclasses report their own problems and count as ok."""
    if dataclasses.is_dataclass(hint):  # reports its own problems, a non-mapping included
        return True, build_dataclass(hint, value, prefix=prefix, where=where, problems=problems if problems is not None else [])
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, v = _coerce(value, arg, prefix=prefix, where=where, problems=problems)
            if ok:
                return True, v
        return False, None
    if hint is type(None):
        return value is None, None
    if origin is Literal:
        return value in args, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, None
        out = []
        for i, item in enumerate(value):
            ok, v = _coerce(item, args[0], prefix=f"{prefix.rstrip('.')}[{i}].", where=where, problems=problems)
            if not ok:
                return False, None
            out.append(v)
        return True, out
    if origin is dict:
        if not isinstance(value, dict):
            return False, None
        out = {}
        for k, item in value.items():
            ok_k, kk = _coerce(k, args[0])
            ok_v, vv = _coerce(item, args[1], prefix=f"{prefix}{k}.", where=where, problems=problems)
            if not (ok_k and ok_v):
                return False, None
            out[kk] = vv
        return True, out
    return False, None


def describe_type(hint) -> str:
    """A type hint in words, for messages (``list[int]`` -> ``a list of an integer``)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(hint))
    if hint is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {describe_type(args[0])}"
    if origin is dict:
        return f"a mapping of {describe_type(args[0])} to {describe_type(args[1])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(hint, str(hint))


class Configurable:
    """A registered component whose parameters are a dataclass ``Params``, checked on construction.

    Subclasses set ``kind`` (how messages name the family, e.g. ``"loss term"``) and declare
    ``Params``; :meth:`_check_params` stores the checked instance as ``self.params``.
    """

    name: typing.ClassVar[str] = ""
    kind: typing.ClassVar[str] = "component"

    @dataclasses.dataclass
    class Params:
        """No parameters."""

    def _check_params(self, params: dict) -> None:
        self.params = check_params(type(self).Params, params, owner=f"{self.kind} {self.name!r}")

    def get_params(self) -> dict:
        return dict(vars(self.params))
