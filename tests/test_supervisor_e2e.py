"""A running deployment changed while it runs: cameras added and removed, reload, the CLI, metrics.

One deployment (three cameras on a small looping clip) serves the whole module; each test leaves it
with those three cameras. The clip is scaled down in a temporary file so that a dozen cameras decode
on two cores without starving each other: what is measured is the supervisor's changes, not the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_secu.config import AutoscaleConfig, Config, parse_config
from flux_secu.rules.incident import Incident, IncidentKind
from flux_secu.store import SQLiteStore

from .conftest import FLUX_SECU, LOWLIGHT_CLIP, site_yaml

pytestmark = pytest.mark.slow

BASE = ["cam-0", "cam-1", "cam-2"]
MISSES = ("drops", "frames_lost", "reconnects")
EXPIRED = "intrusion-cam-a-1"
# One analysed frame a second: a camera drops a frame only when it cannot hand frames over for ~3 s, so
# a change that disturbed it shows, while a second of CPU taken by someone else on a shared box does not.
DETECT_FPS = 1


@dataclass
class Running:
    supervisor: Any
    data: dict[str, Any]
    config: Config
    clip: Path
    other_clip: Path
    address: str
    tmp: Path


def small_clip(src: Path, dst: Path, width: int) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-vf", f"scale={width}:-2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-an", str(dst)], check=True)
    return dst


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Iterator[Running]:
    import ray

    from flux_secu.actors.supervisor import create_supervisor

    tmp = tmp_path_factory.mktemp("supervisor")
    clip = small_clip(LOWLIGHT_CLIP, tmp / "small.mp4", 160)
    other = small_clip(LOWLIGHT_CLIP, tmp / "other.mp4", 192)
    os.environ.setdefault("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    data = yaml.safe_load(site_yaml(var_dir=str(tmp / "var")))
    camera = data["sites"][0]["cameras"][0]
    # Every sampled frame goes to the detector (no motion gate): a missed frame cannot hide as "gated".
    camera.update(source=str(clip), detect_fps=DETECT_FPS, motion={"enabled": False})
    data["sites"][0]["cameras"] = [dict(camera, id=cid) for cid in BASE]
    # One frame per batch: every batch is full, which is what the autoscaling test needs to see.
    data["inference"] = {"max_batch": 1}
    # Two cameras per host process: the base cameras span two hosts, and adding cameras starts new ones.
    data["camera_hosts"] = {"cameras_per_host": 2}
    config = parse_config(data, tmp)
    # Evidence of an intrusion 31 days old, which the supervisor must purge when it starts.
    old = config.evidence_dir / EXPIRED
    old.mkdir(parents=True)
    (old / "snapshot.jpg").write_bytes(b"jpeg")
    store = SQLiteStore(config.store.path)
    store.open_incident(Incident(EXPIRED, IncidentKind.INTRUSION, "site-test", "cam-a", "person",
                                 time.time() - 31 * 86_400))
    store.close()
    supervisor = create_supervisor(config)
    ray.get(supervisor.start.remote())
    try:
        yield Running(supervisor, data, config, clip, other, ray.get_runtime_context().gcs_address, tmp)
    finally:
        ray.get(supervisor.stop.remote())
        ray.kill(supervisor)


def test_the_supervisor_purges_expired_evidence(running: Running) -> None:
    folder = running.config.evidence_dir / EXPIRED
    store = SQLiteStore(running.config.store.path)
    try:
        # The purge deletes the folder and then records the event: wait for the event, not the folder.
        deadline = time.monotonic() + 20
        purged: list[Any] = []
        while not purged and time.monotonic() < deadline:
            purged = [e for e in store.events(EXPIRED) if e.kind == "evidence_purged"]
            time.sleep(0.2)
    finally:
        store.close()
    assert not folder.exists()
    assert len(purged) == 1 and purged[0].data["files"] == ["snapshot.jpg"]


def cameras(r: Running) -> dict[str, dict[str, Any]]:
    import ray

    return {row["camera"]: row for row in ray.get(r.supervisor.cameras.remote())}


def wait_analysed(r: Running, ids: list[str], minimum: int = 2, timeout_s: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = cameras(r)
        if all(rows[c]["state"] == "running" and rows[c]["frames_done"] >= minimum for c in ids):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)


def assert_kept_running(
    before: dict[str, Any], after: dict[str, Any], ids: list[str], seconds: float
) -> None:
    """Same reader all along (counters never went back), no frame dropped, lost or reconnected, and the
    reading kept pace with the clip."""
    for cid in ids:
        b, a = before[cid], after[cid]
        assert a["state"] == "running", a
        assert a["instance"] == b["instance"] and a["host"] == b["host"], cid
        assert a["frames_read"] > b["frames_read"], (cid, b, a)
        assert {k: a[k] - b[k] for k in MISSES} == dict.fromkeys(MISSES, 0), (cid, b, a)
        sampled = a["frames_sampled"] - b["frames_sampled"]
        assert sampled >= DETECT_FPS * seconds - 2, (cid, sampled, seconds)
        # Every sampled frame went to the detector, and all but those still in flight came back. The
        # counters are read while the reader runs: it counts a frame sampled before it letterboxes and
        # sends it, so one frame may be between the two.
        assert a["frames_sent"] <= a["frames_sampled"] <= a["frames_sent"] + 1, (cid, a)
        assert a["frames_done"] + a["in_flight"] == a["frames_sent"]


def test_adding_10_cameras_then_removing_5_does_not_disturb_the_others(running: Running) -> None:
    import ray

    r = running
    before = wait_analysed(r, BASE)
    t0 = time.monotonic()
    base = r.config.sites[0].cameras[0]
    added = [f"new-{i}" for i in range(10)]
    for cid in added:
        ray.get(r.supervisor.add_camera.remote("site-test", base.model_copy(update={"id": cid})))
    middle = wait_analysed(r, added, minimum=1)
    t_middle = time.monotonic()
    for cid in added[:5]:
        last = ray.get(r.supervisor.remove_camera.remote(cid))
        assert last["in_flight"] == 0 and last["frames_done"] == last["frames_sent"]  # drained, not cut
    time.sleep(1.0)
    after = cameras(r)
    t1 = time.monotonic()

    assert list(after) == [*BASE, *added[5:]]
    assert_kept_running(before, after, BASE, t1 - t0)
    assert_kept_running(middle, after, added[5:], t1 - t_middle)
    for cid in added[5:]:  # and they, like the first ones, missed nothing from their start
        assert {k: after[cid][k] for k in MISSES} == dict.fromkeys(MISSES, 0)

    for cid in added[5:]:
        ray.get(r.supervisor.remove_camera.remote(cid))
    assert list(cameras(r)) == BASE


def flux(r: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FLUX_SECU), *args, "--address", r.address], capture_output=True, text=True,
                          timeout=60, env={**os.environ})


def test_reload_with_a_changed_url_restarts_only_that_camera(running: Running) -> None:
    r = running
    before = wait_analysed(r, BASE)
    data = json.loads(json.dumps(r.data))
    data["sites"][0]["cameras"][1]["source"] = str(r.other_clip)
    path = r.tmp / "changed.yaml"
    path.write_text(yaml.safe_dump(data))
    t0 = time.monotonic()
    result = flux(r, "reload", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "restarted: cam-1" in result.stdout and "unchanged: 2 camera(s)" in result.stdout
    after = wait_analysed(r, BASE, minimum=1)
    assert_kept_running(before, after, ["cam-0", "cam-2"], time.monotonic() - t0)
    assert after["cam-1"]["source"] == str(r.other_clip)
    assert after["cam-1"]["instance"] != before["cam-1"]["instance"]  # a new reader, of the new source

    # A change the running deployment cannot take is refused whole: nothing restarts.
    data["sites"][0]["escalation"]["ack_timeout_s"] = 60
    data["sites"][0]["cameras"][2]["detect_fps"] = 1
    path.write_text(yaml.safe_dump(data))
    refused = flux(r, "reload", str(path))
    assert refused.returncode == 2
    assert "sites[site-test].escalation" in refused.stderr and "nothing was changed" in refused.stderr
    unchanged = cameras(r)
    assert [unchanged[c]["instance"] for c in BASE] == [after[c]["instance"] for c in BASE]


def test_cli_adds_lists_removes_cameras_and_scales_the_pool(running: Running) -> None:
    import ray

    r = running
    added = flux(r, "cameras", "add", "site-test", "cli-cam", str(r.clip), "--detect-fps", "1")
    assert added.returncode == 0, added.stderr[-2000:]
    assert added.stdout.strip() == "cli-cam: added to site-test"
    listed = flux(r, "cameras", "list", "--json")
    rows = {row["camera"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert list(rows) == [*BASE, "cli-cam"] and rows["cli-cam"]["state"] == "running"

    wrong = flux(r, "cameras", "add", "nowhere", "cam-x", str(r.clip))
    assert wrong.returncode == 2 and "unknown site 'nowhere' (known: site-test)" in wrong.stderr
    bad = flux(r, "cameras", "add", "site-test", "cam-y", str(r.tmp / "missing.mp4"))
    assert bad.returncode == 2 and "camera: source: file not found" in bad.stderr

    scaled = flux(r, "pool", "scale", "2")
    assert scaled.returncode == 0 and scaled.stdout.strip() == "pool: 2 inference actor(s)"
    assert ray.get(r.supervisor.pool_stats.remote())["actors"] == 2

    second = r.tmp / "second.yaml"
    second.write_text(yaml.safe_dump(r.data))
    again = flux(r, "run", str(second), "--detach")  # one deployment per cluster
    assert again.returncode == 2 and "already runs on this Ray cluster" in again.stderr

    removed = flux(r, "cameras", "remove", "cli-cam")
    assert removed.returncode == 0 and removed.stdout.startswith("cli-cam: removed after ")
    assert list(cameras(r)) == BASE
    ray.get(r.supervisor.scale_pool.remote(1))


def test_a_crashed_camera_host_is_brought_back_and_its_cameras_read_again(running: Running) -> None:
    """Killing a host process (two cameras per host here) takes its cameras down; Ray restarts the
    process and the supervisor starts their reading again. The other host's cameras never notice."""
    import ray

    r = running
    before = wait_analysed(r, BASE)
    assert len({before[c]["host"] for c in BASE}) >= 2, before  # two cameras per host at most
    ray.kill(ray.get(r.supervisor.camera_actor.remote("cam-2")), no_restart=False)  # a crash: Ray restarts it
    hit = [c for c in BASE if before[c]["host"] == before["cam-2"]["host"]]
    spared = [c for c in BASE if c not in hit]
    deadline = time.monotonic() + 30
    while True:
        rows = cameras(r)
        if all(rows[c]["restarts"] == 1 and rows[c]["state"] == "running" and rows[c]["frames_done"] > 0
               for c in hit):
            break
        assert time.monotonic() < deadline, {c: rows[c] for c in hit}
        time.sleep(0.5)
    for c in hit:  # the same host actor, restarted by Ray, with a new reader for each of its cameras
        assert rows[c]["host"] == before[c]["host"] and rows[c]["instance"] != before[c]["instance"], c
    assert [rows[c]["restarts"] for c in spared] == [0] * len(spared)
    assert all(rows[c]["instance"] == before[c]["instance"] for c in spared)


