"""Named registries (decoders, hypernets, losses, optimizers, schedules, stages, actions).

Unknown names are errors that list every valid one; tests enumerate `names()` so every
registered entry gets exercised.
"""
from __future__ import annotations

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
