"""Newest-wins hand-over: a stale frame is worth nothing, so a newer one replaces it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class NewestWins(Generic[T]):
    """A single pending slot in front of a bounded number of in-flight items.

    ``offer`` parks an item; an item still parked when the next one arrives is replaced and counted
    in ``drops``. ``take`` hands the parked item over when there is room for it.
    """

    max_in_flight: int
    in_flight: int = 0
    drops: int = 0
    _pending: T | None = field(default=None, init=False)

    def offer(self, item: T) -> None:
        if self._pending is not None:
            self.drops += 1
        self._pending = item

    def take(self) -> T | None:
        if self._pending is None or self.in_flight >= self.max_in_flight:
            return None
        item, self._pending = self._pending, None
        self.in_flight += 1
        return item

    def finished(self, count: int = 1) -> None:
        self.in_flight -= count
