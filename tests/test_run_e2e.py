"""`flux-secu run` end to end, and the live actor graph in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import wave
from pathlib import Path

import pytest

from flux_secu.config import OpeningHours, load_config
from flux_secu.store.sqlite import SQLiteStore

from .conftest import FLUX_SECU

pytestmark = pytest.mark.slow


def test_run_detects_warns_and_notifies_then_stops_after_for(config_file: Path) -> None:
    # A live run is on the wall clock: the fixture's site opens on Mondays, Tuesdays and Wednesdays
    # (then nothing is an intrusion: the camera rests). Closed all week for this run, whenever it runs.
    text = config_file.read_text()
    start = text.index("    opening_hours: ")
    end = text.index("\n", start)
    config_file.write_text(text[:start] + "    opening_hours: {}" + text[end:])
    started = time.monotonic()
    result = subprocess.run(
        [str(FLUX_SECU), "run", str(config_file), "--for", "22", "--json-logs"],
        capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < 60
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    for expected in ("running", "incident", "warning", "recheck", "escalated", "notification", "stopping",
                     "camera_stopped"):
        assert expected in names, names
    incident = next(e for e in events if e["event"] == "incident")
    assert incident["site"] == "site-test" and incident["camera"] == "cam-test"
    assert "s3cr3t" not in result.stderr  # the notification token stays out of the logs

    var = config_file.parent / "var"
    wavs = list((var / "speakers" / "site-test" / "hp-test").glob("*.wav"))
    assert wavs
    with wave.open(str(wavs[0])) as w:
        assert w.getnframes() / w.getframerate() > 2.0  # a spoken French sentence, not an empty file
    notes = (var / "notifications" / "site-test.jsonl").read_text().splitlines()
    assert json.loads(notes[0])["contact"] == "Astreinte"
    assert "s3cr3t" not in notes[0]
    stopped = next(e for e in events if e["event"] == "camera_stopped")
    assert stopped["frames_sent"] > 0 and stopped["frames_lost"] == 0

    # Durable: the store still holds the incident and its timeline after the process is gone.
    store = SQLiteStore(var / "flux-secu.db")
    (stored, *_) = store.incidents()
    kinds = [e.kind for e in store.events(stored.incident.id)]
    assert kinds[:2] == ["opened", "confirmed"] and "warning" in kinds and "notification" in kinds


def test_run_stops_cleanly_on_ctrl_c(config_file: Path) -> None:
    proc = subprocess.Popen(
        [str(FLUX_SECU), "run", str(config_file), "--json-logs"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 90
    for line in proc.stderr:
        if '"event": "running"' in line:
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, rest[-2000:]
    assert '"event": "stopping"' in rest


def test_live_graph_accounts_for_every_sampled_frame(config_file: Path, ray_session: None) -> None:
    import ray

    from flux_secu.actors.graph import Deployment

    config = load_config(config_file)
    dep = Deployment.build(config)
    site = config.sites[0]
    camera = dep.add_camera(site.id, site.cameras[0])
    time.sleep(6)
    stats = ray.get(camera.stats.remote())
    assert stats["frames_read"] >= 40  # ~10 fps in real time, paced, not as fast as possible
    assert stats["frames_read"] <= 80
    stats = dep.stop()[0]
    # Every sampled frame was gated, handed over, or dropped (newest wins): none vanished.
    assert stats["frames_sampled"] == stats["frames_gated"] + stats["frames_sent"] + stats["drops"]
    assert stats["frames_done"] + stats["frames_lost"] == stats["frames_sent"]
    assert stats["in_flight"] == 0
    for actor in dep.actors(inference=False):
        ray.kill(actor)


def test_rules_actor_restart_mid_incident_loses_nothing_and_announces_nothing_twice(
    config_file: Path, ray_session: None
) -> None:
    import ray
    from ray.exceptions import ActorUnavailableError

    from flux_secu.actors.graph import Deployment

    config = load_config(config_file.parent / config_file.name)
    closed = config.sites[0].model_copy(update={"opening_hours": OpeningHours()})  # night all day
    config = config.model_copy(update={"sites": [closed]})
    dep = Deployment.build(config)
    store = SQLiteStore(config.store.path)
    try:
        dep.add_camera(config.sites[0].id, config.sites[0].cameras[0])  # live, real time
        deadline = time.time() + 30
        while not store.incidents() and time.time() < deadline:
            time.sleep(0.2)
        (first,) = store.incidents()
        ray.kill(dep.rules, no_restart=False)  # the rules actor crashes right after the warning
        while True:  # wait for Ray to bring it back
            try:
                ray.get(dep.rules.stats.remote(), timeout=30)
                break
            except ActorUnavailableError:
                time.sleep(0.2)
        time.sleep(8)  # past the recheck (4 s after the warning) with the person still in view
        dep.stop()
        incidents = store.incidents()
        # Same person, same incident: the restarted actor resumed it instead of opening a second one.
        same_presence = [s for s in incidents if s.incident.opened_at < first.incident.opened_at + 12]
        assert [s.incident.id for s in same_presence] == [first.incident.id]
        kinds = [e.kind for e in store.events(first.incident.id)]
        assert kinds.count("warning") == 1  # announced once
        assert "recheck" in kinds and "escalated" in kinds  # the recheck was not lost
    finally:
        store.close()
        for actor in dep.actors(inference=False):
            ray.kill(actor, no_restart=True)
