"""A quiet camera (key frames only) still raises the intrusion, at most about a GOP later.

`flux-secu evaluate` replays a night made from the shipped one-by-one clip: 33.6 s of empty room, then
a person walks in. With `quiet_after_s: 5` the camera goes quiet during the empty stretch, decodes a
fraction of the frames, wakes up on the entry and raises one intrusion, with its snapshot and clip.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import FLUX_SECU, ONE_BY_ONE_CLIP, site_yaml

pytestmark = pytest.mark.slow

EMPTY_S = 5.6  # the clip's first 56 frames (10 fps): nobody there
EMPTY_TIMES = 3  # forwards, backwards, forwards: 16.8 s of still room
PERSON_IN_S = 0.7  # after the cut: clip frame 63, the presence part starts at 56
GOP_S = 1.0


def night_clip(path: Path) -> float:
    """The clip, and the clip time at which the person's first pixels appear."""
    empty = "trim=start_frame=0:end_frame=56,setpts=PTS-STARTPTS"
    graph = (f"[0:v]{empty},split=2[a][b];[b]reverse[r];[0:v]{empty}[c];"
             f"[0:v]trim=start_frame=56:end_frame=205,setpts=PTS-STARTPTS[p];"
             f"[a][r][c][p]concat=n=4:v=1[v]")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(ONE_BY_ONE_CLIP), "-filter_complex", graph,
                    "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-bf", "0",
                    "-g", "10", "-keyint_min", "10", "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(path)],
                   check=True)
    return EMPTY_TIMES * EMPTY_S + PERSON_IN_S


def test_a_quiet_camera_decodes_a_fraction_and_still_raises_the_intrusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    clip = tmp_path / "night.mp4"
    entry_s = night_clip(clip)
    data: dict[str, Any] = yaml.safe_load(site_yaml(camera_source=clip, var_dir=str(tmp_path / "var")))
    data["sites"][0]["cameras"][0]["motion"] = {"quiet_after_s": 5, "quiet_heartbeat_s": 10}
    config = tmp_path / "flux.yaml"
    config.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [str(FLUX_SECU), "evaluate", str(config), "--camera", "cam-test", "--clip", str(clip),
         "--at", "2026-11-25T23:00:00+01:00", "--json"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    summary, incidents = lines[-1], [line for line in lines if line["type"] == "incident"]
    # Quiet during the empty room: about one frame in ten decoded there (GOP 10 frames).
    assert summary["quiet_periods"] >= 1, summary
    assert summary["frames_decoded"] < 0.75 * summary["frames"], summary
    # One intrusion, for the person, noticed at most about a GOP later than a watching camera would
    # (which confirms 3 of 5 frames at 5 fps: ~0.6-1 s after the entry).
    assert [i["label"] for i in incidents] == ["person"], incidents
    raised = incidents[0]["clip_time_s"]
    assert entry_s <= raised <= entry_s + GOP_S + 1.5, (entry_s, raised)
    assert {"snapshot.jpg", "clip.mp4"} <= set(incidents[0]["evidence"]), incidents[0]
