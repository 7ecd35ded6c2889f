"""Motion gate: ignore masks, heartbeat, and the one-by-one clip (no presence missed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.motion_gate import measure
from flux_secu.config import ConfigError, MotionConfig
from flux_secu.video.motion import MotionGate

from .conftest import LOWLIGHT_CLIP, build_config


@pytest.fixture(scope="module")
def empty_frame() -> npt.NDArray[np.uint8]:
    cap = cv2.VideoCapture(str(LOWLIGHT_CLIP))
    ok, frame = cap.read()
    assert ok
    return np.asarray(frame, np.uint8)


def _with_object(frame: npt.NDArray[np.uint8], x: float) -> npt.NDArray[np.uint8]:
    """The scene with a bright 12 % x 30 % object whose left edge is at ``x`` (share of the width)."""
    out = frame.copy()
    h, w = out.shape[:2]
    cv2.rectangle(out, (int(x * w), int(0.4 * h)), (int((x + 0.12) * w), int(0.7 * h)), (230, 230, 230), -1)
    return out


def _reasons(gate: MotionGate, frames: list[npt.NDArray[np.uint8]]) -> list[str]:
    return [gate.check(f, i / 5).reason for i, f in enumerate(frames)]


def test_changes_inside_an_ignore_polygon_do_not_count(empty_frame: npt.NDArray[np.uint8]) -> None:
    # Something moves in the left half (a road): the scene first, then the object at three places.
    frames = [empty_frame] + [_with_object(empty_frame, x) for x in (0.05, 0.15, 0.25)]
    assert _reasons(MotionGate(MotionConfig()), frames)[1:] == ["motion"] * 3
    road = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]
    masked = MotionGate(MotionConfig(ignore=[road], heartbeat_s=60))
    assert _reasons(masked, frames)[1:] == ["still"] * 3
    # The same object in the right half, outside the mask, is motion.
    right = [empty_frame] + [_with_object(empty_frame, x) for x in (0.6, 0.7, 0.8)]
    assert _reasons(MotionGate(MotionConfig(ignore=[road], heartbeat_s=60)), right)[1:] == ["motion"] * 3


def test_a_still_scene_is_still_analysed_on_a_heartbeat(empty_frame: npt.NDArray[np.uint8]) -> None:
    gate = MotionGate(MotionConfig(heartbeat_s=2.0))
    decisions = [gate.check(empty_frame, i / 5) for i in range(31)]  # 6 s at 5 fps
    assert [i for i, d in enumerate(decisions) if d.analyse] == [0, 10, 20, 30]
    assert {d.reason for d in decisions[1:] if d.analyse} == {"heartbeat"}


@pytest.mark.parametrize(("polygons", "message"), [
    ([[[0, 0], [1.5, 0], [0, 1]]], r"^sites\[0\]\.cameras\[0\]\.motion\.ignore\[0\]\[1\]\[0\]: .*less than"),
    ([[[0, 0], [1, 0]]], r"^sites\[0\]\.cameras\[0\]\.motion\.ignore: polygon 0 needs at least 3 points$"),
])
def test_ignore_polygons_are_validated(tmp_path: Path, polygons: list[Any], message: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["sites"][0]["cameras"][0]["motion"] = {"ignore": polygons}

    with pytest.raises(ConfigError, match=message):
        build_config(tmp_path, edit)


def test_one_by_one_clip_no_presence_missed() -> None:
    """The gate with its defaults on the shipped clip sampled at 5 fps (benchmarks/motion_gate.py)."""
    result = measure()
    assert result["missed_presences"] == 0
    for presence in result["presences"]:
        assert presence["first_sent_after_s"] <= 0.5  # the person is looked at as soon as they appear
        assert presence["longest_gap_s"] <= 2.0  # and at least every heartbeat while there
    # A settled empty room is mostly skipped: heartbeats (1 in 10 sampled frames) and little else.
    assert result["quiet_sent"] <= 0.5 * result["quiet_sampled"]
    assert result["occupied_sent"] >= 0.95 * result["occupied_sampled"]
