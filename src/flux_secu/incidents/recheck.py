"""Verification after the warning ("levée de doute"): look again ``recheck_after_s`` later, on the clock.

Rechecks are kept by incident, not by camera, and fall due on the pipeline clock whether or not the
incident's camera sends frames: live, the wall clock (the rules actor's ticker); in a replay, the
clip's clock, advanced by any frame of the deployment. A camera cut or removed after the warning can
therefore no longer keep its incident waiting forever.

The verdict weighs every camera that saw the intruder:

- someone is still seen on one of them -> ``still_there`` (escalate);
- one of them is faulty (video loss, black, covered, frozen, moved...) or gone -> ``unverifiable``
  (escalate: an empty picture from a neutralised camera proves nothing);
- otherwise -> ``deterred``, but only after ``settle_s`` more of healthy views: a camera covered just
  before the recheck raises its fault a moment later (its condition must hold a little while), and
  that fault, dated from when the condition began, still turns the verdict into ``unverifiable``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flux_secu.rules.incident import Incident

Verdict = Literal["still_there", "unverifiable", "deterred"]


@dataclass(frozen=True, slots=True)
class CameraView:
    """What the rules know of one camera that saw the intruder, at the recheck."""

    camera: str
    last_seen: float | None
    """When the intruder was last seen on it (pipeline clock); None: never, or the camera is gone."""
    faults: frozenset[str] = frozenset()
    """Its faults active now (and those whose condition began before the verdict)."""
    present: bool = True
    """False once the camera was removed from the deployment."""


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    detail: str = ""
    """For ``unverifiable``: which camera and why (in French, for the notification)."""


def verdict(views: list[CameraView], ts: float, window_s: float) -> Finding:
    """The recheck's verdict at ``ts`` from the views of the incident's cameras.

    >>> verdict([CameraView("a", last_seen=9.5)], ts=10.0, window_s=1.0).verdict
    'still_there'
    >>> verdict([CameraView("a", last_seen=2.0, faults=frozenset({"covered"}))], 10.0, 1.0).verdict
    'unverifiable'
    """
    if any(v.last_seen is not None and ts - v.last_seen <= window_s for v in views):
        return Finding("still_there")
    broken = [v for v in views if v.faults or not v.present]
    if broken or not views:
        parts = [f"{v.camera} ({fault_words(v.faults) if v.present else 'retirée'})" for v in broken]
        return Finding("unverifiable", ", ".join(parts) or "aucune caméra")
    return Finding("deterred")


FAULT_WORDS = {
    "video_loss": "plus d'image",
    "black": "image noire",
    "blank": "image uniforme",
    "covered": "objectif masqué",
    "frozen": "image figée",
    "moved": "caméra détournée",
    "analysis_stalled": "analyse interrompue",
}


def fault_words(faults: frozenset[str] | set[str]) -> str:
    return ", ".join(FAULT_WORDS.get(f, f) for f in sorted(faults))


def tamper_reason(camera: str, fault: str) -> str:
    """The escalation's reason when a camera is neutralised during an intrusion."""
    return f"Caméra {camera} neutralisée pendant l'intrusion ({FAULT_WORDS.get(fault, fault)})."


@dataclass(frozen=True, slots=True)
class Recheck:
    incident: Incident
    due_ts: float
    live: bool = True
    """On the wall clock (a live camera's incident) or on a replay's clip clock: each clock fires its own."""
    settling: bool = False
    """The second look: nobody was seen at the recheck; ``deterred`` if the views stayed healthy."""
    checked_ts: float | None = None
    """When the first look found nobody (for ``settling``)."""


@dataclass
class Rechecks:
    _pending: dict[str, Recheck] = field(default_factory=dict)  # incident id -> its next look

    def schedule(self, incident: Incident, due_ts: float, *, live: bool = True, settling: bool = False,
                 checked_ts: float | None = None) -> None:
        self._pending[incident.id] = Recheck(incident, due_ts, live, settling, checked_ts)

    def due(self, ts: float, *, live: bool = True) -> list[Recheck]:
        """Every recheck on that clock whose time has come at ``ts``, oldest first; they are removed."""
        ready = sorted((r for r in self._pending.values() if r.live == live and r.due_ts <= ts),
                       key=lambda r: r.due_ts)
        for r in ready:
            del self._pending[r.incident.id]
        return ready

    def cancel(self, incident_id: str) -> Recheck | None:
        return self._pending.pop(incident_id, None)

    def get(self, incident_id: str) -> Recheck | None:
        return self._pending.get(incident_id)

    def of_site(self, site: str) -> list[Recheck]:
        return [r for r in self._pending.values() if r.incident.site == site]

    def __len__(self) -> int:
        return len(self._pending)
