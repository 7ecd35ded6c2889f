"""A small IoU tracker: one id per object across frames, and whether it has stopped moving.

ByteTrack-like association is more than a night scene needs (a few objects, slow motion, 5 frames/s):
greedy matching of boxes to tracks by IoU, highest first, is enough and keeps the rules dependency-free
(supervision's tracker now lives in a package that pulls a second OpenCV). A track survives
``max_age_s`` without a match, so a short occlusion keeps its id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


def iou_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return (inter / np.maximum(area_a + area_b - inter, 1e-9)).astype(np.float32)


@dataclass
class Track:
    id: int
    group: int
    box: npt.NDArray[np.float32]
    first_box: npt.NDArray[np.float32]
    first_seen: float
    last_seen: float
    hits: int = 1
    moved: bool = False

    def stationary(self, min_age_s: float) -> bool:
        """Seen for a while without ever leaving its first place (a parked car, a skip)."""
        return not self.moved and self.last_seen - self.first_seen >= min_age_s


@dataclass
class IouTracker:
    match_iou: float = 0.3
    max_age_s: float = 2.0
    moved_iou: float = 0.7
    """A track whose box overlaps its first box less than this has moved."""
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 1

    def update(
        self, ts: float, xyxy: npt.NDArray[np.float32], groups: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.int32]:
        """Associate this frame's boxes with tracks; returns a track id per box."""
        self.tracks = [t for t in self.tracks if ts - t.last_seen <= self.max_age_s]
        ids = np.zeros(len(xyxy), np.int32)
        if len(xyxy) == 0:
            return ids
        current = np.array([t.box for t in self.tracks], np.float32).reshape(-1, 4)
        scores = iou_matrix(current, xyxy)
        track_groups = np.array([t.group for t in self.tracks], np.int32)
        same_group = track_groups[:, None] == groups[None, :]
        scores = np.where(same_group, scores, 0.0)
        taken_tracks: set[int] = set()
        taken_boxes: set[int] = set()
        for flat in np.argsort(-scores, axis=None):
            ti, bi = divmod(int(flat), len(xyxy))
            if scores[ti, bi] < self.match_iou:
                break
            if ti in taken_tracks or bi in taken_boxes:
                continue
            track = self.tracks[ti]
            track.box, track.last_seen, track.hits = xyxy[bi].copy(), ts, track.hits + 1
            if iou_matrix(track.first_box[None], xyxy[bi][None])[0, 0] < self.moved_iou:
                track.moved = True
            ids[bi] = track.id
            taken_tracks.add(ti)
            taken_boxes.add(bi)
        for bi in range(len(xyxy)):
            if bi not in taken_boxes:
                track = Track(self._next_id, int(groups[bi]), xyxy[bi].copy(), xyxy[bi].copy(), ts, ts)
                self._next_id += 1
                self.tracks.append(track)
                ids[bi] = track.id
        return ids

    def get(self, track_id: int) -> Track | None:
        return next((t for t in self.tracks if t.id == track_id), None)
