"""How long an inference call may take, and the order detections go to the rules: pure, no Ray.

A hung inference actor (a wedged GPU, a model call that never returns) must not hold every camera.
The pool gives each call a deadline derived from the batch times it measured (``BatchClock``) and
forwards detections to the rules in capture order per camera (``CameraOrder``), so a batch past its
deadline delays only the cameras with a frame in it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

DEADLINE_FACTOR = 10.0
"""A call is hung once it took this many times the slowest recent call's time per frame."""
DEADLINE_FLOOR_S = 2.0
"""Never less: on a shared, loaded box a healthy call can wait this long for a core, and a call
failed by mistake costs the actor's restart (its model loaded again) and the frames in it."""
WINDOW = 64
"""Recent batches the slowest time per frame is taken over: a load that lasts follows, an old one fades."""


@dataclass
class BatchClock:
    """The batch times an inference actor measured, and the deadline they set for the next call."""

    factor: float = DEADLINE_FACTOR
    floor_s: float = DEADLINE_FLOOR_S
    window: int = WINDOW
    _per_frame: deque[float] = field(default_factory=deque)

    def record(self, seconds: float, frames: int) -> None:
        """A call of ``frames`` frames answered in ``seconds`` (from dispatch to detections)."""
        self._per_frame.append(seconds / max(frames, 1))
        while len(self._per_frame) > self.window:
            self._per_frame.popleft()

    @property
    def measured(self) -> bool:
        return bool(self._per_frame)

    def deadline_s(self, frames: int) -> float:
        """How long a call of ``frames`` frames may take before it is failed as hung."""
        slowest = max(self._per_frame, default=0.0)
        return max(self.floor_s, self.factor * slowest * max(frames, 1))


class CameraOrder:
    """Capture order per camera: each frame takes a ticket when it enters the pool, and its detections
    go to the rules only after those of every earlier ticket of its camera were forwarded or failed.

    One global order (by batch) let one slow batch hold every camera's later frames; per camera, it
    holds only the cameras that have a frame in it.
    """

    def __init__(self) -> None:
        self._issued: dict[str, int] = {}
        self._next: dict[str, int] = {}
        self._finished: dict[str, set[int]] = {}

    def ticket(self, camera: str) -> int:
        ticket = self._issued.get(camera, 0)
        self._issued[camera] = ticket + 1
        return ticket

    def is_turn(self, camera: str, ticket: int) -> bool:
        return self._next.get(camera, 0) == ticket

    def finish(self, camera: str, ticket: int) -> None:
        """The ticket's frame was forwarded (or failed): the camera's next ticket may go."""
        finished = self._finished.setdefault(camera, set())
        finished.add(ticket)
        turn = self._next.get(camera, 0)
        while turn in finished:
            finished.discard(turn)
            turn += 1
        self._next[camera] = turn

    def waiting(self, camera: str) -> int:
        """Tickets of the camera issued and not yet finished."""
        return self._issued.get(camera, 0) - self._next.get(camera, 0) - len(self._finished.get(camera, ()))