def test_metrics_endpoint_exposes_per_camera_series(running: Running) -> None:
    import ray
    from prometheus_client.parser import text_string_to_metric_families

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    deadline = time.monotonic() + 40  # Ray's agent exports recorded values every few seconds

    def scrape() -> dict[str, list[Any]]:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return {f.name: f.samples for f in text_string_to_metric_families(body) if "flux_secu" in f.name}

    def by_camera(samples: list[Any], name: str) -> dict[str, float]:
        return {s.labels["camera"]: s.value for s in samples if s.name == name}

    while True:
        families = scrape()
        analysed = by_camera(families.get("ray_flux_secu_camera_frames_analysed", []),
                             "ray_flux_secu_camera_frames_analysed_total")
        fps = by_camera(families.get("ray_flux_secu_camera_fps_in", []), "ray_flux_secu_camera_fps_in")
        # A camera restarted by the previous test reads 0 fps on its first poll (its counters restart).
        if (all(analysed.get(c, 0) > 0 and fps.get(c, 0) > 0 for c in BASE)
                and "ray_flux_secu_pool_batch_size" in families):
            break
        assert time.monotonic() < deadline, sorted(families)
        time.sleep(2)
    for cid in BASE:
        assert analysed[cid] > 0
    healthy = by_camera(families["ray_flux_secu_camera_healthy"], "ray_flux_secu_camera_healthy")
    assert all(5 <= fps[c] <= 15 for c in BASE), fps  # the clip plays at 10 frames/s
    assert all(healthy[c] == 1 for c in BASE)
    assert healthy.get("new-0", 0) == 0  # removed earlier: not left at its last value
    drops = by_camera(families["ray_flux_secu_camera_drops"], "ray_flux_secu_camera_drops_total")
    assert all(drops[c] == 0 for c in BASE), drops  # a series from the start, at 0
    for family in ("ray_flux_secu_camera_drops", "ray_flux_secu_camera_reconnects",
                   "ray_flux_secu_pool_queue_depth", "ray_flux_secu_pool_inference_latency_seconds",
                   "ray_flux_secu_incidents"):
        assert family in families, sorted(families)
    sizes = {s.name: s.value for s in families["ray_flux_secu_pool_batch_size"]}
    assert sizes["ray_flux_secu_pool_batch_size_count"] > 0
    incidents = {s.labels["kind"]: s.value for s in families["ray_flux_secu_incidents"]
                 if s.name.endswith("_total")}
    assert incidents.get("intrusion", 0) >= 1  # the clip's person, on a site closed all day


def test_autoscaling_switched_on_by_reload_grows_the_pool_within_its_bounds(running: Running) -> None:
    import ray

    r = running
    config = ray.get(r.supervisor.running_config.remote())
    auto = AutoscaleConfig(min_actors=1, max_actors=2, interval_s=1, up_after=2)
    inference = config.inference.model_copy(update={"autoscale": auto})
    summary = ray.get(r.supervisor.reload.remote(config.model_copy(update={"inference": inference})))
    assert summary["restarted"] == [] and summary["added"] == [] and summary["removed"] == []
    deadline = time.monotonic() + 30
    while ray.get(r.supervisor.pool_stats.remote())["actors"] < 2:  # full batches: saturated
        assert time.monotonic() < deadline
        time.sleep(0.5)
    time.sleep(3)
    assert ray.get(r.supervisor.pool_stats.remote())["actors"] == 2  # and never beyond max_actors
    with pytest.raises(ValueError, match=r"outside the autoscaling bounds \[1, 2\]"):
        ray.get(r.supervisor.scale_pool.remote(3))
