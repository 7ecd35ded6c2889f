"""Presence confirmation: turn per-frame person detections into one intrusion per presence.

A presence is confirmed when a person is seen on at least ``hits`` of the last ``window`` analysed
frames; it ends when no person has been seen for ``clear_after_s``. One presence raises at most one
incident, however many frames it lasts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PresenceConfirmed:
    """A presence has just been confirmed at ``ts`` (first seen at ``first_seen_ts``)."""

    ts: float
    first_seen_ts: float


@dataclass(frozen=True, slots=True)
class PresenceEnded:
    ts: float
    last_seen_ts: float


PresenceChange = PresenceConfirmed | PresenceEnded


@dataclass
class PresenceTracker:
    """State of one camera; feed it every analysed frame in capture order."""

    hits: int = 3
    window: int = 5
    clear_after_s: float = 3.0
    _recent: deque[bool] = field(init=False)
    _first_seen: float | None = field(default=None, init=False)
    _last_seen: float | None = field(default=None, init=False)
    confirmed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=self.window)

    @property
    def last_seen(self) -> float | None:
        return self._last_seen

    def observe(self, ts: float, person_seen: bool) -> list[PresenceChange]:
        """Feed one analysed frame; returns what changed (usually nothing)."""
        changes: list[PresenceChange] = []
        # A gap longer than clear_after_s separates presences, even when no analysed frame fell in it
        # (the motion gate may skip the empty stretch): the old presence ends, stale hits are forgotten.
        gap = self._last_seen is None or ts - self._last_seen >= self.clear_after_s
        if gap:
            if self.confirmed and self._last_seen is not None:
                changes.append(PresenceEnded(ts=ts, last_seen_ts=self._last_seen))
                self.confirmed = False
            self._recent.clear()
        self._recent.append(person_seen)
        if person_seen:
            if gap:
                self._first_seen = ts
            self._last_seen = ts
        if not self.confirmed and sum(self._recent) >= self.hits:
            self.confirmed = True
            first = self._first_seen if self._first_seen is not None else ts
            changes.append(PresenceConfirmed(ts=ts, first_seen_ts=first))
        return changes
