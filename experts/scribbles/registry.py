"""Registry of scribble styles (timm's ``register_model`` / ``create_model``).

A style is a :class:`~experts.scribbles.base.ScribbleStyle` subclass registered by name with
:func:`register_scribble_style`; config values and benchmarks pick one with
:func:`create_scribble_style`. Styles register when ``experts.scribbles`` is imported.

Example:
    >>> style = create_scribble_style("slicewise", density=0.5)
"""

from __future__ import annotations

from typing import Callable, TypeVar

from experts.registry import Registry
from experts.scribbles.base import ScribbleStyle

__all__ = ["SCRIBBLE_STYLES", "register_scribble_style", "create_scribble_style", "list_scribble_styles"]

SCRIBBLE_STYLES: Registry[ScribbleStyle] = Registry("scribble style")

S = TypeVar("S", bound=Callable[..., ScribbleStyle])


def register_scribble_style(name: str) -> Callable[[S], S]:
    """Class decorator registering a scribble style under ``name`` (also set as ``cls.name``).

    Raises:
        ValueError: ``name`` is already registered.
    """

    def wrap(cls: S) -> S:
        SCRIBBLE_STYLES.register(name)(cls)
        if isinstance(cls, type):
            cls.name = name
        return cls

    return wrap


def create_scribble_style(name: str, /, **params) -> ScribbleStyle:
    """Build the style registered as ``name`` with its keyword configuration ``params``.

    Raises:
        ValueError: unknown ``name`` (the message lists the known styles), or invalid ``params``.
    """
    return SCRIBBLE_STYLES.create(name, **params)


def list_scribble_styles() -> list[str]:
    """Names of the registered styles, sorted."""
    return SCRIBBLE_STYLES.names()
