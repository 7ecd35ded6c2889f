"""SQLite store: the embedded default. Several actor processes may share one file (WAL mode)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from flux_secu.rules.incident import Incident, IncidentState
from flux_secu.store.base import StoredEvent, StoredIncident

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    site TEXT NOT NULL,
    camera TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (incident_id, key)
);
CREATE INDEX IF NOT EXISTS events_incident ON events(incident_id);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    data TEXT NOT NULL
);
"""


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; each write is its own durable transaction.
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def open_incident(self, incident: Incident) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO incidents (id, kind, site, camera, state, opened_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                incident.id, str(incident.kind), incident.site, incident.camera,
                str(IncidentState.OPEN), incident.opened_at, json.dumps(incident.to_dict()),
            ),
        )
        created = cursor.rowcount == 1
        if created:
            self.record_event(incident.id, "opened", incident.opened_at, incident.to_dict())
        return created

    def record_event(
        self, incident_id: str, kind: str, ts: float, data: dict[str, Any], key: str | None = None
    ) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO events (incident_id, key, kind, ts, data) VALUES (?, ?, ?, ?, ?)",
            (incident_id, key or kind, kind, ts, json.dumps(data)),
        )
        return cursor.rowcount == 1

    def has_event(self, incident_id: str, key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM events WHERE incident_id = ? AND key = ?", (incident_id, key)
        ).fetchone()
        return row is not None

    def set_state(self, incident_id: str, state: IncidentState) -> None:
        self._db.execute("UPDATE incidents SET state = ? WHERE id = ?", (str(state), incident_id))

    def incidents(self) -> list[StoredIncident]:
        rows = self._db.execute("SELECT data, state FROM incidents ORDER BY opened_at, id").fetchall()
        return [StoredIncident(Incident.from_dict(json.loads(d)), IncidentState(s)) for d, s in rows]

    def events(self, incident_id: str | None = None, after_seq: int = 0) -> list[StoredEvent]:
        query = "SELECT seq, incident_id, key, kind, ts, data FROM events WHERE seq > ?"
        args: list[Any] = [after_seq]
        if incident_id is not None:
            query += " AND incident_id = ?"
            args.append(incident_id)
        rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [StoredEvent(s, i, key, k, t, json.loads(d)) for s, i, key, k, t, d in rows]

    def claim(self, key: str, ts: float, data: dict[str, Any]) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO claims (key, ts, data) VALUES (?, ?, ?)", (key, ts, json.dumps(data))
        )
        return cursor.rowcount == 1

    def close(self) -> None:
        self._db.close()
