"""Reconnection back-off, the video_loss / video_restored watch, and camera faults in the store."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from flux_secu.config import StoreConfig
from flux_secu.rules.incident import IncidentKind, IncidentState
from flux_secu.store import open_store
from flux_secu.store.base import Store
from flux_secu.video.faults import CameraFault, fault_incident_id, record_camera_fault
from flux_secu.video.link import Backoff, LinkMonitor


def test_backoff_grows_exponentially_to_its_cap_and_resets() -> None:
    nominal = Backoff(0.5, 8.0, jitter=0.0)
    assert [nominal.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    nominal.reset()
    assert nominal.next() == 0.5


def test_backoff_jitter_spreads_cameras_that_failed_together() -> None:
    draws = itertools.cycle([0.0, 1.0, 0.5])
    jittered = Backoff(1.0, 30.0, jitter=0.2, rand=lambda: next(draws))
    assert [jittered.next() for _ in range(3)] == pytest.approx([0.8, 2.4, 4.0])
    # With the real random source, ten cameras failing at once retry at ten different moments.
    delays = {Backoff(1.0, 30.0).next() for _ in range(10)}
    assert len(delays) == 10 and all(0.8 <= d <= 1.2 for d in delays)


def test_video_loss_after_the_silence_and_restored_at_the_next_frame() -> None:
    link = LinkMonitor(loss_after_s=5.0, now=100.0)
    assert link.frame(100.5) is None
    assert link.poll(105.4) is None
    loss = link.poll(105.5)
    assert loss is not None and loss.kind == "video_loss" and loss.down_s == 5.0
    assert (loss.since, loss.ts) == (100.5, 105.5)
    assert link.lost and link.poll(200.0) is None  # raised once
    restored = link.frame(112.0)
    assert restored is not None and restored.kind == "video_restored"
    assert restored.since == 100.5 and restored.down_s == pytest.approx(11.5)
    assert not link.lost and link.frame(112.1) is None


def test_a_camera_that_never_sends_is_lost_too() -> None:
    link = LinkMonitor(loss_after_s=5.0, now=0.0)
    event = link.poll(5.0)
    assert event is not None and event.kind == "video_loss" and event.since == 0.0


def test_waiting_on_back_pressure_is_not_a_stalled_source() -> None:
    clock = iter([150.0])
    link = LinkMonitor(loss_after_s=5.0, now=100.0)
    link.frame(101.0)
    with link.blocked(lambda: next(clock)):
        assert link.poll(120.0) is None  # 19 s without a frame, but the camera was not reading
    assert link.poll(154.0) is None  # the silence counts from the end of the wait (150)
    event = link.poll(155.0)
    assert event is not None and event.since == 150.0


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(StoreConfig(path=tmp_path / "faults.db"))
    yield store
    store.close()


def test_a_fault_episode_is_one_camera_fault_incident(store: Store) -> None:
    loss = CameraFault("s", "cam", "video_loss", True, 105.0, 100.0, {"silent_s": 5.0})
    assert record_camera_fault(store, loss)
    assert not record_camera_fault(store, loss)  # a retried call changes nothing
    restored = CameraFault("s", "cam", "video_loss", False, 130.0, 100.0, {"silent_s": 30.0})
    assert record_camera_fault(store, restored)
    assert not record_camera_fault(store, restored)
    (stored,) = store.incidents()
    assert stored.incident.kind is IncidentKind.CAMERA_FAULT and stored.incident.label == "video_loss"
    assert stored.incident.id == fault_incident_id("cam", "video_loss", 100.0)
    assert stored.state is IncidentState.CLOSED
    assert [(e.kind, e.ts) for e in store.events(stored.incident.id)] == [
        ("opened", 100.0), ("video_loss", 105.0), ("video_restored", 130.0)]


def test_a_clear_whose_raise_was_lost_still_records_the_episode(store: Store) -> None:
    assert record_camera_fault(store, CameraFault("s", "cam", "covered", False, 50.0, 20.0))
    (stored,) = store.incidents()
    assert stored.incident.label == "covered" and stored.state is IncidentState.CLOSED
    assert [e.kind for e in store.events(stored.incident.id)] == ["opened", "covered", "covered_cleared"]
    # Two episodes of the same fault are two incidents; never an intrusion.
    record_camera_fault(store, CameraFault("s", "cam", "covered", True, 90.0, 80.0))
    assert [s.incident.kind for s in store.incidents()] == [IncidentKind.CAMERA_FAULT] * 2
