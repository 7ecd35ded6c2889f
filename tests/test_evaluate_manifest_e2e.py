"""`flux-secu evaluate --manifest`: several replays in one Ray session, scored against ground truth."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import FLUX_SECU, LOWLIGHT_CLIP

NIGHT, DAY = "2026-11-25T23:00:00+01:00", "2026-11-25T14:00:00+01:00"  # a Wednesday: open at 14:00


def write_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"entries": [
        {"name": "night", "clip": str(LOWLIGHT_CLIP), "camera": "cam-test", "at": NIGHT,
         "expected": [{"start_s": 6.3, "end_s": 19.1}, {"start_s": 22.8, "end_s": 23.9}]},
        {"name": "day", "clip": str(LOWLIGHT_CLIP), "camera": "cam-test", "at": DAY, "expected": []},
    ]}))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FLUX_SECU), "evaluate", *args], capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_manifest_night_and_day_on_the_lowlight_clip(config_file: Path, tmp_path: Path) -> None:
    stores, manifest = tmp_path / "stores", str(write_manifest(tmp_path))
    result = run(str(config_file), "--manifest", manifest, "--json", "--store", str(stores))
    assert result.returncode == 0, result.stderr[-3000:]
    lines: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    # Each clip's incidents, then its score; the overall score last.
    assert [line["type"] for line in lines] == ["incident"] * 2 + ["clip_summary"] * 2 + ["summary"]
    incidents = [line for line in lines if line["type"] == "incident"]
    assert {i["clip"] for i in incidents} == {"night"} and all(i["camera"] == "cam-test" for i in incidents)
    night, day = (line for line in lines if line["type"] == "clip_summary")
    assert (night["clip"], night["precision"], night["recall"], night["misses"]) == ("night", 1.0, 1.0, 0)
    assert night["frames"] == 240 and night["frames_lost"] == 0
    assert all(0.0 <= lat <= 1.1 for lat in night["latencies_s"]), night
    # Opening hours: the person is a visitor, the detector ran, nothing was raised.
    assert (day["clip"], day["incidents"], day["false_positives"]) == ("day", 0, 0)
    assert day["frames_analysed"] > 0
    summary = lines[-1]
    assert (summary["clips"], summary["presences"], summary["incidents"]) == (2, 2, 2)
    assert (summary["precision"], summary["recall"]) == (1.0, 1.0)
    assert summary["latency_p50_s"] <= summary["latency_p95_s"] <= 1.1
    # One SQLite file per entry, where --store said.
    assert sorted(p.name for p in stores.glob("*.db")) == ["00-cam-test.db", "01-cam-test.db"]
    # Replaying into used stores would find every incident already announced: refused.
    again = run(str(config_file), "--manifest", manifest, "--store", str(stores))
    assert again.returncode == 2 and "already used" in again.stderr


def test_manifest_excludes_camera_clip_and_at(config_file: Path, tmp_path: Path) -> None:
    manifest = str(write_manifest(tmp_path))
    for extra in (["--camera", "cam-test"], ["--clip", str(LOWLIGHT_CLIP)], ["--at", NIGHT]):
        result = run(str(config_file), "--manifest", manifest, *extra)
        assert result.returncode == 2 and "--manifest replaces --camera, --clip and --at" in result.stderr
    result = run(str(config_file), "--camera", "cam-test")
    assert result.returncode == 2 and "give --camera and --clip, or --manifest" in result.stderr


def test_manifest_errors_name_the_entry_and_field(config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"entries": [
        {"clip": str(LOWLIGHT_CLIP), "camera": "nope", "at": NIGHT},
    ]}))
    result = run(str(config_file), "--manifest", str(path))
    assert result.returncode == 2
    assert f"manifest error in {path}: entries[0].camera: unknown camera 'nope'" in result.stderr
