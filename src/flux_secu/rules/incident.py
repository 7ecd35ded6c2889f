"""The value that leaves the rules: an incident, and the events of its timeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class IncidentKind(StrEnum):
    INTRUSION = "intrusion"
    PANIC = "panic"
    CAMERA_FAULT = "camera_fault"
    ACTIVITY = "activity"
    """Recorded, not alarming: a vehicle at night outside any intrusion zone."""


class IncidentState(StrEnum):
    OPEN = "open"
    WARNED = "warned"
    DETERRED = "deterred"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident. ``id`` is derived from what caused it, so raising it twice is a no-op."""

    id: str
    kind: IncidentKind
    site: str
    camera: str
    label: str
    opened_at: float
    clip_time_s: float | None = None
    first_seen_ts: float | None = None
    score: float = 0.0
    detections: list[dict[str, Any]] = field(default_factory=list)
    zone: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Incident:
        return cls(**{**data, "kind": IncidentKind(data["kind"])})


def incident_id(kind: IncidentKind, camera: str, first_seen_ts: float) -> str:
    """Stable id: the same presence replayed after a restart maps to the same incident."""
    return f"{kind}-{camera}-{round(first_seen_ts * 1000)}"
