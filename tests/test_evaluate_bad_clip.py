"""`flux-secu evaluate` on a file that is not a video, or is cut short: exit 2 with one line, at once;
and the scratch directory a replay uses is removed unless --keep (real CLI, real files, real FFmpeg)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from flux_secu.video.source import SourceError, check_video_file

from .conftest import FLUX_SECU, LOWLIGHT_CLIP, ONE_BY_ONE_CLIP

# A guard against the old behaviour (retrying the file for ever), not a measure: README has the time.
HANG_GUARD_S = 120


def garbage(path: Path) -> Path:
    """200 kB of random bytes, the same ones every run: 1.5 % of random draws happen to parse as a
    stream FFmpeg recognises (then "has no video stream" or "damaged after 1 frames", still exit 2),
    and a test must say the same thing each time."""
    path.write_bytes(random.Random(15).randbytes(200_000))
    return path


def cut(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def evaluate(
    config: Path, clip: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(FLUX_SECU), "evaluate", str(config), "--camera", "cam-test", "--clip", str(clip),
               "--at", "2026-11-25T23:00:00+01:00", "--json", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)


def test_files_that_are_not_videos_or_are_cut_short_are_told_apart(tmp_path: Path) -> None:
    audio = tmp_path / "audio.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio)],
                   check=True)
    cases = {
        garbage(tmp_path / "bad.mp4"): "not a video file",
        audio: "has no video stream",
        # Its index is at the end (written last): cut, it has none.
        cut(LOWLIGHT_CLIP, tmp_path / "lowlight-half.mp4"): "not a video file",
        # Its index is at the start: cut, it lists frames that are not there.
        cut(ONE_BY_ONE_CLIP, tmp_path / "one-by-one-half.mp4"): "truncated (",
    }
    for path, reason in cases.items():
        with pytest.raises(SourceError) as raised:
            check_video_file(str(path))
        assert str(raised.value).startswith(f"{path}: ") and reason in str(raised.value)
    assert check_video_file(str(LOWLIGHT_CLIP)) == 240


@pytest.mark.slow
def test_evaluate_on_garbage_or_a_truncated_clip_exits_2_with_one_line(
    config_file: Path, tmp_path: Path
) -> None:
    halves = [cut(LOWLIGHT_CLIP, tmp_path / "half.mp4"), cut(ONE_BY_ONE_CLIP, tmp_path / "half2.mp4")]
    for clip in (garbage(tmp_path / "bad.mp4"), *halves):
        result = evaluate(config_file, clip)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(clip) in lines[0], result.stderr
        assert result.stdout == ""


@pytest.mark.slow
def test_the_scratch_directory_goes_unless_kept(config_file: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"  # two seconds: what is checked is what stays behind
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(LOWLIGHT_CLIP), "-frames:v", "20", "-an",
                    str(short)], check=True)
    # A temp folder of the command's own (Ray's sockets live there too: a short path), so that what
    # other replays on the box leave in /tmp meanwhile does not count.
    temp = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    env = {**os.environ, "TMPDIR": str(temp)}
    result = evaluate(config_file, short, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["frames"] == 20 and summary["store"] is None
    assert not list(temp.glob("flux-secu-evaluate-*"))
    result = evaluate(config_file, short, "--keep", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (kept,) = temp.glob("flux-secu-evaluate-*")
    assert json.loads(result.stdout.splitlines()[-1])["store"] == str(kept / "incidents.db")
    assert (kept / "incidents.db").is_file()
    shutil.rmtree(temp, ignore_errors=True)
