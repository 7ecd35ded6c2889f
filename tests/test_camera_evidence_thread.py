"""Video loss hands the clip gathered so far to the camera's evidence thread: the host's single
watchdog thread, which raises every camera's faults, never encodes (real recorder, real FFmpeg)."""

from __future__ import annotations

import threading
from pathlib import Path

import structlog

from flux_secu.actors.camera import _Evidence
from flux_secu.evidence.recorder import CLIP, EvidenceRequest, EvidenceSettings

from .conftest import ONE_BY_ONE_CLIP, build_config
from .test_evidence import clip_frames

GUARD_S = 60.0  # a guard against a call that blocks for ever, not a measure


def test_video_loss_does_not_encode_on_the_calling_thread(tmp_path: Path) -> None:
    camera = build_config(tmp_path).sites[0].cameras[0]
    evidence = _Evidence(EvidenceSettings(tmp_path, before_s=1.0, after_s=10.0, fps=5.0), None, camera,
                         structlog.get_logger("test"))
    for i, frame in enumerate(clip_frames(ONE_BY_ONE_CLIP, every=5, limit=15)):
        evidence.keep(i / 5, frame)
    # An incident whose clip waits for the 10 s after it, which will never come: the camera is cut.
    assert evidence.request(EvidenceRequest("intrusion-cut", 2.0)) == ["snapshot.jpg"]
    # The evidence thread is busy (another clip being encoded): a real block, released below.
    busy = threading.Event()
    evidence._writer.submit(busy.wait)
    watchdog = threading.Thread(target=lambda: evidence.source_ended(wait=False), name="camera-watchdog")
    watchdog.start()
    watchdog.join(GUARD_S)
    # The watchdog's call returned although the clip cannot have been written yet: it was handed over.
    assert not watchdog.is_alive()
    clip = tmp_path / "intrusion-cut" / CLIP
    assert not clip.exists()
    busy.set()
    evidence.source_ended()  # the camera ending waits for its clips
    assert clip.is_file() and clip.stat().st_size > 0
