"""Metrics bookkeeping (increments, camera health) and JSON log lines, without Ray."""

from __future__ import annotations

import json
import re

import pytest
import structlog

from flux_secu.logs import configure
from flux_secu.metrics import CameraTracker, Increments, exported_names

from .conftest import ROOT


def test_increments_between_polls_and_after_a_restart() -> None:
    inc = Increments()
    assert inc.delta(("cam-a", "frames_done"), 10) == 10
    assert inc.delta(("cam-a", "frames_done"), 25) == 15
    assert inc.delta(("cam-a", "frames_done"), 25) == 0
    assert inc.delta(("cam-a", "frames_done"), 4) == 4  # the actor restarted from zero: all of it is new
    assert inc.delta(("cam-b", "frames_done"), 7) == 7  # cameras are counted apart
    inc.forget(("cam-a",))
    assert inc.delta(("cam-a", "frames_done"), 30) == 30
    assert inc.delta(("cam-b", "frames_done"), 9) == 2


def stats(read: int, camera: str = "cam-a") -> dict[str, object]:
    return {"camera": camera, "site": "site-a", "frames_read": read, "frames_done": read // 2, "drops": 1}


def test_camera_fps_and_health_from_successive_polls() -> None:
    tracker = CameraTracker(stale_after_s=5.0)
    first = tracker.point(stats(100), now=1000.0)
    assert first.fps_in == 0.0 and first.healthy  # nothing to compare with yet
    assert first.counters["frames_done"] == 50 and first.counters["reconnects"] == 0
    p = tracker.point(stats(150), now=1002.0)
    assert p.fps_in == pytest.approx(25.0) and p.healthy and (p.site, p.camera) == ("site-a", "cam-a")
    assert tracker.point(stats(150), now=1004.0).healthy  # 2 s without a frame: not yet stale
    stalled = tracker.point(stats(150), now=1007.5)  # 5.5 s since the last frame
    assert stalled.fps_in == 0.0 and not stalled.healthy
    back = tracker.point(stats(160), now=1008.0)
    assert back.healthy and back.fps_in == pytest.approx(20.0)
    tracker.forget("cam-a")
    assert tracker.point(stats(5), now=1009.0).fps_in == 0.0


def test_every_json_log_line_names_site_and_camera(capsys: pytest.CaptureFixture[str]) -> None:
    configure(json_lines=True)
    try:
        log = structlog.get_logger("test")
        log.info("camera_started", site="site-a", camera="cam-a")
        log.bind(site="site-b").warning("pool_resized", actors=2)
        log.info("deployment_started")
    finally:
        configure(json_lines=False)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["event"], e["site"], e["camera"]) for e in lines] == [
        ("camera_started", "site-a", "cam-a"), ("pool_resized", "site-b", None),
        ("deployment_started", None, None),
    ]
    assert all({"timestamp", "level"} <= e.keys() for e in lines)


def test_the_grafana_dashboard_queries_only_series_that_flux_secu_exports() -> None:
    dashboard = json.loads((ROOT / "cluster" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"ray_flux_secu_[a-z_]+", e)}
    assert used <= exported_names(), used - exported_names()
    # Per camera: fps in, analysed, drops, reconnects, health; pool; rules; alerts.
    for name in ("camera_fps_in", "camera_frames_analysed_total", "camera_drops_total", "camera_healthy",
                 "camera_reconnects_total", "pool_queue_depth", "pool_batch_size_sum",
                 "pool_inference_latency_seconds_bucket", "incidents_total", "alert_warnings_total",
                 "alert_notifications_total", "alert_acknowledgements_total"):
        assert f"ray_flux_secu_{name}" in used, name
