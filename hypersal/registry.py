"""Named registries (decoders, hypernets, losses, optimizers, schedules, stages, actions).

Unknown names are errors that list every valid one; tests enumerate `names()` so every
registered entry gets exercised.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

from hypersal.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry
        return add

    def get(self, name: str, **where: Any) -> T:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries, **where)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


class Declared:
    """A registry declared as data: each name and the dotted path ("module:attr") of the code that
    implements it, imported only when used (as timm's optimizer table does). So the login node
    lists and checks the names without importing torch, and adding an entry is one line here
    plus the function it names. Iterates over the sorted names, like the tuples it replaced."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind, self.entries = kind, dict(entries)

    def get(self, name: str, **where: Any) -> Any:
        if name not in self.entries:
            raise unknown_name(self.kind, name, self.entries, **where)
        module, _, attr = self.entries[name].partition(":")
        return getattr(importlib.import_module(module), attr)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.entries)
