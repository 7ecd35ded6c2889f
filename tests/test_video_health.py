"""Camera health checks on frames made from the shipped clips: repeated, blacked out, blanked, blurred,
shifted. The untouched clips (a person walking through included) must raise nothing."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from flux_secu.config import HealthConfig
from flux_secu.video.health import FaultChange, HealthMonitor

from .conftest import LOWLIGHT_CLIP, ONE_BY_ONE_CLIP

Frame = npt.NDArray[np.uint8]
CONFIG = HealthConfig(alarm_after_s=3, clear_after_s=2, reference_after_s=0, view_interval_s=1)


def _every_second(clip: object, limit: int | None = None) -> list[Frame]:
    """One frame per second of a 10 fps clip."""
    cap = cv2.VideoCapture(str(clip))
    frames, i = [], 0
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        if i % 10 == 0:
            frames.append(frame)
        i += 1
    return frames


@pytest.fixture(scope="module")
def day() -> list[Frame]:
    return _every_second(ONE_BY_ONE_CLIP)


def _run(frames: list[Frame], config: HealthConfig = CONFIG) -> tuple[HealthMonitor, list[FaultChange]]:
    monitor = HealthMonitor(config, start_ts=0.0)
    changes: list[FaultChange] = []
    for ts, frame in enumerate(frames):
        if monitor.due(float(ts)):
            changes += monitor.check(frame, float(ts))
    return monitor, changes


def test_the_untouched_clips_raise_nothing(day: list[Frame]) -> None:
    # 139 s of the day clip: six people walk in and out, the view never changes.
    assert _run(day)[1] == []
    assert _run(_every_second(LOWLIGHT_CLIP))[1] == []  # dark and noisy, but a healthy camera


def _raised(changes: list[FaultChange]) -> list[tuple[str, bool, float]]:
    return [(c.fault, c.active, c.ts) for c in changes]


def test_frozen_image(day: list[Frame]) -> None:
    frames = day[:5] + [day[5]] * 6 + day[11:16]
    monitor, changes = _run(frames)
    # Repeats start at t=6 (the first identical check); after 3 s of it, a fault; it clears 2 s after
    # frames move again (t=11).
    assert _raised(changes) == [("frozen", True, 9.0), ("frozen", False, 13.0)]
    assert changes[0].since == 6.0 and changes[1].since == 6.0
    assert changes[0].details["diff"] == 0.0
    assert monitor.active == {}


def test_black_image(day: list[Frame]) -> None:
    black = np.zeros_like(day[0])
    frames = day[:3] + [black] * 5
    monitor, changes = _run(frames)
    assert _raised(changes) == [("black", True, 6.0)]  # never also "frozen", "covered" or "moved"
    assert monitor.active == {"black": 3.0}


def test_blank_image(day: list[Frame]) -> None:
    grey = np.full_like(day[0], (128, 96, 60))  # a uniform "no signal" screen, not dark
    _, changes = _run(day[:3] + [grey] * 5)
    assert _raised(changes) == [("blank", True, 6.0)]


def test_covered_or_defocused_lens(day: list[Frame]) -> None:
    blurred = [cv2.GaussianBlur(f, (0, 0), 4) for f in day[3:9]]
    _, changes = _run(day[:3] + blurred)
    assert _raised(changes) == [("covered", True, 6.0)]
    # A slight loss of focus is not a fault.
    _, changes = _run(day[:3] + [cv2.GaussianBlur(f, (0, 0), 0.8) for f in day[3:9]])
    assert changes == []


def _shift(frame: Frame, fraction: float) -> Frame:
    h, w = frame.shape[:2]
    matrix = np.float32([[1, 0, fraction * w], [0, 1, 0]])
    return cv2.warpAffine(frame, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_view_moved_from_its_reference(day: list[Frame]) -> None:
    moved = [_shift(f, 0.12) for f in day[3:9]]
    _, changes = _run(day[:3] + moved + day[9:14])
    assert _raised(changes) == [("moved", True, 6.0), ("moved", False, 11.0)]
    assert changes[0].details["shift"] == pytest.approx(0.12, abs=0.01)
    # A slight vibration is not a move.
    assert _run(day[:3] + [_shift(f, 0.02) for f in day[3:9]])[1] == []


def test_the_view_is_compared_every_view_interval_s(day: list[Frame]) -> None:
    moved = [_shift(f, 0.12) for f in day[3:9]]
    sparse = HealthConfig(alarm_after_s=3, clear_after_s=2, reference_after_s=0, view_interval_s=3)
    _, changes = _run(day[:3] + moved + day[9:14], sparse)
    # Landmarks compared at 0 (the reference), 3, 6, 9, 12: raised at 6 as before, cleared at 12 (the
    # first look 2 s after the view came back at 9), not at 11 as with a look every second.
    assert _raised(changes) == [("moved", True, 6.0), ("moved", False, 12.0)]


def test_thresholds_come_from_the_config(day: list[Frame]) -> None:
    moved = [_shift(f, 0.12) for f in day[3:9]]
    assert _run(day[:3] + moved, HealthConfig(alarm_after_s=3, reference_after_s=0, moved_shift=0.2))[1] == []
    blurred = [cv2.GaussianBlur(f, (0, 0), 4) for f in day[3:9]]
    _, changes = _run(day[:3] + blurred, HealthConfig(alarm_after_s=0, reference_after_s=0))
    assert _raised(changes) == [("covered", True, 3.0)]  # no delay at all
    monitor, changes = _run(day[:3] + [np.zeros_like(day[0])] * 5, HealthConfig(enabled=False))
    assert changes == [] and not monitor.due(100.0)
    checked = HealthMonitor(HealthConfig(interval_s=2), start_ts=0.0)
    checked.check(day[0], 0.0)
    assert not checked.due(1.5) and checked.due(2.0)


def test_the_reference_is_taken_on_the_clock_of_the_frames(day: list[Frame]) -> None:
    # A replay's frames are timed on the pipeline clock (a night in the past): the reference comes
    # reference_after_s after the first check, whatever the wall clock says.
    monitor = HealthMonitor(HealthConfig(alarm_after_s=0, reference_after_s=2))
    night = 1_795_000_000.0
    changes = [c for i, f in enumerate([*day[:3], cv2.GaussianBlur(day[3], (0, 0), 4)])
               for c in monitor.check(f, night + i)]
    assert _raised(changes) == [("covered", True, night + 3)]
