"""Text-to-speech with espeak-ng, synthesised once per (voice, text) and cached as a WAV file."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path


class SpeechError(Exception):
    pass


def synthesise(text: str, voice: str, cache_dir: Path) -> Path:
    """Return a WAV file speaking ``text``; the same text and voice reuse the cached file."""
    digest = hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()[:16]
    target = cache_dir / f"{voice}-{digest}.wav"
    if target.is_file() and target.stat().st_size > 44:
        return target
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    result = subprocess.run(
        [espeak, "-v", voice, "-w", str(partial), text], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0 or not partial.is_file():
        raise SpeechError(f"espeak-ng failed for voice {voice!r}: {result.stderr.strip()[:200]}")
    partial.replace(target)  # atomic: a concurrent reader never sees half a file
    return target
