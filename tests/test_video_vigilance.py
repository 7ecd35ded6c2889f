"""Vigilance: when a camera may decode key frames only, and when it must decode every frame again."""

from __future__ import annotations

from flux_secu.video.vigilance import Vigilance


def keys(v: Vigilance, start: float, every: float, count: int) -> None:
    for i in range(count):
        v.key_frame(start + i * every)


def test_a_still_camera_with_a_short_gop_goes_quiet_after_the_delay() -> None:
    v = Vigilance(quiet_after_s=30, max_gop_s=2)
    keys(v, 0, 2, 3)
    assert v.mode(100.0) == "watching"  # a camera starts watching
    assert v.mode(129.9) == "watching"
    assert v.mode(130.0) == "quiet"


def test_motion_or_the_rules_wake_it_and_restart_the_delay() -> None:
    v = Vigilance(quiet_after_s=30, max_gop_s=2)
    keys(v, 0, 1, 3)
    v.mode(0.0)
    assert v.mode(40.0) == "quiet"
    v.wake(41.0)
    assert v.mode(41.0) == "watching" and v.mode(70.9) == "watching" and v.mode(71.0) == "quiet"
    v.wake(10.0)  # a late word about an older frame never shortens the watch
    assert v.mode(71.0) == "quiet"


def test_a_long_or_unknown_gop_keeps_every_frame_decoded() -> None:
    v = Vigilance(quiet_after_s=30, max_gop_s=2)
    v.mode(0.0)
    assert v.mode(100.0) == "watching"  # no key frame seen yet: GOP unknown
    keys(v, 0, 2, 2)
    keys(v, 12, 10, 1)  # one 10 s gap ("smart" GOP in a still scene) among the last four
    assert v.gop_s == 10 and v.mode(100.0) == "watching"
    keys(v, 13, 1, 4)  # four short ones push it out
    assert v.gop_s == 1 and v.mode(100.0) == "quiet"


def test_the_source_going_back_forgets_its_gaps_and_zero_disables_quiet() -> None:
    v = Vigilance(quiet_after_s=30, max_gop_s=2)
    keys(v, 50, 1, 3)
    v.key_frame(0.0)  # a loop or a reconnection
    assert v.gop_s is None
    never = Vigilance(quiet_after_s=0, max_gop_s=2)
    keys(never, 0, 1, 5)
    never.mode(0.0)
    assert never.mode(1e6) == "watching"
