"""Escalation policy: who is called, in which order, and when (pure logic, no Ray, no clock of its own).

The chain starts with the contact on call this week (the rota), then the other contacts in the order
of the config; each waits ``ack_timeout_s`` for an acknowledgement before the next one is notified,
and the whole chain is gone through ``rounds`` times (re-notification). Step times derive from the
instant the escalation started, so a restarted actor recomputes exactly the same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class RotaEntry:
    starts: date
    contact: str


@dataclass(frozen=True, slots=True)
class Step:
    """One notification of the chain; ``key`` is its idempotency key in the store."""

    round: int
    index: int
    contact: str
    due_at: float

    @property
    def key(self) -> str:
        return f"notify:{self.round}:{self.index}:{self.contact}"


def on_call(rota: Sequence[RotaEntry], day: date) -> str | None:
    """The contact whose rota entry started most recently on or before ``day``."""
    current = [e for e in rota if e.starts <= day]
    return max(current, key=lambda e: e.starts).contact if current else None


def chain(contacts: Sequence[str], rota: Sequence[RotaEntry], at: datetime) -> list[str]:
    """Contact names in calling order at local time ``at``: on-call first, then the others."""
    first = on_call(rota, at.date())
    if first is None or first not in contacts:
        return list(contacts)
    return [first, *(c for c in contacts if c != first)]


def plan(order: Sequence[str], started_at: float, ack_timeout_s: float, rounds: int) -> list[Step]:
    steps = []
    for r in range(rounds):
        for i, contact in enumerate(order):
            k = r * len(order) + i
            steps.append(Step(r, i, contact, started_at + k * ack_timeout_s))
    return steps


def due(steps: Sequence[Step], now: float, done: set[str], early: set[str] | None = None) -> list[Step]:
    """Steps whose time has come (or called ``early``) and that have not been sent yet, in order."""
    early = early or set()
    return [s for s in steps if (s.due_at <= now or s.key in early) and s.key not in done]
