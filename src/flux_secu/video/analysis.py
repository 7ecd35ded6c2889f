"""Is the camera's video still analysed? The ``analysis_stalled`` watch: pure, thread-safe, no Ray.

Video may keep arriving while no detector answers (every inference actor hung or restarting): the
camera then drops its frames as stale, ``video_loss`` never fires, and nobody would be told. The
camera feeds this watch what becomes of the frames it wants analysed and its watchdog polls it:
``analysis_stalled`` is raised when the camera has wanted analysis for ``stalled_after_s`` without a
single answer, and cleared at the next answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StallEvent:
    active: bool
    """True: analysis stalled; False: an answer came back."""
    ts: float
    since: float
    """When the unanswered wait began (the fault's episode is keyed on it)."""
    waiting_s: float


class AnalysisWatch:
    """Demand is a frame sent to the pool, or one dropped because the pool still holds earlier ones;
    a lost frame (its inference call failed) is an answer of no use: the wait goes on. A camera with
    nothing to analyse (a still scene, gated) is not stalled, however long it sends nothing."""

    def __init__(self, stalled_after_s: float) -> None:
        self.stalled_after_s = stalled_after_s
        self._since: float | None = None  # the oldest demand not answered yet
        self._last_demand = float("-inf")
        self._outstanding = 0
        self._stalled: float | None = None  # since when, while raised
        self._lock = threading.Lock()

    @property
    def stalled(self) -> bool:
        return self._stalled is not None

    def _demand(self, now: float) -> None:
        # A demand after a long pause with nothing outstanding starts a new wait: the pool was not
        # asked anything meanwhile, so that pause says nothing about it.
        paused = self._outstanding == 0 and now - self._last_demand >= self.stalled_after_s
        if self._since is None or paused:
            self._since = now
        self._last_demand = now

    def sent(self, now: float) -> None:
        with self._lock:
            self._demand(now)
            self._outstanding += 1

    def dropped(self, now: float) -> None:
        with self._lock:
            self._demand(now)

    def lost(self, now: float) -> None:
        with self._lock:
            self._outstanding = max(0, self._outstanding - 1)
            self._last_demand = now

    def answered(self, now: float) -> StallEvent | None:
        """Detections came back; returns the clear when it ends a stall."""
        with self._lock:
            self._outstanding = max(0, self._outstanding - 1)
            self._since = None
            since, self._stalled = self._stalled, None
        return None if since is None else StallEvent(False, now, since, now - since)

    def poll(self, now: float, answers_waiting: Callable[[], bool] = lambda: False) -> StallEvent | None:
        """Returns the raise once, when the camera has waited ``stalled_after_s`` for an answer.

        ``answers_waiting``: whether answers came back that the camera has not collected yet (asked
        only when it would raise): a reader blocked in a dead source's read collects nothing, and
        that is video loss, not the pool's silence."""
        with self._lock:
            since = self._since
            if self._stalled is not None or since is None or now - since < self.stalled_after_s:
                return None
            if self._outstanding == 0 and now - self._last_demand >= self.stalled_after_s:
                return None  # asked nothing for a while: nothing to say about the pool
        if answers_waiting():
            return None
        with self._lock:
            if self._stalled is not None or self._since != since:
                return None  # answered meanwhile
            self._stalled = since
            return StallEvent(True, now, since, now - since)
