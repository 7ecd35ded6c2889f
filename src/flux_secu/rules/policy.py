"""What each detection means on one camera: its zone, its class group, and the action that applies.

Actions: ``intrusion`` (feeds the presence confirmation), ``event`` (recorded as activity), or
``ignore``. The policy of a zone depends on whether the site is armed (closed) or open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flux_secu.config import CameraConfig, ZoneConfig
from flux_secu.detect.detections import Detections
from flux_secu.rules.zones import Polygon, masked, zone_index

DEFAULT_ZONE = ZoneConfig(id="image", polygon=[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])


@dataclass(frozen=True, slots=True)
class Decision:
    index: int
    """Row of the detection in the frame's Detections."""
    zone: str
    group: str
    action: str
    min_dwell_s: float


class CameraPolicy:
    def __init__(self, camera: CameraConfig, class_groups: dict[str, list[str]], labels: list[str]) -> None:
        self.zones = camera.zones or [DEFAULT_ZONE]
        self.polygons = [Polygon(tuple(z.polygon)) for z in self.zones]
        self.masks = [Polygon(tuple(m)) for m in camera.ignore]
        self.acts = {
            armed: any(a != "ignore" for z in self.zones for a in (z.closed if armed else z.open).values())
            for armed in (True, False)
        }
        """Whether any zone gives anything an action (intrusion, event): site armed (True), open (False)."""
        self.group_of = np.full(len(labels), -1, np.int32)
        self.group_names = list(class_groups)
        for gi, members in enumerate(class_groups.values()):
            for name in members:
                if name in labels:
                    self.group_of[labels.index(name)] = gi

    def evaluate(self, detections: Detections, width: int, height: int, armed: bool) -> list[Decision]:
        """Decisions for the detections that belong to a class group and a zone (others are ignored)."""
        if len(detections) == 0:
            return []
        groups = self.group_of[detections.class_id]
        zones = zone_index(detections.xyxy, width, height, self.polygons)
        dropped = masked(detections.xyxy, width, height, self.masks)
        heights = (detections.xyxy[:, 3] - detections.xyxy[:, 1]) / max(height, 1)
        decisions = []
        for i in range(len(detections)):
            if groups[i] < 0 or zones[i] < 0 or dropped[i]:
                continue
            zone = self.zones[zones[i]]
            if heights[i] < zone.min_height:
                continue
            group = self.group_names[groups[i]]
            action = (zone.closed if armed else zone.open).get(group, "ignore")
            if action != "ignore":
                decisions.append(Decision(i, zone.id, group, action, zone.min_dwell_s))
        return decisions
