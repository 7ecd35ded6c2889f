"""Pure camera-side logic: sampling, motion gate, newest-wins hand-over, batching, redaction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flux_secu.config import MotionConfig
from flux_secu.detect.batching import BatchPolicy, least_loaded
from flux_secu.redact import redact_channel, redact_text, redact_url
from flux_secu.video.motion import MotionGate
from flux_secu.video.sampling import FrameSampler
from flux_secu.video.slot import NewestWins

from .conftest import LOWLIGHT_CLIP


@pytest.mark.parametrize(("source_fps", "detect_fps", "expected"), [(10, 5, 50), (25, 5, 50), (10, 10, 100),
                                                                    (25, 2, 20), (10, 30, 100)])
def test_sampler_keeps_detect_fps(source_fps: int, detect_fps: float, expected: int) -> None:
    sampler = FrameSampler(detect_fps)
    taken = sum(sampler.take(i / source_fps) for i in range(10 * source_fps))
    assert taken == expected


def test_sampler_restarts_on_loop() -> None:
    sampler = FrameSampler(5)
    assert sampler.take(0.0) and not sampler.take(0.1) and sampler.take(0.2)
    assert sampler.take(0.0)  # the file looped


def test_newest_wins_counts_replaced_frames() -> None:
    slot: NewestWins[int] = NewestWins(max_in_flight=2)
    slot.offer(1)
    assert slot.take() == 1
    slot.offer(2)
    assert slot.take() == 2
    slot.offer(3)
    slot.offer(4)  # 3 replaced: dropped
    assert slot.take() is None  # both slots busy
    slot.finished()
    assert slot.take() == 4
    assert slot.drops == 1


def test_batch_policy() -> None:
    policy = BatchPolicy(max_batch=4, max_wait_ms=5)
    assert not policy.ready(0, 1.0)
    assert not policy.ready(2, 0.001)
    assert policy.ready(2, 0.006)
    assert policy.ready(4, 0.0)
    assert policy.wait_s(0.002) == pytest.approx(0.003)
    assert least_loaded([2, 0, 1]) == 1


def _frames(first: int, last: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(LOWLIGHT_CLIP))
    frames = []
    for i in range(last + 1):
        ok, frame = cap.read()
        assert ok
        if i >= first:
            frames.append(frame)
    return frames


def test_motion_gate_on_the_lowlight_clip() -> None:
    gate = MotionGate(MotionConfig(heartbeat_s=2.0, hold_s=1.0))
    decisions = [gate.check(f, i / 10) for i, f in enumerate(_frames(0, 100))]
    empty = decisions[1:60]  # nobody until frame 63
    occupied = decisions[66:100]
    assert decisions[0].reason == "start"
    assert sum(d.analyse for d in empty) <= 4  # heartbeats only
    assert all(d.analyse for d in occupied)
    assert any(d.reason == "motion" for d in occupied)


def test_motion_gate_recalibrates_on_global_change() -> None:
    gate = MotionGate(MotionConfig())
    frame = _frames(10, 10)[0]
    gate.check(frame, 0.0)
    brighter = cv2.convertScaleAbs(frame, alpha=1.0, beta=120)  # IR switch / headlights
    assert gate.check(brighter, 0.2).reason == "recalibrated"
    assert not gate.check(brighter, 0.4).analyse  # the new scene is the background now


def test_redaction() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/stream1") == "rtsp://***@10.0.0.5:554/stream1"
    assert redact_url("http://cam/mjpeg?user=a&token=s3cret") == "http://cam/mjpeg?user=***&token=***"
    # Every query value by default, whatever its name; a short allow-list stays readable.
    for name in ("passwd", "access_token", "apikey", "api_key", "sig", "X-Amz-Signature", "unheard_of"):
        assert redact_url(f"rtsp://cam/live?{name}=s3cret&channel=1") == f"rtsp://cam/live?{name}=***&channel=1"
    assert redact_text("open failed: rtsp://a:b@cam/x?passwd=s3cret (timeout)") == \
        "open failed: rtsp://***@cam/x?passwd=*** (timeout)"
    assert redact_url("/var/clips/a.mp4") == "/var/clips/a.mp4"
    assert redact_channel("tgram://123:ABC/456") == "tgram://***"


def test_batches_keep_frames_on_their_node() -> None:
    from flux_secu.detect.batching import route_batch

    # Oldest frame on node a: a batch of a's frames only, to a's least loaded actor.
    route = route_batch(["a", "b", "a", "a"], ["b", "a", "a"], [0, 1, 0], max_batch=2, max_load=2)
    assert route is not None and (route.member, route.frames, route.local) == (2, [0, 2], True)
    # a's actors are full: b's frames go ahead, a's wait (never to b's idle actor).
    route = route_batch(["a", "b", "a"], ["a", "b"], [2, 0], max_batch=4, max_load=2)
    assert route is not None and (route.member, route.frames) == (1, [1])
    assert route_batch(["a", "a"], ["a", "b"], [2, 0], max_batch=4, max_load=2) is None
    # A node without any inference actor: its frames go to the least loaded one, flagged remote.
    route = route_batch(["c", "c"], ["a", "b"], [1, 0], max_batch=4, max_load=2)
    assert route is not None and (route.member, route.frames, route.local) == (1, [0, 1], False)
    # Unknown node (no Ray placement info, a replay): any actor, as before.
    route = route_batch(["", ""], ["a"], [0], max_batch=1, max_load=2)
    assert route is not None and (route.member, route.frames, route.local) == (0, [0], True)
