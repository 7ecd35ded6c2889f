"""The rules end to end through `flux-secu evaluate`: real actors, real model, shipped media."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ASSETS, FLUX_SECU, LOWLIGHT_CLIP, ONE_BY_ONE_CLIP

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]
NIGHT = "2026-11-25T23:00:00+01:00"


def evaluate(config: Path, clip: Path, at: str = NIGHT, store: Path | None = None) -> list[dict[str, Any]]:
    """What `flux-secu evaluate --json` prints, replayed on the session's Ray (the command itself, with
    a Ray of its own per call, is tested in test_evaluate_e2e.py)."""
    from flux_secu.cli import _replay
    from flux_secu.config import load_config

    lines, summary = _replay(load_config(config), "cam-test", clip, datetime.fromisoformat(at), store)
    return json.loads(json.dumps([*lines, summary]))  # exactly what the command would print


def edit_camera(config: Path, **changes: Any) -> None:
    data = yaml.safe_load(config.read_text())
    data["sites"][0]["cameras"][0].update(changes)
    config.write_text(yaml.safe_dump(data))


def still_clip(image: Path, out: Path, seconds: int = 3) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-loop", "1", "-i", str(image),
                    "-t", str(seconds), "-r", "10", "-vf", "scale=640:-2", "-pix_fmt", "yuv420p", str(out)],
                   check=True, timeout=60)
    return out


def incidents(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["type"] == "incident" and line["kind"] == kind]


def test_one_incident_per_presence_on_the_one_by_one_clip_at_night(config_file: Path) -> None:
    lines = evaluate(config_file, ONE_BY_ONE_CLIP)
    found = [i["clip_time_s"] for i in incidents(lines, "intrusion")]
    presences = [(6.3, 19.1), (22.8, 44.3), (50.6, 69.4), (74.5, 86.5), (93.2, 119.4), (123.7, 135.8)]
    assert len(found) == 6, found
    for t, (start, end) in zip(sorted(found), presences, strict=True):
        assert start - 0.5 <= t <= end  # one per presence, none while the room is empty
    # Once a presence is confirmed the camera sends follow_fps (1) frames a second, not detect_fps (5):
    # fewer frames analysed for the same incidents and the same verdicts at the recheck.
    followed = lines[-1]
    assert followed["frames_skipped_following"] > 0, followed
    edit_camera(config_file, follow_fps=5.0)
    every = evaluate(config_file, ONE_BY_ONE_CLIP)
    assert every[-1]["frames_skipped_following"] == 0, every[-1]
    assert followed["frames_analysed"] < 0.7 * every[-1]["frames_analysed"], (followed, every[-1])
    assert [i["clip_time_s"] for i in incidents(every, "intrusion")] == found
    assert ([i["recheck"] for i in incidents(lines, "intrusion")]
            == [i["recheck"] for i in incidents(every, "intrusion")])


def test_person_outside_the_zone_or_under_a_mask_raises_nothing(config_file: Path, tmp_path: Path) -> None:
    edit_camera(config_file, zones=[{"id": "coin", "polygon": [[0, 0], [0.1, 0], [0.1, 0.1], [0, 0.1]]}])
    assert incidents(evaluate(config_file, LOWLIGHT_CLIP), "intrusion") == []
    edit_camera(config_file, zones=[], ignore=[[[0, 0], [1, 0], [1, 1], [0, 1]]])
    assert incidents(evaluate(config_file, LOWLIGHT_CLIP), "intrusion") == []


def test_vehicle_at_night_is_an_event_unless_a_zone_says_intrusion(config_file: Path, tmp_path: Path) -> None:
    clip = still_clip(ASSETS / "annotated" / "coco_val2017_mini" / "images" / "000000098520.jpg",
                      tmp_path / "truck.mp4")
    edit_camera(config_file, motion={"enabled": False})
    lines = evaluate(config_file, clip)
    assert incidents(lines, "intrusion") == []
    activities = incidents(lines, "activity")  # the photo has two trucks: one event each
    assert 1 <= len(activities) <= 2
    assert all(a["label"] == "vehicle" and a["state"] == "closed" and a["warnings"] == 0 for a in activities)
    edit_camera(config_file, zones=[{"id": "quai", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]],
                                     "closed": {"vehicle": "intrusion"}}])
    (intrusion,) = incidents(evaluate(config_file, clip), "intrusion")  # one presence, one incident
    assert intrusion["label"] == "vehicle" and intrusion["warnings"] == 1


def test_holiday_and_manual_disarm(config_file: Path, tmp_path: Path) -> None:
    # Wednesday 14:00 is open; Christmas (a holiday of this config) at the same hour is closed.
    data = yaml.safe_load(config_file.read_text())
    data["sites"][0]["opening_hours"]["fri"] = ["08:30-18:00"]
    data["sites"][0]["holidays"] = ["2026-12-25"]
    config_file.write_text(yaml.safe_dump(data))
    assert len(incidents(evaluate(config_file, LOWLIGHT_CLIP, "2026-12-25T14:00:00+01:00"), "intrusion")) >= 1
    # A late delivery: the rules are off for an hour from now (replayed at the present time, on a site
    # with no opening hours, so that only the override can keep the intruder from raising an incident).
    data["sites"][0]["opening_hours"] = {}
    config_file.write_text(yaml.safe_dump(data))
    store = tmp_path / "override.db"
    result = subprocess.run([str(FLUX_SECU), "site", "disarm", str(config_file), "site-test", "--for", "3600",
                             "--by", "chef de site", "--store", str(store)], capture_output=True, text=True)
    assert result.returncode == 0 and "disarmed until" in result.stdout, result.stderr
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo("Europe/Paris")).replace(microsecond=0).isoformat()
    assert incidents(evaluate(config_file, LOWLIGHT_CLIP, now, store), "intrusion") == []
