"""Frame sampling: keep ``detect_fps`` frames per second of the source's own timeline."""

from __future__ import annotations

from dataclasses import dataclass, field

_EPS = 1e-3


@dataclass
class FrameSampler:
    detect_fps: float
    _next: float | None = field(default=None, init=False)

    def take(self, pos_s: float) -> bool:
        """True when the frame at ``pos_s`` should be analysed."""
        period = 1.0 / self.detect_fps
        if self._next is None or pos_s < self._next - period - _EPS:
            # First frame, or the source jumped backwards (loop, reconnect): restart the schedule.
            self._next = pos_s
        if pos_s + _EPS < self._next:
            return False
        self._next += period
        if self._next <= pos_s:  # fell behind (slow decode, gap in the stream): do not burst
            self._next = pos_s + period
        return True
