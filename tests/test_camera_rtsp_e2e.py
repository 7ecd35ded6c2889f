"""A camera actor on a real gst-rtsp-server, in the real actor graph (pool, detector, rules, store).

The server is killed: ``video_loss`` within 6 s; restarted on the same port: ``video_restored`` and
frames again. Meanwhile a second camera points at a port that answers random bytes: its errors are
logged (URL redacted) and retried, and nothing else is disturbed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from flux_secu.rules.incident import IncidentKind, IncidentState
from flux_secu.store import open_store
from flux_secu.store.base import StoredEvent

from .camera_helpers import GarbageServer, RtspServer, rtsp_server
from .conftest import build_config
from .test_pool import teardown
from .waiting import wait_for

__all__ = ["rtsp_server"]  # the fixture
pytestmark = pytest.mark.slow




@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_loss_restore_and_a_garbage_camera(tmp_path: Path, rtsp_server: RtspServer, transport: str,
                                                monkeypatch: pytest.MonkeyPatch, ray_session: None) -> None:
    """Over TCP the killed server closes the connection; over UDP the datagrams just stop, and only the
    silence (and the read timeout) tells."""
    import ray

    from flux_secu.actors.graph import Deployment

    garbage = GarbageServer()

    def cameras(data: dict[str, Any]) -> None:
        data["sites"][0]["cameras"] = [
            {"id": "cam-rtsp", "source": rtsp_server.url(), "transport": transport},
            {"id": "cam-garbage", "source": f"rtsp://127.0.0.1:{garbage.port}/stream", "username": "admin",
             "password": "${CAM_PASSWORD_FOR_TESTS}"},
        ]

    monkeypatch.setenv("CAM_PASSWORD_FOR_TESTS", "hunter2")
    config = build_config(tmp_path, cameras)
    site, (live_cfg, bad_cfg) = config.sites[0].id, config.sites[0].cameras
    dep = Deployment.build(config, dry_run=True)
    store = open_store(config.store)

    def fault_events(camera: str, kind: str) -> list[StoredEvent]:
        ids = [s.incident.id for s in store.incidents()
               if s.incident.camera == camera and s.incident.kind == IncidentKind.CAMERA_FAULT]
        return [e for i in ids for e in store.events(i) if e.kind == kind]

    try:
        live, bad = dep.add_camera(site, live_cfg), dep.add_camera(site, bad_cfg)
        wait_for("frames from the RTSP camera", lambda: ray.get(live.stats.remote())["frames_read"] > 20, 30)

        rtsp_server.kill()
        killed = time.time()
        (loss,) = wait_for("video_loss", lambda: fault_events("cam-rtsp", "video_loss"), 10)
        assert loss.ts - killed <= 6.0, loss
        assert ray.get(live.stats.remote())["link"] == "lost"

        rtsp_server.start()  # the same port, as a camera that rebooted
        read_before = ray.get(live.stats.remote())["frames_read"]
        (restored,) = wait_for("video_restored", lambda: fault_events("cam-rtsp", "video_restored"), 30)
        assert restored.ts > loss.ts
        wait_for("frames again", lambda: ray.get(live.stats.remote())["frames_read"] > read_before + 10, 10)
        faults = [s for s in store.incidents() if s.incident.camera == "cam-rtsp"]
        assert [(s.incident.kind, s.incident.label, s.state) for s in faults] == [
            (IncidentKind.CAMERA_FAULT, "video_loss", IncidentState.CLOSED)]

        # The garbage camera: a clear, redacted error, retried with back-off, never a crash.
        bad_stats = ray.get(bad.stats.remote())
        assert bad_stats["reconnects"] >= 3 and bad_stats["frames_read"] == 0
        assert bad_stats["last_error"] == f"cannot open video source rtsp://***@127.0.0.1:{garbage.port}/stream"
        assert garbage.connections >= 3
        assert fault_events("cam-garbage", "video_loss")  # it never sent a frame
        # Nothing else was disturbed: the live camera's frames were analysed, the rules answer.
        wait_for("analysed frames", lambda: ray.get(live.stats.remote())["frames_done"] > 0, 10)
        assert ray.get(dep.rules.stats.remote())["frames"] > 0
        assert not any(s.incident.kind == IncidentKind.INTRUSION and s.incident.camera == "cam-garbage"
                       for s in store.incidents())
        log_dir = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
        logs = "".join(p.read_text(errors="replace") for p in log_dir.glob("worker-*"))
        assert "camera_open_failed" in logs and "rtsp://***@127.0.0.1" in logs
        assert "hunter2" not in logs
    finally:
        store.close()
        teardown(dep)
        garbage.close()
