"""A hung inference actor: the other actors keep serving, its frames are counted lost, and
``analysis_stalled`` is raised only when no actor serves (real Ray, real model, real cameras).

The hang is real: ``tests/hanging_model.py`` blocks the actor's model call on a file flag. Nothing
here is timed: every wait is for a condition (a hung call failed, frames analysed, a fault recorded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flux_secu.config import Config
from flux_secu.store import SQLiteStore

from .conftest import MODEL, build_config
from .hanging_model import HangingWorker, hang
from .waiting import wait_for

pytestmark = pytest.mark.slow

CAMERAS = ["cam-0", "cam-1", "cam-2"]
# Long enough that the wait behind one hung call (its deadline, 2 s or more: detect/deadline.py)
# never looks like a stall on a loaded box, short enough to keep the test under a minute.
STALLED_AFTER_S = 12.0




def stalled(store: SQLiteStore) -> dict[str, list[str]]:
    """The analysis_stalled fault incidents by camera: the kinds of event on each."""
    out: dict[str, list[str]] = {}
    for stored in store.incidents():
        if stored.incident.label == "analysis_stalled":
            out[stored.incident.camera] = [e.kind for e in store.events(stored.incident.id)]
    return out


def hung_config(tmp_path: Path) -> Config:
    flags = tmp_path / "model"
    flags.mkdir()
    (flags / "yolox_nano.onnx").symlink_to(MODEL)  # the flags live beside the model (not a copy)

    def edit(d: dict[str, Any]) -> None:
        d["model"]["path"] = str(flags / "yolox_nano.onnx")
        d["inference"] = {"actors": 2, "cpus_per_actor": 0.5, "max_batch": 1}
        base = d["sites"][0]["cameras"][0]
        base.update(detect_fps=2, motion={"enabled": False}, video_loss_after_s=STALLED_AFTER_S)
        d["sites"][0]["cameras"] = [dict(base, id=cid) for cid in CAMERAS]
        d["evidence"] = {"enabled": False}

    return build_config(tmp_path, edit)


def test_one_hung_actor_leaves_the_others_serving_and_all_hung_raises_analysis_stalled(
    tmp_path: Path, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.graph import Deployment

    config = hung_config(tmp_path)
    flags = Path(config.model.path).parent
    dep = Deployment.build(config, inference_worker=HangingWorker)
    store = SQLiteStore(config.store.path)
    try:
        for camera in config.sites[0].cameras:
            dep.add_camera(config.sites[0].id, camera)

        def stats() -> dict[str, dict[str, Any]]:
            return {c: ray.get(dep.cameras[c].stats.remote()) for c in CAMERAS}

        wait_for("every camera analysed", lambda: all(s["frames_done"] >= 3 for s in stats().values()))
        # One actor hangs: its call passes the deadline, is failed, and the actor is restarted (and
        # hangs again at its next call while the flag is there); the other serves every camera.
        victim, _ = ray.get(dep.pool.actor_handles.remote())
        flag = hang(flags, victim)
        wait_for("a hung call failed", lambda: ray.get(dep.pool.stats.remote())["hung_calls"] >= 1)
        before = stats()

        def six_more() -> dict[str, dict[str, Any]] | None:
            now = stats()
            done = all(now[c]["frames_done"] >= before[c]["frames_done"] + 6 for c in CAMERAS)
            return now if done else None

        after = wait_for("every camera analysed 6 more frames", six_more)
        pool = ray.get(dep.pool.stats.remote())
        assert pool["hung_calls"] >= 1
        lost = sum(s["frames_lost"] for s in after.values())
        assert 0 < lost <= pool["failed_frames"]  # the hung calls' frames, counted by the cameras
        assert stalled(store) == {}  # one actor served all along: nothing is stalled
        assert all("analysis_stalled" not in s["faults"] for s in after.values())
        flag.unlink()

        # Every actor hangs: no camera is analysed, each raises analysis_stalled after STALLED_AFTER_S.
        everyone = hang(flags)
        def raised() -> dict[str, list[str]] | None:
            faults = stalled(store)
            return faults if set(faults) == set(CAMERAS) else None

        def cleared() -> dict[str, list[str]] | None:
            faults = stalled(store)
            return faults if all("analysis_stalled_cleared" in kinds for kinds in faults.values()) else None

        faults = wait_for("analysis_stalled on every camera", raised)
        assert all("analysis_stalled" in kinds and "analysis_stalled_cleared" not in kinds
                   for kinds in faults.values()), faults
        assert all("analysis_stalled" in s["faults"] for s in stats().values())
        everyone.unlink()
        # The actors come back (restarted by the pool), frames are analysed, the faults clear.
        faults = wait_for("analysis_stalled cleared everywhere", cleared)
        assert set(faults) == set(CAMERAS)
        assert all("analysis_stalled" not in s["faults"] for s in stats().values())
        final = dep.stop()
        pool = ray.get(dep.pool.stats.remote())
        # Every frame lost was in a failed call; none vanished elsewhere.
        assert sum(s["frames_lost"] for s in final) == pool["failed_frames"]
        for s in final:
            assert s["frames_done"] + s["frames_lost"] == s["frames_sent"]
    finally:
        store.close()
        for actor in dep.actors():
            ray.kill(actor, no_restart=True)
