"""The inference pool with real actors: batching under load, crash and restart, resizing, drops."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from flux_secu.config import CameraConfig, Config

from .conftest import build_config
from .slow_model import calibrated_slow_yolov8

pytestmark = pytest.mark.slow


def cameras(config: Config, count: int, **changes: Any) -> list[CameraConfig]:
    base = config.sites[0].cameras[0]
    motion = base.motion.model_copy(update={"enabled": False})
    return [base.model_copy(update={"id": f"cam-{i}", "motion": motion, **changes}) for i in range(count)]


def replay(dep: Any, config: Config, count: int, **changes: Any) -> list[Any]:
    from datetime import UTC, datetime

    start = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
    return [dep.add_camera(config.sites[0].id, cam, realtime=False, clock_start=start)
            for cam in cameras(config, count, loop=False, **changes)]


def teardown(dep: Any) -> None:
    import ray

    for actor in dep.actors():
        ray.kill(actor, no_restart=True)


def test_batches_form_across_cameras_under_load(tmp_path: Path, ray_session: None) -> None:
    import ray

    from flux_secu.actors.graph import Deployment

    config = build_config(tmp_path, lambda d: d.update(inference={"max_batch": 4, "max_wait_ms": 30}))
    dep = Deployment.build(config)
    try:
        replay(dep, config, 4)
        stats = ray.get(list(dep.runs.values()), timeout=180)
        hist = ray.get(dep.pool.stats.remote())["batch_hist"]
        assert max(hist) > 1, hist  # frames of several cameras shared a model call
        assert max(hist) <= 4
        for s in stats:  # a replay waits for a slot instead of dropping: every frame sent is analysed
            assert s["frames_sampled"] == 120 and s["drops"] == 0
            # Not sent: gated (no motion) or left out while following a confirmed presence at 1 fps.
            not_sent = s["frames_gated"] + s["frames_skipped_following"]
            assert s["frames_done"] == s["frames_sent"] == 120 - not_sent
        assert sum(size * n for size, n in hist.items()) == sum(s["frames_done"] for s in stats)
    finally:
        teardown(dep)


def test_crashed_inference_actor_is_restarted_and_cameras_keep_going(
    tmp_path: Path, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.graph import Deployment

    # A detector slow enough that a batch is surely being computed when the actor is killed: the
    # real one answers in milliseconds, and a kill at a fixed moment often found nothing in flight.
    model, per_frame = calibrated_slow_yolov8(tmp_path / "slow.onnx", 0.05)
    config = build_config(tmp_path, lambda d: d.update(model={"path": str(model), "kind": "yolov8"}))
    dep = Deployment.build(config)
    try:
        runs = replay(dep, config, 3, detect_fps=2)
        deadline = time.monotonic() + 120
        while True:  # steady flow first (each camera analysed a few frames), then one batch in flight
            pool = ray.get(dep.pool.stats.remote())
            if pool["batches"] >= 6 and pool["in_flight_batches"] > 0:
                break
            assert time.monotonic() < deadline, pool
            time.sleep(per_frame / 5)
        (inference,) = ray.get(dep.pool.actor_handles.remote())
        ray.kill(inference, no_restart=False)  # a crash: Ray restarts it
        stats = [ray.get(dep.runs[c.id], timeout=180) for c in cameras(config, 3)]
        assert len(runs) == 3
        lost = sum(s["frames_lost"] for s in stats)
        assert lost > 0  # the batches in flight at the crash are lost, and counted
        assert lost == ray.get(dep.pool.stats.remote())["failed_frames"]
        for s in stats:  # no camera stalled: every other frame was analysed after the restart
            assert s["frames_gated"] == s["frames_skipped_following"] == 0  # no motion gate, nobody seen
            assert s["frames_done"] + s["frames_lost"] == s["frames_sent"] == s["frames_sampled"]
            assert s["frames_sampled"] == 48 and s["frames_done"] > 0.5 * s["frames_sent"]
    finally:
        teardown(dep)


def test_pool_resizes_while_a_camera_runs(tmp_path: Path, ray_session: None) -> None:
    import ray

    from flux_secu.actors.graph import Deployment

    config = build_config(tmp_path)
    dep = Deployment.build(config)
    try:
        camera = dep.add_camera(config.sites[0].id, cameras(config, 1)[0])
        done = []
        for size in (2, 1):
            time.sleep(2)
            assert ray.get(dep.pool.resize.remote(size)) == size
            assert ray.get(dep.pool.stats.remote())["actors"] == size
            done.append(ray.get(camera.stats.remote())["frames_done"])
        time.sleep(2)
        final = ray.get(camera.stats.remote())
        assert done[0] > 0 and done[1] > done[0] and final["frames_done"] > done[1]
        assert final["frames_lost"] == 0  # a retired actor finished its batches before it went
    finally:
        teardown(dep)


def test_live_camera_faster_than_the_detector_drops_and_counts(tmp_path: Path, ray_session: None) -> None:
    import ray

    from flux_secu.actors.graph import Deployment

    # Slower than the frames offered (10 a second) on any machine: sized to this one.
    model, _ = calibrated_slow_yolov8(tmp_path / "slow.onnx", 0.3)

    def edit(d: dict[str, Any]) -> None:
        d["model"] = {"path": str(model), "kind": "yolov8"}
        d["inference"] = {"max_batch": 1}
        d["sites"][0]["cameras"][0].update(detect_fps=10, motion={"enabled": False})

    config = build_config(tmp_path, edit)
    dep = Deployment.build(config)
    try:
        t0 = time.perf_counter()
        camera = dep.add_camera(config.sites[0].id, config.sites[0].cameras[0])
        time.sleep(6)
        stats = dep.stop()[0]
        assert time.perf_counter() - t0 < 30
        assert stats["drops"] > 0, stats  # 10 frames/s offered to a detector of ~3 frames/s
        assert stats["frames_done"] > 0
        assert stats["frames_sampled"] == stats["frames_gated"] + stats["frames_sent"] + stats["drops"]
        assert ray.get(camera.stats.remote())["in_flight"] == 0
    finally:
        teardown(dep)
