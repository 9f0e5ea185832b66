"""Name -> implementation registries for the swappable parts (loaders, embedders, ...).

Built-ins register exactly as a user's plug-in would::

    from domainkit.retrieval.embedders import EMBEDDERS

    @EMBEDDERS.register("my-embedder")
    class MyEmbedder: ...

An installed package can also offer parts without being imported by the user: each
registry reads an entry-point group (``domainkit.loaders``, ``domainkit.embedders``,
``domainkit.teachers``, ``domainkit.generators``, ``domainkit.backends``) the first time it
is used, and registers each entry point's object under the entry point's name::

    # the plug-in's pyproject.toml
    [project.entry-points."domainkit.loaders"]
    ".memo" = "memo_plugin:load_memo"

A plug-in that fails to import does not stop anything else; asking for its name gives its
error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import metadata
from typing import Generic, TypeVar

from domainkit.errors import UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """A named collection of implementations of one kind of part.

    Args:
        kind: What the parts are, for messages ("loader").
        group: The entry-point group whose plug-ins join the registry on first use.
    """

    def __init__(self, kind: str, group: str | None = None):
        self.kind, self.group = kind, group
        self._items: dict[str, T] = {}
        self._broken: dict[str, str] = {}
        self._plugins_loaded = group is None

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator registering an implementation under one or more names."""

        def decorator(item: T) -> T:
            for name in names:
                self._items[name.lower()] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._items[name.lower()]
        except KeyError:
            if name.lower() in self._broken:
                raise UnknownNameError(
                    f"the {self.kind} plug-in {name!r} failed to load: {self._broken[name.lower()]}"
                ) from None
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}"
            ) from None

    def failure(self, name: str) -> str | None:
        """Why the plug-in of that name failed to load, if it did."""
        self._load_plugins()
        return self._broken.get(name.lower())

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name.lower() in self._items

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def _load_plugins(self) -> None:
        """Register the installed packages' entry points of this registry's group, once.
        A built-in or an explicit ``register`` of the same name wins."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in metadata.entry_points(group=self.group or ""):
            name = entry.name.lower()
            if name in self._items:
                continue
            try:
                self._items[name] = entry.load()
            except Exception as e:  # noqa: BLE001 - a broken plug-in must not stop the rest
                self._broken[name] = f"{entry.value}: {type(e).__name__}: {e}"
                log.warning("%s plug-in %r failed to load: %s", self.kind, name, self._broken[name])
