"""Pure: the inference call's deadline, the per-camera forwarding order, the analysis_stalled watch."""

from __future__ import annotations

from flux_secu.detect.deadline import BatchClock, CameraOrder
from flux_secu.video.analysis import AnalysisWatch


def test_deadline_follows_the_slowest_recent_call_per_frame_with_a_floor() -> None:
    clock = BatchClock(factor=10, floor_s=2.0, window=3)
    assert not clock.measured and clock.deadline_s(4) == 2.0
    clock.record(0.5, 1)  # a slow warm-up: 0.5 s a frame
    assert clock.deadline_s(1) == 5.0 and clock.deadline_s(2) == 10.0
    for _ in range(3):  # fast calls push the slow one out of the window
        clock.record(0.04, 4)
    assert clock.deadline_s(4) == 2.0  # 10 x 4 x 0.01 s = 0.4 s: the floor
    clock.record(1.2, 2)  # the box is loaded: the deadline follows
    assert clock.deadline_s(1) == 6.0


def test_each_camera_forwards_in_its_own_order_and_a_failed_frame_frees_its_turn() -> None:
    order = CameraOrder()
    a0, a1, b0 = order.ticket("a"), order.ticket("a"), order.ticket("b")
    assert (a0, a1, b0) == (0, 1, 0)
    assert order.is_turn("a", 0) and not order.is_turn("a", 1)
    assert order.is_turn("b", 0)  # camera b never waits for camera a's frames
    order.finish("a", 1)  # a1 finished first (out of order): a0 still holds the turn
    assert order.is_turn("a", 0) and order.waiting("a") == 1
    order.finish("a", 0)  # a0 failed (a hung call): the turn moves past both
    assert order.is_turn("a", 2) and order.waiting("a") == 0
    assert order.ticket("a") == 2


def test_stalled_after_waiting_without_an_answer_cleared_at_the_next_one() -> None:
    watch = AnalysisWatch(5.0)
    watch.sent(100.0)
    assert watch.poll(104.9) is None
    watch.lost(102.0)  # the call failed: still no answer
    watch.dropped(103.0)  # and the next frame found no room
    watch.sent(104.0)
    event = watch.poll(105.0)
    assert event is not None and event.active and event.since == 100.0
    assert watch.stalled and watch.poll(106.0) is None  # raised once
    cleared = watch.answered(107.0)
    assert cleared is not None and not cleared.active and cleared.since == 100.0
    assert not watch.stalled and watch.answered(108.0) is None


def test_answers_the_camera_has_not_collected_are_not_a_stall() -> None:
    watch = AnalysisWatch(5.0)
    watch.sent(100.0)  # answered at once, but the reader is blocked in a dead source's read
    assert watch.poll(106.0, lambda: True) is None
    event = watch.poll(106.5, lambda: False)  # nothing came back: the pool is silent
    assert event is not None and event.since == 100.0


def test_a_camera_with_nothing_to_analyse_is_not_stalled() -> None:
    watch = AnalysisWatch(5.0)
    assert watch.poll(1000.0) is None  # never asked anything
    watch.sent(0.0)
    watch.answered(0.1)
    assert watch.poll(60.0) is None  # answered, then gated for a minute
    watch.sent(100.0)
    watch.lost(100.5)  # one failure, then nothing to send for a long time
    assert watch.poll(200.0) is None
    watch.sent(300.0)  # a new wait starts here, not at the old failure
    assert watch.poll(303.0) is None
    event = watch.poll(305.0)
    assert event is not None and event.since == 300.0
