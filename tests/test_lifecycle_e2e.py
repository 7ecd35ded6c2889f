"""The incident lifecycle on the real pipeline: real Ray actors, real YOLOX-Nano, real store, the
shipped clips (or clips built from them here).

Each test is one way an intruder used to be lost: a lens covered after the warning (it ended
``deterred``), a cable cut (no frame, so no recheck: ``warned`` forever), the camera removed during the
recheck window, a second camera's sighting merged into an incident already deterred, and an
acknowledgement overwritten by the recheck that came after it.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flux_secu.config import Config
from flux_secu.rules.incident import IncidentKind, IncidentState
from flux_secu.store import open_store
from flux_secu.store.base import Store, StoredEvent

from .camera_helpers import RtspServer, rtsp_server
from .conftest import LOWLIGHT_CLIP, ONE_BY_ONE_CLIP, build_config
from .test_pool import teardown
from .waiting import wait_for

__all__ = ["rtsp_server"]  # the fixture
pytestmark = pytest.mark.slow
NIGHT = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)  # 23:00 in Paris: the test site is closed




def intrusions(store: Store, camera: str | None = None) -> list[Any]:
    return [s for s in store.incidents() if s.incident.kind == IncidentKind.INTRUSION
            and (camera is None or s.incident.camera == camera)]


def events(store: Store, incident_id: str, kind: str) -> list[StoredEvent]:
    return [e for e in store.events(incident_id) if e.kind == kind]


def state(store: Store, incident_id: str) -> IncidentState:
    stored = store.get_incident(incident_id)
    assert stored is not None
    return stored.state


def replay(dep: Any, config: Config, camera: int, clip: Path, start: datetime) -> dict[str, Any]:
    """Replay ``clip`` as the site's camera number ``camera`` on the pipeline clock from ``start``."""
    import ray

    cam = config.sites[0].cameras[camera].model_copy(update={"source": str(clip), "loop": False})
    dep.add_camera(config.sites[0].id, cam, realtime=False, clock_start=start)
    stats: dict[str, Any] = ray.get(dep.runs[cam.id], timeout=240)
    ray.get(dep.rules.flush.remote(), timeout=60)
    return stats


def warned_live(dep: Any, config: Config, store: Store, camera: int = 0) -> Any:
    """Start the site's camera live (its file paced like a camera) and wait for its warned intrusion."""
    dep.add_camera(config.sites[0].id, config.sites[0].cameras[camera])
    warned = wait_for("a warned intrusion", lambda: [
        s for s in intrusions(store) if events(store, s.incident.id, "warning")], 60)
    return warned[0].incident


def covered_clip(out: Path, cover_at_s: float) -> Path:
    """The one-by-one clip's first presence, and at ``cover_at_s`` a cloth over the lens: the picture
    goes to an even, dim grey with a little sensor noise, to the end."""
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(ONE_BY_ONE_CLIP), "-t", "20", "-an", "-vf",
         f"drawbox=x=0:y=0:w=iw:h=ih:color=0x303030@1:t=fill:enable='gte(t,{cover_at_s})',"
         f"noise=alls=3:allf=t:enable='gte(t,{cover_at_s})'",
         "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", str(out)],
        check=True, timeout=120)
    return out


def test_a_lens_covered_after_the_warning_escalates_within_5_s(tmp_path: Path, ray_session: None) -> None:
    from flux_secu.actors.graph import Deployment

    cover_at = 10.0  # the first person is warned at ~7 s: the cloth comes 3 s later
    clip = covered_clip(tmp_path / "covered.mp4", cover_at)
    config = build_config(tmp_path, lambda d: d["rules"].update(recheck_after_s=10))
    dep = Deployment.build(config, dry_run=True)
    store = open_store(config.store)
    try:
        replay(dep, config, 0, clip, NIGHT)
        (first, *_) = intrusions(store)
        inc = first.incident
        assert inc.clip_time_s is not None and inc.clip_time_s < cover_at
        assert events(store, inc.id, "warning")  # warned before the cloth
        (tampered, *_) = wait_for("tampered", lambda: events(store, inc.id, "tampered"), 30)
        assert tampered.data["camera"] == "cam-test"
        assert tampered.ts - (NIGHT.timestamp() + cover_at) <= 5.0, tampered  # on the clip's clock
        (escalated,) = wait_for("escalated", lambda: events(store, inc.id, "escalated"), 30)
        assert "neutralisée" in escalated.data["reason"], escalated.data
        assert state(store, inc.id) is IncidentState.ESCALATED
        assert not events(store, inc.id, "deterred")
        # The escalation came from the tamper, not from the recheck (due at 17 s, after it).
        assert not events(store, inc.id, "recheck")
    finally:
        store.close()
        teardown(dep)


