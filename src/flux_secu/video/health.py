"""Camera health: frozen, black, blank, covered or defocused, moved away from its reference view.

Each is a camera fault (an incident for the maintenance team), never an intrusion. The checks run on
one sampled frame per ``interval_s`` (a 320-pixel-wide grey copy: ~0.5 ms; the view's landmarks, the
dearest, ~2.5 ms, only every ``view_interval_s``), and a fault is raised only
once its condition has held for ``alarm_after_s`` (a truck's headlights, a person standing in front of
the lens for a moment are not faults), cleared once it has been gone for ``clear_after_s``.

The reference view (sharpness, ORB landmarks) is the first healthy check ``reference_after_s`` after
the camera starts: a camera knocked aside while the system was down is seen as it is then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from flux_secu.config import HealthConfig

HealthFault = Literal["frozen", "black", "blank", "covered", "moved"]
FAULTS: tuple[HealthFault, ...] = ("frozen", "black", "blank", "covered", "moved")
_WIDTH = 320
_ORB_FEATURES = 500
_MIN_MATCHES = 10
# A reference with this many landmarks that no longer finds enough of them has lost its view (turned,
# masked). With fewer (a dark, flat night scene) the view cannot be checked: no decision either way.
_REFERENCE_LANDMARKS = 50


@dataclass(frozen=True, slots=True)
class Measures:
    mean: float
    std: float
    sharpness: float
    """Variance of the Laplacian: high for a focused, textured view; low for a covered or blurred lens."""
    diff: float | None
    """Mean absolute difference with the previous check (grey levels); None on the first."""
    shift: float | None
    """Displacement from the reference view, in image widths; None when unknown."""
    landmarks_lost: bool
    """The reference's landmarks are not found any more (a view turned or covered)."""


@dataclass(frozen=True, slots=True)
class FaultChange:
    fault: HealthFault
    active: bool
    ts: float
    since: float
    """When the condition began (the incident's key), for a raise and for the clear that ends it."""
    details: dict[str, Any]


@dataclass
class _Debounce:
    true_since: float | None = None
    false_since: float | None = None
    active_since: float | None = None

    def update(self, condition: bool | None, ts: float, alarm_after: float, clear_after: float
               ) -> tuple[bool, float] | None:
        """(active, since) when the state changes."""
        if condition is None:  # cannot tell: keep the state and its timers
            return None
        if condition:
            self.false_since = None
            if self.true_since is None:
                self.true_since = ts
            if self.active_since is None and ts - self.true_since >= alarm_after:
                self.active_since = self.true_since
                return True, self.active_since
            return None
        self.true_since = None
        if self.active_since is None:
            return None
        if self.false_since is None:
            self.false_since = ts
        if ts - self.false_since >= clear_after:
            since, self.active_since, self.false_since = self.active_since, None, None
            return False, since
        return None


@dataclass
class _Reference:
    sharpness: float
    keypoints: Any
    descriptors: npt.NDArray[np.uint8] | None


