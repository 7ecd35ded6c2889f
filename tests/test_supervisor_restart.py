"""The supervisor's own crash (``ray.kill`` of its process during a detached run with 4 cameras): Ray
restarts it, it adopts the actors still running, the cameras never stop reading, ``cameras list``
answers again, and a person who enters after the crash still becomes an incident with its warning.

Real Ray, real camera hosts reading real files, real YOLOX-Nano, the real CLI over the cluster's
address. Every wait is for a condition; the time to answer again is measured in the benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_secu.config import parse_config
from flux_secu.rules.incident import IncidentKind
from flux_secu.store import SQLiteStore

from .conftest import FLUX_SECU, LOWLIGHT_CLIP, site_yaml
from .test_supervisor_e2e import small_clip
from .waiting import wait_for

pytestmark = pytest.mark.slow

CAMERAS = ["cam-0", "cam-1", "cam-2", "cam-3"]




def flux(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FLUX_SECU), *args, "--address", address], capture_output=True, text=True,
                          timeout=60, env={**os.environ})


def listed(address: str) -> dict[str, dict[str, Any]] | None:
    result = flux(address, "cameras", "list", "--json")
    if result.returncode != 0:
        return None
    return {row["camera"]: row for row in map(json.loads, result.stdout.splitlines())}


def test_a_killed_supervisor_comes_back_and_adopts_the_running_deployment(
    tmp_path: Path, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.camera_host import host_name
    from flux_secu.actors.supervisor import get_supervisor

    clip = small_clip(LOWLIGHT_CLIP, tmp_path / "small.mp4", 160)
    # The four cameras see an empty scene (the clip's first 6 s, looped): no incident is open on the
    # site before the crash, so the person after it cannot merge into one.
    empty = tmp_path / "empty.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-t", "6", "-c", "copy",
                    str(empty)], check=True)
    os.environ.setdefault("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    data = yaml.safe_load(site_yaml(var_dir=str(tmp_path / "var")))  # no opening hours: always closed
    camera = data["sites"][0]["cameras"][0]
    camera.update(source=str(empty), detect_fps=1, motion={"enabled": False})
    data["sites"][0]["cameras"] = [dict(camera, id=cid) for cid in CAMERAS]
    data["camera_hosts"] = {"cameras_per_host": 2}  # two host processes
    config = parse_config(data, tmp_path)
    path = tmp_path / "flux.yaml"
    path.write_text(yaml.safe_dump(data))
    address = ray.get_runtime_context().gcs_address
    # Detached: the command returns once everything runs, and no driver of the deployment is left.
    started = flux(address, "run", str(path), "--detach")
    assert started.returncode == 0, started.stderr[-3000:]
    supervisor = get_supervisor()
    store = SQLiteStore(config.store.path)
    try:
        before = wait_for("every camera reading", lambda: (rows := listed(address)) and all(
            rows[c]["frames_read"] > 0 for c in CAMERAS) and rows)
        deployment = json.loads(json.dumps(store.get_setting("supervisor:deployment")))
        assert deployment["state"] == "running"
        assert [c["config"]["id"] for c in deployment["cameras"]] == CAMERAS
        hosts = {c["config"]["id"]: ray.get_actor(c["host"]) for c in deployment["cameras"]}
        assert {c["host"] for c in deployment["cameras"]} == {host_name(deployment["deployment_id"], i)
                                                              for i in range(2)}
        killed_at = time.time()
        ray.kill(supervisor, no_restart=False)  # its process dies; Ray starts it again

        # While it is down and after, the cameras read on: the same readers, counters growing.
        def reading() -> dict[str, dict[str, Any]] | None:
            now = {c: ray.get(hosts[c].stats.remote(c)) for c in CAMERAS}
            grown = all(now[c]["frames_read"] > before[c]["frames_read"] + 10 for c in CAMERAS)
            return now if grown else None

        now = wait_for("the cameras reading on", reading)
        assert all(now[c]["instance"] == before[c]["instance"] for c in CAMERAS)
        after = wait_for("cameras list answering again", lambda: listed(address))
        assert list(after) == CAMERAS
        for c in CAMERAS:
            assert after[c]["state"] == "running" and after[c]["instance"] == before[c]["instance"]
            assert after[c]["frames_read"] > before[c]["frames_read"]
        assert get_supervisor() is not None

        # A person after the crash: a camera added through the restarted supervisor, whose clip has
        # someone walking in at 6.3 s, on a site that is closed.
        assert not [s for s in store.incidents() if s.incident.kind == IncidentKind.INTRUSION]
        added = flux(address, "cameras", "add", "site-test", "cam-late", str(clip), "--detect-fps", "2")
        assert added.returncode == 0, added.stderr[-2000:]

        def warned() -> list[Any]:
            return [s for s in store.incidents()
                    if s.incident.camera == "cam-late" and s.incident.kind == IncidentKind.INTRUSION
                    and s.incident.opened_at > killed_at
                    and any(e.kind == "warning" for e in store.events(s.incident.id))]

        assert wait_for("an intrusion on cam-late with its warning", warned)
        rows = wait_for("cam-late listed", lambda: (r := listed(address)) and "cam-late" in r and r)
        assert rows["cam-late"]["state"] == "running"
        record = store.get_setting("supervisor:deployment")
        assert record is not None and record["deployment_id"] == deployment["deployment_id"]
        assert [c["config"]["id"] for c in record["cameras"]] == [*CAMERAS, "cam-late"]
    finally:
        store.close()
        supervisor = get_supervisor()
        ray.get(supervisor.stop.remote(), timeout=120)
        ray.kill(supervisor)
    record = SQLiteStore(config.store.path)
    try:
        assert (record.get_setting("supervisor:deployment") or {})["state"] == "stopped"
    finally:
        record.close()
