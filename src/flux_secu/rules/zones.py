"""Zones and ignore masks: polygons in normalised image coordinates (0-1), per camera.

A detection belongs to the first zone that contains its anchor point, the bottom centre of its box
(where a person's feet or a vehicle's wheels touch the ground): a head poking above a fence does not
put the person inside the fenced area.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Polygon:
    points: tuple[Point, ...]

    def contains(self, xs: npt.NDArray[np.floating], ys: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
        """Even-odd ray casting, vectorised over points (normalised coordinates)."""
        inside = np.zeros(len(xs), dtype=bool)
        pts = self.points
        for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
            crosses = (y1 > ys) != (y2 > ys)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = x1 + (ys - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (xs < x_at)
        return inside


FULL_FRAME = Polygon(((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))


def anchors(xyxy: npt.NDArray[np.float32], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Bottom-centre points of boxes, normalised to the frame."""
    xs = (xyxy[:, 0] + xyxy[:, 2]) / 2 / max(width, 1)
    ys = xyxy[:, 3] / max(height, 1)
    return xs, ys


def zone_index(
    xyxy: npt.NDArray[np.float32], width: int, height: int, zones: Sequence[Polygon]
) -> npt.NDArray[np.int32]:
    """For each box, the index of the first zone containing its anchor, or -1."""
    xs, ys = anchors(xyxy, width, height)
    out = np.full(len(xyxy), -1, dtype=np.int32)
    for i, zone in enumerate(zones):
        hit = (out == -1) & zone.contains(xs, ys)
        out[hit] = i
    return out


def masked(xyxy: npt.NDArray[np.float32], width: int, height: int, masks: Sequence[Polygon]) -> np.ndarray:
    """True for boxes whose anchor falls in an ignore mask (a road, a neighbour's yard, trees)."""
    xs, ys = anchors(xyxy, width, height)
    out = np.zeros(len(xyxy), dtype=bool)
    for mask in masks:
        out |= mask.contains(xs, ys)
    return out
