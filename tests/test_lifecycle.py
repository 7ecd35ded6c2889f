"""The incident state machine, every transition from every state (pure: no store, no Ray)."""

from __future__ import annotations

import pytest

from flux_secu.incidents.lifecycle import LIVE, RULES, Transition, next_state
from flux_secu.rules.incident import IncidentState

S = IncidentState
T = Transition

# The whole table, written out once more by hand: a change to the lifecycle has to change both.
EXPECTED: dict[tuple[Transition, IncidentState], IncidentState | None] = {
    (T.WARNED, S.OPEN): S.WARNED,
    (T.WARNED, S.WARNED): None,
    (T.WARNED, S.ESCALATED): None,  # a slow speaker after the escalation: never back to warned
    (T.WARNED, S.DETERRED): None,
    (T.WARNED, S.ACKNOWLEDGED): None,
    (T.WARNED, S.CLOSED): None,
    (T.ESCALATED, S.OPEN): S.ESCALATED,  # no speaker, panic, tampered before the warning played
    (T.ESCALATED, S.WARNED): S.ESCALATED,
    (T.ESCALATED, S.ESCALATED): None,  # one chain per incident
    (T.ESCALATED, S.DETERRED): None,
    (T.ESCALATED, S.ACKNOWLEDGED): None,  # somebody has it: no chain after that
    (T.ESCALATED, S.CLOSED): None,
    (T.DETERRED, S.OPEN): S.DETERRED,
    (T.DETERRED, S.WARNED): S.DETERRED,
    (T.DETERRED, S.ESCALATED): None,  # the chain runs until someone acknowledges
    (T.DETERRED, S.DETERRED): None,
    (T.DETERRED, S.ACKNOWLEDGED): None,
    (T.DETERRED, S.CLOSED): None,
    (T.ACKNOWLEDGED, S.OPEN): S.ACKNOWLEDGED,
    (T.ACKNOWLEDGED, S.WARNED): S.ACKNOWLEDGED,
    (T.ACKNOWLEDGED, S.ESCALATED): S.ACKNOWLEDGED,
    (T.ACKNOWLEDGED, S.DETERRED): S.ACKNOWLEDGED,
    (T.ACKNOWLEDGED, S.ACKNOWLEDGED): None,  # the first one stands
    (T.ACKNOWLEDGED, S.CLOSED): None,
    (T.RESOLVED, S.OPEN): None,  # nobody looked at it yet
    (T.RESOLVED, S.WARNED): None,
    (T.RESOLVED, S.ESCALATED): S.CLOSED,
    (T.RESOLVED, S.DETERRED): S.CLOSED,
    (T.RESOLVED, S.ACKNOWLEDGED): S.CLOSED,
    (T.RESOLVED, S.CLOSED): None,
    (T.CLOSED, S.OPEN): S.CLOSED,
    (T.CLOSED, S.WARNED): S.CLOSED,
    (T.CLOSED, S.ESCALATED): S.CLOSED,
    (T.CLOSED, S.DETERRED): S.CLOSED,
    (T.CLOSED, S.ACKNOWLEDGED): S.CLOSED,  # the only way out of acknowledged
    (T.CLOSED, S.CLOSED): None,
}


def test_the_table_covers_every_transition_from_every_state() -> None:
    assert set(EXPECTED) == {(t, s) for t in Transition for s in IncidentState}
    assert set(RULES) == set(Transition)


@pytest.mark.parametrize(("transition", "state"), sorted(EXPECTED, key=str))
def test_transition(transition: Transition, state: IncidentState) -> None:
    assert next_state(state, transition) is EXPECTED[(transition, state)]


def test_acknowledged_is_left_only_for_closed() -> None:
    leaving = {t for t in Transition if next_state(S.ACKNOWLEDGED, t) not in (None, S.ACKNOWLEDGED)}
    assert {next_state(S.ACKNOWLEDGED, t) for t in leaving} == {S.CLOSED}


def test_nothing_leaves_closed() -> None:
    assert all(next_state(S.CLOSED, t) is None for t in Transition)


def test_live_states() -> None:
    assert {S.DETERRED, S.CLOSED}.isdisjoint(LIVE) and S.ACKNOWLEDGED in LIVE