def test_a_cut_camera_after_the_warning_escalates_within_the_video_loss_delay(
    tmp_path: Path, rtsp_server: RtspServer, ray_session: None
) -> None:
    from flux_secu.actors.graph import Deployment

    def edit(d: dict[str, Any]) -> None:
        d["rules"].update(recheck_after_s=60)  # the cut, not the recheck, must escalate it
        d["sites"][0]["cameras"] = [{"id": "cam-rtsp", "source": rtsp_server.url(), "detect_fps": 5}]

    config = build_config(tmp_path, edit)
    dep = Deployment.build(config, dry_run=True)
    store = open_store(config.store)
    try:
        dep.add_camera(config.sites[0].id, config.sites[0].cameras[0])
        warned = wait_for("a warned intrusion", lambda: [
            s for s in intrusions(store, "cam-rtsp") if events(store, s.incident.id, "warning")], 60)
        inc = warned[0].incident
        rtsp_server.kill()  # the intruder cuts the cable
        killed = time.time()
        (escalated,) = wait_for("escalated", lambda: events(store, inc.id, "escalated"), 20)
        loss_after = config.sites[0].cameras[0].video_loss_after_s
        assert escalated.ts - killed <= loss_after + 1.0, (escalated.ts - killed, loss_after)
        assert "neutralisée" in escalated.data["reason"] and "plus d'image" in escalated.data["reason"]
        assert state(store, inc.id) is IncidentState.ESCALATED
    finally:
        store.close()
        teardown(dep)


def test_the_incidents_camera_removed_during_the_recheck_window_is_still_rechecked(
    tmp_path: Path, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.graph import Deployment
    from flux_secu.reload import without_camera

    def edit(d: dict[str, Any]) -> None:
        d["rules"].update(recheck_after_s=6)
        d["sites"][0]["cameras"].append({"id": "cam-other", "source": str(LOWLIGHT_CLIP)})  # not started

    config = build_config(tmp_path, edit)
    dep = Deployment.build(config, dry_run=True)
    store = open_store(config.store)
    try:
        inc = warned_live(dep, config, store)
        dep.remove_camera("cam-test")
        ray.get(dep.rules.use_cameras.remote(without_camera(config, "cam-test"), ["cam-test"]))
        # No frame arrives any more; the clock alone brings the recheck, which cannot see through a
        # camera that is gone: unverifiable, so escalated.
        (recheck,) = wait_for("the recheck", lambda: events(store, inc.id, "recheck"), 30)
        assert recheck.data["verdict"] == "unverifiable" and "retirée" in recheck.data["detail"]
        (escalated,) = wait_for("escalated", lambda: events(store, inc.id, "escalated"), 10)
        assert "Vérification impossible" in escalated.data["reason"]
        assert state(store, inc.id) is IncidentState.ESCALATED
    finally:
        store.close()
        teardown(dep)


def test_a_person_on_camera_b_after_camera_as_incident_was_deterred_is_a_new_incident(
    tmp_path: Path, ray_session: None
) -> None:
    from flux_secu.actors.graph import Deployment

    def edit(d: dict[str, Any]) -> None:
        d["rules"].update(recheck_after_s=15, merge_window_s=30)
        # A shorter health debounce: "deterred" waits for tamper_after_s + interval_s of healthy
        # views after the recheck, and the clip ends 1.5 s after it.
        base = {"source": str(LOWLIGHT_CLIP), "detect_fps": 5,
                "health": {"interval_s": 0.5, "tamper_after_s": 0.5}}
        d["sites"][0]["cameras"] = [{"id": "cam-a", **base}, {"id": "cam-b", **base}]

    config = build_config(tmp_path, edit)
    dep = Deployment.build(config, dry_run=True)
    store = open_store(config.store)
    try:
        replay(dep, config, 0, LOWLIGHT_CLIP, NIGHT)  # warned at ~7 s, gone at 19 s, deterred at ~23 s
        (a, *_) = intrusions(store, "cam-a")
        deterred = events(store, a.incident.id, "deterred")
        assert deterred and state(store, a.incident.id) is IncidentState.DETERRED
        # Camera B sees someone ~20 s after A's incident was deterred, ~26 s after A's last sighting:
        # inside the merge window, but A's incident is over.
        replay(dep, config, 1, LOWLIGHT_CLIP, NIGHT + timedelta(seconds=38))
        (b, *_) = intrusions(store, "cam-b")
        assert b.incident.opened_at - deterred[0].ts >= 15
        assert b.incident.id != a.incident.id and not events(store, a.incident.id, "seen_by")
        assert events(store, b.incident.id, "warning")  # its own warning
        assert state(store, a.incident.id) is IncidentState.DETERRED
    finally:
        store.close()
        teardown(dep)


def test_an_acknowledgement_during_the_recheck_window_stays(tmp_path: Path, ray_session: None) -> None:
    import ray

    from flux_secu.actors.graph import Deployment

    config = build_config(tmp_path, lambda d: d["rules"].update(recheck_after_s=6))
    dep = Deployment.build(config, dry_run=True)
    store = open_store(config.store)
    try:
        inc = warned_live(dep, config, store)  # the person stays ~12 s
        escalation = dep.escalations[config.sites[0].id]
        assert ray.get(escalation.acknowledge.remote(inc.id, "Marc", "api"))
        # The recheck still looks (the person is still there) but cannot escalate an acknowledged
        # incident, nor turn it back into anything else.
        (recheck,) = wait_for("the recheck", lambda: events(store, inc.id, "recheck"), 30)
        assert recheck.data["still_there"] is True
        # flush waits (under the rules' lock, so after the recheck's own step) for every call handed to
        # the site's alerts: an escalation, if one were wrongly started, is in the store after it.
        ray.get(dep.rules.flush.remote())
        assert state(store, inc.id) is IncidentState.ACKNOWLEDGED
        assert not events(store, inc.id, "escalated") and not events(store, inc.id, "notification")
    finally:
        store.close()
        teardown(dep)
