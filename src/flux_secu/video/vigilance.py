"""Vigilance: whether a camera decodes every frame (watching) or its key frames only (quiet).

Decoding is most of a camera's cost (~0.5 ms a frame, 25 frames a second), and a closed site's scene is
still nearly all night. After ``quiet_after_s`` with no motion and nothing the rules found suspect, a
camera goes quiet: it decodes only key frames (~5x cheaper per packet), runs its motion gate on them and
sends one to the detector every ``quiet_heartbeat_s``. It wakes up on the first motion seen in a key
frame or on the rules' word (a person in view, a presence, a recheck due) and decodes every frame again.

The price is the time to notice an entry: up to one GOP (the gap between key frames) more. So a camera
goes quiet only while its key frames come at most every ``quiet_max_gop_s``; a camera with a long or
"smart" GOP (key frames every 10 s or more in a still scene) keeps decoding every frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["watching", "quiet"]
Attention = Literal["none", "watch", "follow", "rest"]
"""The rules' word on an analysed frame (``RulesActor.observe``): ``none``, nothing suspect; ``watch``,
something that could be an intrusion or a recheck due: decode every frame, analyse every sampled frame
with motion; ``follow``, a confirmed presence in view (its intrusion raised, the warning on its way):
decode every frame, analyse ``follow_fps`` of them, enough to tell whether the person is still there;
``rest``, nothing this camera sees has any action now (its site open, by default): motion is
visitors, ``follow_fps`` looks tell when that changes (closing time, an override), and the camera may go
quiet as with ``none``."""
_GOPS_KEPT = 4  # the longest of the last few gaps: one short GOP (a scene cut) does not make a camera quiet


@dataclass
class Vigilance:
    quiet_after_s: float
    """No motion and nothing suspect for this long: go quiet (0: never)."""
    max_gop_s: float
    """Key frames further apart than this: never quiet (the camera would be blind between them)."""
    _last_event: float | None = field(default=None, init=False)
    _last_key: float | None = field(default=None, init=False)
    _gaps: deque[float] = field(default_factory=lambda: deque(maxlen=_GOPS_KEPT), init=False)

    @property
    def gop_s(self) -> float | None:
        """The longest recent gap between key frames (None until two were seen)."""
        return max(self._gaps) if self._gaps else None

    def key_frame(self, pos_s: float) -> None:
        """A key frame at ``pos_s`` on the source's timeline."""
        if self._last_key is not None and pos_s > self._last_key:
            self._gaps.append(pos_s - self._last_key)
        elif self._last_key is not None:  # the source went back (a loop, a reconnection)
            self._gaps.clear()
        self._last_key = pos_s

    def wake(self, ts: float) -> None:
        """Motion, or the rules' word, at ``ts`` (pipeline clock): watch every frame for a while."""
        self._last_event = ts if self._last_event is None else max(self._last_event, ts)

    def mode(self, ts: float) -> Mode:
        if self._last_event is None:  # a camera starts watching
            self._last_event = ts
        gop = self.gop_s
        if self.quiet_after_s <= 0 or gop is None or gop > self.max_gop_s:
            return "watching"
        return "quiet" if ts - self._last_event >= self.quiet_after_s else "watching"
