"""Camera faults (video loss, frozen, black, blank, covered, moved) as ``camera_fault`` incidents.

The camera raises and clears faults; the rules actor, which owns the store, records them here. One
incident per fault episode, keyed on the camera, the fault and the instant it began, so a fault sent
twice (an actor retry, a camera restarted mid-episode) is recorded once. A camera fault is for the
maintenance team: it never opens an intrusion, never warns anyone on site.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flux_secu.incidents.lifecycle import Transition
from flux_secu.rules.incident import Incident, IncidentKind
from flux_secu.store.base import Store

CLEARED_EVENT = {"video_loss": "video_restored"}
"""The event that ends an episode (``{fault}_cleared`` for faults not listed)."""


@dataclass(frozen=True, slots=True)
class CameraFault:
    site: str
    camera: str
    fault: str
    """video_loss, frozen, black, blank, covered, moved."""
    active: bool
    """True: the fault began (or is still there); False: it is over."""
    ts: float
    since: float
    """When the episode began: the same value in the raise and in the clear that ends it."""
    details: dict[str, Any] = field(default_factory=dict)
    clip_time_s: float | None = None
    """Position in the source of the frame that raised it (replays are scored on it)."""

    @property
    def event(self) -> str:
        return self.fault if self.active else CLEARED_EVENT.get(self.fault, f"{self.fault}_cleared")


def fault_incident_id(camera: str, fault: str, since: float) -> str:
    return f"{IncidentKind.CAMERA_FAULT}-{camera}-{fault}-{round(since * 1000)}"


def record_camera_fault(store: Store, fault: CameraFault) -> bool:
    """Open (raise) or close (clear) the episode's incident; False when this was already recorded."""
    incident_id = fault_incident_id(fault.camera, fault.fault, fault.since)
    if fault.active:
        store.open_incident(Incident(
            id=incident_id, kind=IncidentKind.CAMERA_FAULT, site=fault.site, camera=fault.camera,
            label=fault.fault, opened_at=fault.since, clip_time_s=fault.clip_time_s,
        ))
        return store.record_event(incident_id, fault.event, fault.ts, fault.details)
    if not store.has_event(incident_id, fault.fault):
        # A clear without its raise (the raise was lost with a restarted rules actor): the episode
        # still gets its incident, so the maintenance log has no hole.
        record_camera_fault(store, CameraFault(fault.site, fault.camera, fault.fault, True, fault.since,
                                               fault.since, {"recovered": True}, fault.clip_time_s))
    # The clearing event and the closed state in one write: a crash cannot leave one without the other.
    return store.transition(incident_id, Transition.CLOSED, fault.ts, fault.details, kind=fault.event).applied
