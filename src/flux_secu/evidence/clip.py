"""Writing an evidence clip as an MP4 that a phone's browser plays (H.264, yuv420p, faststart).

OpenCV's pip wheels write MPEG-4 Part 2 ('mp4v'), which browsers do not play in a <video> element;
FFmpeg (a Debian package the Makefile installs) encodes H.264 from raw frames on its stdin.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt


class ClipError(RuntimeError):
    """The clip could not be written."""


def write_mp4(frames: Sequence[npt.NDArray[np.uint8]], fps: float, path: Path) -> Path:
    """Encode BGR frames of one size to ``path`` (written to a temporary name, then renamed)."""
    if not frames:
        raise ClipError("no frames to write")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ClipError("ffmpeg not found (Debian package ffmpeg)")
    height, width = frames[0].shape[:2]
    # libx264 with yuv420p wants even dimensions.
    even = (width - width % 2, height - height % 2)
    partial = path.with_name(path.name + ".part")
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{even[0]}x{even[1]}", "-r", f"{fps:g}", "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
        "-threads", "1", "-f", "mp4", str(partial),
    ]
    data = b"".join(
        np.ascontiguousarray(
            (f if f.shape[:2] == (height, width) else cv2.resize(f, (width, height)))[: even[1], : even[0]]
        ).tobytes()
        for f in frames
    )
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        partial.unlink(missing_ok=True)
        raise ClipError("ffmpeg took longer than 120 s") from exc
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ClipError(f"ffmpeg failed: {done.stderr.decode(errors='replace').strip()[:300]}")
    partial.replace(path)
    return path
