"""A camera whose source hangs (a real HTTP camera that stops sending, connection open): removing it
does not wait for its blocked read, the other camera of its host keeps reading, and the host ends
once the hung reader has ended (real Ray, real camera host, real MJPEG over a socket)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .camera_helpers import MjpegServer, jpeg_frames
from .conftest import LOWLIGHT_CLIP, build_config
from .waiting import wait_for

pytestmark = pytest.mark.slow

# The hung read ends at the read timeout (video_loss_after_s): far longer than the removal waits.
READ_TIMEOUT_S = 10.0




def test_removing_a_camera_whose_source_hangs_does_not_wait_for_its_read(
    tmp_path: Path, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.graph import Deployment

    server = MjpegServer(jpeg_frames(LOWLIGHT_CLIP, 10), fps=10)

    def edit(d: dict[str, Any]) -> None:
        base = d["sites"][0]["cameras"][0]
        base.update(detect_fps=1, motion={"enabled": False})
        hung = dict(base, id="hung", source=server.url(), video_loss_after_s=READ_TIMEOUT_S)
        d["sites"][0]["cameras"] = [hung, dict(base, id="other")]
        d["camera_hosts"] = {"cameras_per_host": 2}

    config = build_config(tmp_path, edit)
    dep = Deployment.build(config)
    try:
        for camera in config.sites[0].cameras:
            dep.add_camera(config.sites[0].id, camera)
        (host,) = dep.hosts  # both cameras in one process
        wait_for("both cameras reading", lambda: all(
            ray.get(dep.cameras[c].stats.remote())["frames_read"] >= 5 for c in ("hung", "other")))
        server.frozen.set()  # the connection stays open, nothing more comes: the read blocks
        run = dep.runs["hung"]
        stats = dep.remove_camera("hung")
        # Returned while the reader is still blocked in its read: it did not wait for it.
        assert stats is not None and stats["stopping"] is True and stats["camera"] == "hung"
        assert not ray.wait([run], timeout=0)[0]
        other = ray.get(dep.cameras["other"].stats.remote())["frames_read"]
        wait_for("the other camera keeps reading",
                 lambda: ray.get(dep.cameras["other"].stats.remote())["frames_read"] > other + 10)
        # The hung read ends at its timeout; the reader sees it was stopped and ends.
        ray.get(run, timeout=READ_TIMEOUT_S + 60)
        assert ray.get(host.actor.has.remote("hung")) is False
        # The last camera removed: its host ends once its reader ended.
        dep.remove_camera("other")
        wait_for("the emptied host ended", lambda: (dep.end_closed_hosts(), not dep.closing)[1])
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(host.actor.ready.remote(), timeout=30)
    finally:
        server.close()
        for actor in dep.actors():
            ray.kill(actor, no_restart=True)
