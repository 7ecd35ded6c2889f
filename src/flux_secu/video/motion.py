"""Motion gate: run the detector only on frames where something moved (and on a slow heartbeat).

A night scene is still most of the time; gating keeps the detector free for the cameras that matter.
The gate compares a small blurred grayscale image against a running average of the scene. Changes
inside the ``ignore`` polygons (a public road, trees in the wind) never count; the changed area is a
share of the pixels left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from flux_secu.config import MotionConfig

Reason = Literal["start", "motion", "hold", "heartbeat", "recalibrated", "still", "off"]
_ADAPT_RATE = 0.05


@dataclass(frozen=True, slots=True)
class MotionDecision:
    analyse: bool
    reason: Reason
    changed_area: float


@dataclass
class MotionGate:
    config: MotionConfig
    _background: npt.NDArray[np.float32] | None = field(default=None, init=False)
    _last_motion: float = field(default=float("-inf"), init=False)
    _last_analysed: float = field(default=float("-inf"), init=False)
    _keep: npt.NDArray[np.bool_] | None = field(default=None, init=False)
    """Pixels of the small image outside every ignore polygon (None: all of them)."""

    def _small(self, frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        width = min(self.config.width, w)
        small = cv2.resize(gray, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (5, 5), 0)

    def check(self, frame: npt.NDArray[np.uint8], ts: float, heartbeat_s: float | None = None
              ) -> MotionDecision:
        """``heartbeat_s``: this frame's heartbeat period when not the configured one (a quiet camera)."""
        if not self.config.enabled:
            return self._analyse(ts, "off", 0.0)
        small = self._small(frame)
        if self._background is None or self._background.shape != small.shape:
            self._background = small.astype(np.float32)
            self._keep = _outside(self.config.ignore, small.shape)
            return self._analyse(ts, "start", 0.0)
        changed = cv2.absdiff(small, cv2.convertScaleAbs(self._background)) > self.config.pixel_threshold
        if self._keep is None:
            area = float(np.count_nonzero(changed)) / changed.size
        else:
            area = float(np.count_nonzero(changed & self._keep)) / max(1, int(np.count_nonzero(self._keep)))
        if area >= self.config.recalibrate_area:
            # Most of the image changed at once (IR switch, lightning, headlights): a new scene,
            # not an intruder. Adopt it; the heartbeat still looks at it soon.
            self._background = small.astype(np.float32)
            return MotionDecision(False, "recalibrated", area)
        cv2.accumulateWeighted(small, self._background, _ADAPT_RATE)
        if area >= self.config.min_area:
            self._last_motion = ts
            return self._analyse(ts, "motion", area)
        if ts - self._last_motion <= self.config.hold_s:
            return self._analyse(ts, "hold", area)
        if ts - self._last_analysed >= (heartbeat_s or self.config.heartbeat_s):
            return self._analyse(ts, "heartbeat", area)
        return MotionDecision(False, "still", area)

    def _analyse(self, ts: float, reason: Reason, area: float) -> MotionDecision:
        self._last_analysed = ts
        return MotionDecision(True, reason, area)


def _outside(polygons: list[list[tuple[float, float]]], shape: tuple[int, ...]
             ) -> npt.NDArray[np.bool_] | None:
    if not polygons:
        return None
    h, w = shape[:2]
    ignored = np.zeros((h, w), np.uint8)
    for polygon in polygons:
        points = np.round(np.array(polygon, np.float64) * [w - 1, h - 1]).astype(np.int32)
        cv2.fillPoly(ignored, [points], 1)
    return np.asarray(ignored == 0)
