"""The incident state machine: the states, the events that move an incident, and which moves are allowed.

One owner. No code sets an incident's state directly: it asks the store to apply an event
(``Store.transition``), and the store applies it only when this table allows it from the state the
store holds, in the same atomic write as the event itself. So no state goes backwards (a slow
speaker's ``warned`` arriving after ``escalated``), and an acknowledgement is never overwritten by
anything but ``closed``.

=================  ====================================  ============  =====================================
event              allowed from                          to            what it means
=================  ====================================  ============  =====================================
``warned``         open                                  warned        a warning played on a speaker
``escalated``      open, warned                          escalated     the on-call chain starts (still
                                                                       there, unverifiable, tampered,
                                                                       no speaker, a panic)
``deterred``       open, warned                          deterred      the recheck saw a healthy, empty view
``acknowledged``   open, warned, escalated, deterred     acknowledged  a person took it in charge: stops
                                                                       every chain
``resolved``       acknowledged, deterred, escalated     closed        an operator closed it
``closed``         any state but closed                  closed        over (a fault cleared, an activity
                                                                       recorded)
=================  ====================================  ============  =====================================

``opened`` creates an incident in ``open`` (``Store.open_incident``). ``confirmed``, ``recheck`` and
``tampered`` are timeline events that change no state by themselves: a recheck ends in ``escalated``
or ``deterred``, a tampered camera (``incidents/recheck.py``) in ``escalated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from flux_secu.rules.incident import IncidentState

S = IncidentState


class Transition(StrEnum):
    """An event that moves an incident from one state to another."""

    WARNED = "warned"
    ESCALATED = "escalated"
    DETERRED = "deterred"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CLOSED = "closed"


_ALL = frozenset(IncidentState)

RULES: dict[Transition, tuple[frozenset[IncidentState], IncidentState]] = {
    Transition.WARNED: (frozenset({S.OPEN}), S.WARNED),
    Transition.ESCALATED: (frozenset({S.OPEN, S.WARNED}), S.ESCALATED),
    Transition.DETERRED: (frozenset({S.OPEN, S.WARNED}), S.DETERRED),
    Transition.ACKNOWLEDGED: (frozenset({S.OPEN, S.WARNED, S.ESCALATED, S.DETERRED}), S.ACKNOWLEDGED),
    Transition.RESOLVED: (frozenset({S.ACKNOWLEDGED, S.DETERRED, S.ESCALATED}), S.CLOSED),
    Transition.CLOSED: (_ALL - {S.CLOSED}, S.CLOSED),
}
"""Each transition: the states it is allowed from, and the state it leads to."""

LIVE = frozenset({S.OPEN, S.WARNED, S.ESCALATED, S.ACKNOWLEDGED})
"""An intrusion in one of these states is still going on: a camera that sees the intruder next joins it."""

VERIFYING = frozenset({S.OPEN, S.WARNED})
"""Warned (or about to be) and waiting for its recheck: a tampered camera now escalates it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the store did with a transition: ``applied`` False means nothing was written."""

    applied: bool
    state: IncidentState | None
    """The incident's state after the call (None: no such incident)."""
    reason: str = ""
    """Why it was refused: ``unknown incident``, ``already recorded``, ``not allowed from <state>``."""


def allowed_from(transition: Transition) -> frozenset[IncidentState]:
    return RULES[transition][0]


def target(transition: Transition) -> IncidentState:
    return RULES[transition][1]


def next_state(current: IncidentState, transition: Transition) -> IncidentState | None:
    """The state ``transition`` leads to from ``current``; None when it is not allowed from there.

    >>> next_state(IncidentState.ESCALATED, Transition.WARNED) is None
    True
    >>> next_state(IncidentState.WARNED, Transition.ESCALATED)
    <IncidentState.ESCALATED: 'escalated'>
    """
    sources, to = RULES[transition]
    return to if current in sources else None
