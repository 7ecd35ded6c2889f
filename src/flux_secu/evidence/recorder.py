"""A camera's evidence: its recent frames (privacy-masked), a snapshot and a clip per incident.

The camera actor owns one :class:`EvidenceRecorder` (the frames never leave the camera's process):
every sampled frame goes in, masked and JPEG-encoded; when the rules open an incident, the snapshot
is written at once from the frame the incident was confirmed on, and the clip (``before_s`` before to
``after_s`` after that frame) as soon as the frames after it have arrived, or when the source ends.
No Ray here: the actor calls it and records what was written.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from flux_secu.evidence.clip import write_mp4
from flux_secu.evidence.privacy import PrivacyMask
from flux_secu.evidence.render import draw_boxes
from flux_secu.evidence.ring import FrameRing, StoredFrame

SNAPSHOT = "snapshot.jpg"
CLIP = "clip.mp4"
RING_MARGIN_S = 3.0
"""The rules open an incident up to ~1 s after its frame was captured (more under load): the ring
keeps this much beyond ``before_s`` so the frames before it are still there."""


@dataclass(frozen=True, slots=True)
class EvidenceSettings:
    """What a camera needs to keep evidence (from the config's ``evidence`` section)."""

    directory: Path
    before_s: float = 5.0
    after_s: float = 10.0
    width: int = 640
    jpeg_quality: int = 80
    fps: float = 5.0
    """The camera's detect_fps: the ring holds the sampled frames, so the clip plays at this rate."""


@dataclass(frozen=True, slots=True)
class EvidenceRequest:
    incident_id: str
    ts: float
    """Capture instant of the frame the incident was confirmed on."""
    detections: list[dict[str, Any]] = field(default_factory=list)
    """``Detections.to_list`` rows, boxes in source pixels."""
    source_size: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class EvidenceFile:
    incident_id: str
    file: str
    path: Path
    sha256: str
    frames: int

    def event_data(self) -> dict[str, Any]:
        return {"file": self.file, "path": str(self.path), "sha256": self.sha256, "frames": self.frames}


def incident_dir(directory: Path, incident_id: str) -> Path:
    if not incident_id or "/" in incident_id or incident_id.startswith("."):
        raise ValueError(f"not an incident id: {incident_id!r}")
    return directory / incident_id


class EvidenceRecorder:
    """Thread-safe: frames come from the camera's read loop, requests from the rules' calls."""

    def __init__(self, settings: EvidenceSettings, mask: PrivacyMask) -> None:
        self.settings, self.mask = settings, mask
        self.ring = FrameRing(settings.before_s + RING_MARGIN_S)
        self.pending: list[EvidenceRequest] = []
        self.ended = False
        self._lock = threading.Lock()

    # --- frames -----------------------------------------------------------------------------------

    def push(self, ts: float, image: npt.NDArray[np.uint8]) -> list[EvidenceRequest]:
        """Keep a frame; returns the requests whose clip can now be written."""
        stored = StoredFrame(ts, self.encode(self.prepare(image)))
        with self._lock:
            self.ended = False
            self.ring.push(stored)
            return self._take(lambda r: ts >= r.ts + self.settings.after_s)

    def prepare(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Downscaled to the evidence width, masked: the only form in which pixels are ever stored."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        height, width = image.shape[:2]
        if width > self.settings.width:
            size = (self.settings.width, max(2, round(height * self.settings.width / width)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return self.mask.apply(image)

    def encode(self, image: npt.NDArray[np.uint8]) -> bytes:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()

    def latest_jpeg(self) -> bytes | None:
        with self._lock:
            latest = self.ring.latest
        return latest.jpeg if latest is not None else None

    def source_ended(self) -> list[EvidenceRequest]:
        """No more frames will come (end of a replayed file): every pending clip is written as is."""
        with self._lock:
            self.ended = True
            return self._take(lambda r: True)

    # --- incidents --------------------------------------------------------------------------------

    def request(self, request: EvidenceRequest) -> tuple[EvidenceFile | None, bool]:
        """Write the snapshot now; returns it and whether the clip can be written at once too."""
        with self._lock:
            frame = self.ring.nearest(request.ts)
            if frame is not None and abs(frame.ts - request.ts) > 2.0 / self.settings.fps:
                frame = None  # the ring no longer (or not yet) holds that moment: no misleading snapshot
            self.ring.pins.append(request.ts - self.settings.before_s)
            latest = self.ring.latest
            ready = self.ended or (latest is not None and latest.ts >= request.ts + self.settings.after_s)
            if not ready:
                self.pending.append(request)
        if frame is None:
            return None, ready
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if request.detections and request.source_size[0] > 0:
            image = draw_boxes(image, request.detections, request.source_size)
        return self._write(request.incident_id, SNAPSHOT, self.encode(image), 1), ready

    def clip(self, request: EvidenceRequest) -> EvidenceFile | None:
        """Write the clip of a request, once :meth:`push`, :meth:`source_ended` or :meth:`request`
        handed it out as ready (each request is handed out once)."""
        with self._lock:
            start = request.ts - self.settings.before_s
            # A millisecond of slack: capture instants are sums of floats.
            frames = self.ring.between(start - 1e-3, request.ts + self.settings.after_s + 1e-3)
            if start in self.ring.pins:
                self.ring.pins.remove(start)
        if not frames:
            return None
        images = [cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR) for f in frames]
        path = incident_dir(self.settings.directory, request.incident_id) / CLIP
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(images, self.settings.fps, path)
        return EvidenceFile(request.incident_id, CLIP, path, _sha256(path.read_bytes()), len(images))

    def _take(self, ready: Any) -> list[EvidenceRequest]:
        taken = [r for r in self.pending if ready(r)]
        # No longer pending, but their frames stay pinned until clip() has read them.
        self.pending = [r for r in self.pending if not ready(r)]
        return taken

    def _write(self, incident_id: str, name: str, data: bytes, frames: int) -> EvidenceFile:
        path = incident_dir(self.settings.directory, incident_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(name + ".part")
        partial.write_bytes(data)
        partial.replace(path)
        return EvidenceFile(incident_id, name, path, _sha256(data), frames)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