@dataclass
class HealthMonitor:
    config: HealthConfig
    start_ts: float | None = None
    """When the camera started (None: at the first check), on the clock of the ``ts`` given to ``check``."""
    vigilant: bool = False
    """An intrusion of the camera's site is being verified: faults are raised after ``tamper_after_s``,
    and the view is compared with the reference at every check."""
    _last_check: float = field(default=float("-inf"), init=False)
    _last_view: float = field(default=float("-inf"), init=False)
    _previous: npt.NDArray[np.uint8] | None = field(default=None, init=False)
    _reference: _Reference | None = field(default=None, init=False)
    _debounce: dict[HealthFault, _Debounce] = field(
        default_factory=lambda: {f: _Debounce() for f in FAULTS}, init=False)
    _orb: Any = field(default=None, init=False)
    _matcher: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._orb = cv2.ORB_create(_ORB_FEATURES)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)

    @property
    def active(self) -> dict[HealthFault, float]:
        """The faults raised and not cleared, with when each began."""
        return {f: d.active_since for f, d in self._debounce.items() if d.active_since is not None}

    def due(self, ts: float) -> bool:
        return self.config.enabled and ts - self._last_check >= self.config.interval_s

    def check(self, frame: npt.NDArray[np.uint8], ts: float) -> list[FaultChange]:
        """Measure one frame (BGR or grey) and return the faults raised or cleared by it."""
        self._last_check = ts
        if self.start_ts is None:
            self.start_ts = ts
        gray = _small_gray(frame)
        view_interval = self.config.interval_s if self.vigilant else self.config.view_interval_s
        view = self._reference is not None and ts - self._last_view >= view_interval
        if view:
            self._last_view = ts
        m = self.measure(gray, view=view)
        self._previous = gray
        black = m.mean < self.config.black_mean
        blank = not black and m.std < self.config.blank_std
        healthy_image = not (black or blank)
        if self._reference is None and healthy_image and ts - self.start_ts >= self.config.reference_after_s:
            keypoints, descriptors = self._orb.detectAndCompute(gray, None)
            self._reference = _Reference(m.sharpness, keypoints, descriptors)
            self._last_view = ts
            return self._update({"black": False, "blank": False, "frozen": _frozen(m, self.config)}, ts, m)
        covered: bool | None = None
        moved: bool | None = None
        if self._reference is not None and healthy_image:
            covered = m.sharpness < self.config.covered_ratio * self._reference.sharpness
            if not covered:
                if m.shift is not None:
                    moved = m.shift > self.config.moved_shift
                elif m.landmarks_lost:
                    moved = True
        elif not healthy_image:
            covered, moved = False, None  # black and blank say it better
        frozen = healthy_image and _frozen(m, self.config)
        return self._update({"black": black, "blank": blank, "covered": covered, "moved": moved,
                             "frozen": frozen}, ts, m)

    def measure(self, gray: npt.NDArray[np.uint8], view: bool = True) -> Measures:
        """``view``: also compare the view with the reference (else shift unknown, landmarks not lost)."""
        mean, std = cv2.meanStdDev(gray)
        sharpness = float(cv2.Laplacian(gray, cv2.CV_32F).var())
        diff = None
        if self._previous is not None and self._previous.shape == gray.shape:
            diff = float(cv2.absdiff(gray, self._previous).mean())
        shift, lost = self._shift(gray) if view else (None, False)
        return Measures(float(mean[0, 0]), float(std[0, 0]), sharpness, diff, shift, lost)

    def _shift(self, gray: npt.NDArray[np.uint8]) -> tuple[float | None, bool]:
        ref = self._reference
        if ref is None or ref.descriptors is None or len(ref.keypoints) < _MIN_MATCHES:
            return None, False
        rich = len(ref.keypoints) >= _REFERENCE_LANDMARKS
        keypoints, descriptors = self._orb.detectAndCompute(gray, None)
        if descriptors is None or len(keypoints) < _MIN_MATCHES:
            return None, rich
        matches = self._matcher.match(ref.descriptors, descriptors)
        if len(matches) < _MIN_MATCHES:
            return None, rich
        src = np.float32([ref.keypoints[m.queryIdx].pt for m in matches])
        dst = np.float32([keypoints[m.trainIdx].pt for m in matches])
        # A similarity transform (shift, rotation, zoom) fitted on the landmarks that agree: a person
        # walking through the view moves a few landmarks, not the consensus.
        transform, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                         ransacReprojThreshold=3.0)
        if transform is None or int(inliers.sum()) < _MIN_MATCHES:
            return None, rich
        h, w = gray.shape
        centre = np.array([w / 2, h / 2, 1.0])
        moved_centre = transform @ centre
        return float(np.hypot(*(moved_centre - centre[:2])) / w), False

    def _update(self, conditions: dict[HealthFault, bool | None], ts: float, m: Measures
                ) -> list[FaultChange]:
        changes = []
        details = {"mean": round(m.mean, 1), "std": round(m.std, 1), "sharpness": round(m.sharpness, 1),
                   "diff": None if m.diff is None else round(m.diff, 2),
                   "shift": None if m.shift is None else round(m.shift, 3)}
        if self._reference is not None:
            details["reference_sharpness"] = round(self._reference.sharpness, 1)
        alarm_after = self.config.alarm_after_s
        if self.vigilant:
            alarm_after = min(alarm_after, self.config.tamper_after_s)
        for fault, condition in conditions.items():
            change = self._debounce[fault].update(condition, ts, alarm_after, self.config.clear_after_s)
            if change is not None:
                changes.append(FaultChange(fault, change[0], ts, change[1], details))
        return changes


def _frozen(m: Measures, config: HealthConfig) -> bool:
    return m.diff is not None and m.diff < config.frozen_diff


def _small_gray(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    if w <= _WIDTH:
        return gray
    return cv2.resize(gray, (_WIDTH, max(1, round(h * _WIDTH / w))), interpolation=cv2.INTER_AREA)
