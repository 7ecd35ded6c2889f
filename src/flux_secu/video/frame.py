"""The value that leaves a camera: a letterboxed frame and what is known about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flux_secu.detect.letterbox import Letterbox


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """Everything downstream needs about a frame, small enough to travel inline."""

    site: str
    camera: str
    seq: int
    capture_ts: float
    """Capture instant on the pipeline clock (epoch s): wall time live, ``--at`` + clip time in replay."""
    clip_time_s: float
    """Position in the source (seconds since the start of the file or stream)."""
    geometry: Letterbox
    sent_wall_ts: float
    """Wall-clock instant the camera handed the frame over, for latency measurements."""
    motion: str = ""
    """Why the motion gate let the frame through (motion, hold, heartbeat, start, off)."""
    node: str = ""
    """The Ray node of the camera's host: the pool keeps the frame on it (``detect/batching.py``)."""


@dataclass(frozen=True, slots=True)
class CameraFrame:
    """A frame handed to the inference pool.

    ``image`` is an ``ObjectRef`` to the letterboxed uint8 canvas (so that the pool, which only routes,
    never copies the pixels) or the array itself when running without Ray.
    """

    meta: FrameMeta
    image: Any
