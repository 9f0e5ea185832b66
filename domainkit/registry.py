"""Name -> implementation registries for the swappable parts (loaders, embedders, ...).

Built-ins register exactly as a user's plug-in would::

    from domainkit.retrieval.embedders import EMBEDDERS

    @EMBEDDERS.register("my-embedder")
    class MyEmbedder: ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from domainkit.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of implementations of one kind of part."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator registering an implementation under one or more names."""

        def decorator(item: T) -> T:
            for name in names:
                self._items[name.lower()] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name.lower()]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._items

    def names(self) -> list[str]:
        return sorted(self._items)
