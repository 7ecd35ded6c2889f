"""Is the camera still sending? Reconnection back-off and the video_loss / video_restored watch.

Pure logic, no threads of its own: the camera actor feeds it frame arrivals from its reading thread and
polls it from a watchdog thread (a dead RTSP connection can block a read for seconds).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Backoff:
    """Exponential back-off with jitter between reconnection attempts.

    The jitter (each delay drawn in ``[1 - jitter, 1 + jitter]`` times the nominal one) spreads the
    attempts of cameras that lost their link at the same moment (a site's router rebooted), so they
    do not all hit the recorder again in lock-step.
    """

    min_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    rand: Callable[[], float] = random.random
    _nominal: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The delay before the next attempt; each failure makes the following one longer."""
        self._nominal = self.min_s if self._nominal == 0.0 else min(self._nominal * self.factor, self.max_s)
        return self._nominal * (1.0 - self.jitter + 2.0 * self.jitter * self.rand())

    def reset(self) -> None:
        """The link works again: the next failure starts from ``min_s``."""
        self._nominal = 0.0


@dataclass(frozen=True, slots=True)
class LinkEvent:
    kind: Literal["video_loss", "video_restored"]
    ts: float
    """When it was noticed: the silence reached its limit, or the first new frame arrived."""
    since: float
    """When the loss began: the last frame's arrival, or the start (the incident is keyed on it)."""
    down_s: float


class LinkMonitor:
    """Raises ``video_loss`` after ``loss_after_s`` without a frame, ``video_restored`` at the next frame.

    Time spent blocked by back-pressure (the camera waiting for the pipeline, not for its source) is
    never silence: the clock restarts when the block ends. Thread-safe.
    """

    def __init__(self, loss_after_s: float, now: float) -> None:
        self.loss_after_s = loss_after_s
        self._last = now
        self._blocked = 0
        self._lost_since: float | None = None
        self._lock = threading.Lock()

    @property
    def lost(self) -> bool:
        return self._lost_since is not None

    def frame(self, now: float) -> LinkEvent | None:
        """A frame arrived from the source; returns ``video_restored`` when it ends a loss."""
        with self._lock:
            self._last = now
            since, self._lost_since = self._lost_since, None
        if since is None:
            return None
        return LinkEvent("video_restored", now, since, now - since)

    def poll(self, now: float) -> LinkEvent | None:
        """Returns ``video_loss`` once when the silence reaches ``loss_after_s``."""
        with self._lock:
            if self._lost_since is not None or self._blocked or now - self._last < self.loss_after_s:
                return None
            self._lost_since = self._last
            return LinkEvent("video_loss", now, self._last, now - self._last)

    @contextmanager
    def blocked(self, clock: Callable[[], float]) -> Iterator[None]:
        """Around a wait on the pipeline: the source is not read meanwhile, but it is not silent."""
        with self._lock:
            self._blocked += 1
        try:
            yield
        finally:
            with self._lock:
                self._blocked -= 1
                if self._lost_since is None:
                    self._last = max(self._last, clock())
