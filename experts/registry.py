"""A named registry of factories (timm's ``register_model`` / ``create_model``).

Networks, losses and adaptation strategies are registered by name in a module that imports its
members, so that a config value picks one and a contract test can loop over all of them.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories.

    Args:
        kind: what is registered, used in messages (``"network"``, ``"loss"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``."""

        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return wrap

    def register_class(self, name: str) -> Callable[[type], type]:
        """Class decorator: register ``cls`` under ``name`` and set ``cls.name = name``."""

        def wrap(cls: type) -> type:
            self.register(name)(cls)
            cls.name = name
            return cls

        return wrap

    def create(self, name: str, /, **kwargs) -> T:
        """Build the registered ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories
