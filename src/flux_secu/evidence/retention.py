"""Retention of evidence: images and clips are deleted after ``retention_days`` (30 at most, CNIL),
unless the incident is on legal hold (a complaint was filed, the police asked for it).

The incident and its timeline stay in the store (no image in them); the purge is recorded on the
timeline, so an operator sees when and why a snapshot disappeared.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from flux_secu.evidence.recorder import incident_dir
from flux_secu.store.base import Store, StoredEvent

LEGAL_HOLD = "legal_hold"
PURGED = "evidence_purged"
DAY_S = 86_400.0


def on_legal_hold(events: list[StoredEvent]) -> bool:
    """The latest legal-hold decision on the timeline (none: not held)."""
    holds = [e for e in events if e.kind == LEGAL_HOLD]
    return bool(holds and holds[-1].data.get("hold"))


def set_legal_hold(store: Store, incident_id: str, hold: bool, by: str, ts: float) -> None:
    if not any(s.incident.id == incident_id for s in store.incidents()):
        raise KeyError(f"unknown incident {incident_id!r}")
    # Each decision is its own event (held, released, held again): the key carries the instant.
    store.record_event(incident_id, LEGAL_HOLD, ts, {"hold": hold, "by": by},
                       key=f"{LEGAL_HOLD}:{round(ts * 1000)}")


@dataclass(frozen=True, slots=True)
class PurgeReport:
    purged: list[str]
    held: list[str]


def purge_expired(store: Store, directory: Path, now: float, retention_days: float) -> PurgeReport:
    """Delete the evidence of incidents opened more than ``retention_days`` before ``now``."""
    cutoff = now - retention_days * DAY_S
    purged: list[str] = []
    held: list[str] = []
    for stored in store.incidents():
        inc = stored.incident
        if inc.opened_at > cutoff:
            continue
        folder = incident_dir(directory, inc.id)
        events = store.events(inc.id)
        if on_legal_hold(events):
            if folder.exists():
                held.append(inc.id)
            continue
        if not folder.exists():
            continue
        try:
            files = sorted(p.name for p in folder.iterdir())
            shutil.rmtree(folder)
        except FileNotFoundError:  # another purge (a cron job) got there first
            continue
        store.record_event(inc.id, PURGED, now, {"files": files, "retention_days": retention_days},
                           key=f"{PURGED}:{round(now * 1000)}")
        purged.append(inc.id)
    return PurgeReport(purged, held)
