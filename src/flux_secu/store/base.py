"""The store interface: incidents and the events of their timelines.

Every write is idempotent: an incident is keyed by its id, an event by ``(incident_id, key)``.
Replaying a step after an actor restart therefore changes nothing and returns ``False``, which is
what callers use to avoid announcing anything twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from flux_secu.incidents.lifecycle import Outcome, Transition
from flux_secu.rules.incident import Incident, IncidentState


class StoreUnavailable(RuntimeError):
    """The store could not be reached, even after retrying for a while (a networked store only)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    incident_id: str
    key: str
    kind: str
    ts: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did or saw what, when: one append-only line of the audit log (CNIL)."""

    seq: int
    ts: float
    user: str
    action: str
    target: str
    data: dict[str, Any]
    prev: str = ""
    """The hash of the record before (the hash chain: see :func:`audit_hash`)."""
    hash: str = ""


# --- audit hash chain (security) -----------------------------------------------------------------------


def audit_hash(prev: str, seq: int, ts: float, user: str, action: str, target: str,
               data: dict[str, Any]) -> str:
    """SHA-256 of the previous record's hash and this record: changing, removing or inserting a record
    anywhere breaks every hash after it (tamper-evident; an audited purge leaves an anchor)."""
    material = json.dumps([prev, seq, repr(float(ts)), user, action, target, data], sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()


def verify_audit_chain(records: list[AuditRecord]) -> int | None:
    """The ``seq`` of the first record that does not chain (altered, inserted, or one before it
    removed outside a purge), or None when the whole log chains. Records from before the chain (no
    hash, at the start of the log) are not checked. The first record may chain to a
    purge's anchor (named by the ``audit_purged`` record that removed the records before it)."""
    anchors = {""} | {str(r.data.get("anchor")) for r in records
                      if r.action == "audit_purged" and r.data.get("anchor")}
    prev: str | None = None
    # Records written before the chain existed (an older store) have no hash: only at the start.
    start = 0
    while start < len(records) and not records[start].hash and not records[start].prev:
        start += 1
    for r in records[start:]:
        expected = audit_hash(r.prev, r.seq, r.ts, r.user, r.action, r.target, r.data)
        if r.hash != expected or (r.prev not in anchors if prev is None else r.prev != prev):
            return r.seq
        prev = r.hash
    return None


# --- end of audit hash chain ---------------------------------------------------------------------------


IntentState = Literal["pending", "done", "failed"]


@dataclass(frozen=True, slots=True)
class Intent:
    """An effect recorded before it is carried out (the outbox): a warning, an escalation, one
    notification on one channel, a morning report, a panic press handed over.

    Whoever owns it (``owner``: a site's alerts) carries it out and marks it ``done``; until then it is
    ``pending`` and retried from the store after any crash, not before ``next_at``. ``failed`` once
    the retries are spent (recorded, never retried again).
    """

    key: str
    owner: str
    kind: str
    data: dict[str, Any]
    state: IntentState = "pending"
    attempts: int = 0
    next_at: float = 0.0
    created: float = 0.0
    error: str = ""


@dataclass(frozen=True, slots=True)
class StoredIncident:
    incident: Incident
    state: IncidentState


class Store(Protocol):
    def open_incident(self, incident: Incident) -> bool:
        """Insert the incident in state ``open``; False when it already exists."""
        ...

    def record_event(
        self, incident_id: str, kind: str, ts: float, data: dict[str, Any], key: str | None = None
    ) -> bool:
        """Append an event to the incident's timeline; False when ``key`` (default ``kind``) exists."""
        ...

    def has_event(self, incident_id: str, key: str) -> bool: ...

    def transition(self, incident_id: str, transition: Transition, ts: float, data: dict[str, Any], *,
                   kind: str | None = None, key: str | None = None) -> Outcome:
        """Move the incident by ``transition`` (``incidents/lifecycle.py``) and append its event (``kind``,
        default the transition's name; ``key``, default ``kind``), both in one atomic write. Refused,
        writing nothing, when the stored state does not allow it or the key is already recorded."""
        ...

    def incidents(self) -> list[StoredIncident]: ...

    def events(self, incident_id: str | None = None, after_seq: int = 0) -> list[StoredEvent]: ...

    def claim(self, key: str, ts: float, data: dict[str, Any]) -> bool:
        """Record a one-off action outside any incident (a sent report); False when already claimed."""
        ...

    # --- the outbox: effects recorded before they are carried out ------------------------------------

    def add_intent(self, key: str, owner: str, kind: str, data: dict[str, Any], ts: float) -> bool:
        """Record a pending intent; False when ``key`` exists (in whatever state)."""
        ...

    def get_intent(self, key: str) -> Intent | None: ...

    def pending_intents(self, owner: str) -> list[Intent]:
        """The owner's pending intents, oldest first (whatever their ``next_at``)."""
        ...

    def update_intent(self, key: str, state: IntentState, *, attempts: int, next_at: float = 0.0,
                      error: str = "") -> None:
        """Mark an intent done or failed, or keep it pending for a retry at ``next_at``."""
        ...

    # --- end of the outbox ---------------------------------------------------------------------------

    def put_setting(self, key: str, data: dict[str, Any]) -> None:
        """Set a small runtime setting (a site's arm/disarm override), replacing the previous value."""
        ...

    def get_setting(self, key: str) -> dict[str, Any] | None: ...

    # --- API reads, audit log (API): append-only, never updated nor deleted -----------------------

    def get_incident(self, incident_id: str) -> StoredIncident | None:
        """One incident by id, without reading the others (the API opens one per request)."""
        ...


    def append_audit(self, ts: float, user: str, action: str, target: str, data: dict[str, Any]) -> int:
        """Append one record; returns its ``seq`` (increasing in append order)."""
        ...

    def audit_log(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        """Records after ``after_seq`` in append order, at most ``limit`` of them."""
        ...

    # --- end of API reads and audit log ------------------------------------------------------------

    # --- audit purge and revocations (security) ----------------------------------------------------

    def purge_audit(self, before_ts: float, by: str, now: float) -> int:
        """Remove the audit records older than ``before_ts`` in one operation, itself audited
        (``audit_purged``, with the hash the first record kept chains to); returns how many."""
        ...

    def revoke(self, key: str, until: float) -> None:
        """Revoke ``key`` (a session, an incident's links) until ``until`` (its own expiry)."""
        ...

    def is_revoked(self, key: str, now: float) -> bool: ...

    # --- end of audit purge and revocations --------------------------------------------------------

    def close(self) -> None: ...
