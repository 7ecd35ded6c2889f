from __future__ import annotations

from pathlib import Path

from flux_secu.rules.incident import Incident, IncidentKind, IncidentState, incident_id
from flux_secu.store.sqlite import SQLiteStore


def make_incident(ts: float = 1_790_000_000.0) -> Incident:
    return Incident(
        id=incident_id(IncidentKind.INTRUSION, "cam-a", ts), kind=IncidentKind.INTRUSION, site="s",
        camera="cam-a", label="person", opened_at=ts + 0.4, clip_time_s=6.8, first_seen_ts=ts, score=0.8,
    )


def test_incidents_and_events_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    incident = make_incident()
    assert store.open_incident(incident)
    assert store.record_event(incident.id, "warning", 1.0, {"speaker": "hp"}, key="warning:hp")
    store.set_state(incident.id, IncidentState.WARNED)
    store.close()

    reopened = SQLiteStore(path)
    (stored,) = reopened.incidents()
    assert stored.incident == incident and stored.state is IncidentState.WARNED
    assert [e.kind for e in reopened.events(incident.id)] == ["opened", "warning"]
    assert reopened.has_event(incident.id, "warning:hp")


def test_replaying_a_step_changes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    incident = make_incident()
    assert store.open_incident(incident)
    assert not store.open_incident(incident)
    assert store.record_event(incident.id, "notification", 1.0, {}, key="n:0")
    assert not store.record_event(incident.id, "notification", 2.0, {}, key="n:0")
    assert len(store.incidents()) == 1
    assert len(store.events(incident.id)) == 2


def test_events_can_be_tailed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    first, second = make_incident(1.0), make_incident(100.0)
    store.open_incident(first)
    last = store.events()[-1].seq
    store.open_incident(second)
    assert [e.incident_id for e in store.events(after_seq=last)] == [second.id]
