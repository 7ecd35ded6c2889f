"""SQLite store: the embedded default. Several actor processes may share one file (WAL mode)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from flux_secu.incidents.lifecycle import Outcome, Transition, next_state
from flux_secu.rules.incident import Incident, IncidentState
from flux_secu.store.base import AuditRecord, Intent, IntentState, StoredEvent, StoredIncident, audit_hash

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
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    data TEXT NOT NULL
);
-- Append-only: the audit log is evidence of who saw what, so the database refuses to change it
-- (deletion: see _AUDIT_SCHEMA, only what an audited purge allows).
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(owner, state);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    data TEXT NOT NULL
);
"""


# --- audit chain, purge and revocations (security) ----------------------------------------------------
_AUDIT_SCHEMA = """
DROP TRIGGER IF EXISTS audit_no_delete;
CREATE TABLE IF NOT EXISTS audit_purges (
    before_ts REAL NOT NULL,
    ts REAL NOT NULL,
    by TEXT NOT NULL
);
-- Only records older than a recorded purge's cutoff may go, and the purge itself is audited.
CREATE TRIGGER IF NOT EXISTS audit_delete_only_purged BEFORE DELETE ON audit
WHEN old.ts >= COALESCE((SELECT max(before_ts) FROM audit_purges), -1e308)
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_purges_no_change BEFORE UPDATE ON audit_purges
BEGIN SELECT RAISE(ABORT, 'audit purges are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_purges_no_delete BEFORE DELETE ON audit_purges
BEGIN SELECT RAISE(ABORT, 'audit purges are append-only'); END;
-- The hash of the last record a purge removed: the first record kept chains to it.
CREATE TABLE IF NOT EXISTS audit_anchor (value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (
    key TEXT PRIMARY KEY,
    until REAL NOT NULL
);
"""
# --- end of audit chain, purge and revocations ------------------------------------------------------


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; each write is its own durable transaction.
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns, WAL included. NORMAL can lose the last commits
        # of the incident log (an acknowledgement, an audit line) on power loss.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self._migrate_audit()
        # rowcount is sqlite3_changes() of the connection, read after the statement: two threads
        # writing through this one connection (an actor with max_concurrency, a ticker thread)
        # could each read the other's count and both believe they inserted. One write at a time.
        self._write_lock = threading.Lock()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._write_lock:
            return self._db.execute(sql, args).rowcount

    def open_incident(self, incident: Incident) -> bool:
        # The incident and its "opened" event in one transaction: a crash between the two would
        # leave an incident without its first event, and another writer could slip an event of the
        # incident in before "opened".
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                created = self._db.execute(
                    "INSERT OR IGNORE INTO incidents (id, kind, site, camera, state, opened_at, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        incident.id, str(incident.kind), incident.site, incident.camera,
                        str(IncidentState.OPEN), incident.opened_at, json.dumps(incident.to_dict()),
                    ),
                ).rowcount == 1
                if created:
                    self._db.execute(
                        "INSERT OR IGNORE INTO events (incident_id, key, kind, ts, data) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (incident.id, "opened", "opened", incident.opened_at, json.dumps(incident.to_dict())),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return created

    def record_event(
        self, incident_id: str, kind: str, ts: float, data: dict[str, Any], key: str | None = None
    ) -> bool:
        return self._write(
            "INSERT OR IGNORE INTO events (incident_id, key, kind, ts, data) VALUES (?, ?, ?, ?, ?)",
            (incident_id, key or kind, kind, ts, json.dumps(data)),
        ) == 1

    def has_event(self, incident_id: str, key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM events WHERE incident_id = ? AND key = ?", (incident_id, key)
        ).fetchone()
        return row is not None

    def transition(self, incident_id: str, transition: Transition, ts: float, data: dict[str, Any], *,
                   kind: str | None = None, key: str | None = None) -> Outcome:
        kind = kind or str(transition)
        key = key or kind
        # BEGIN IMMEDIATE takes the database's write lock first: the state read and the update below
        # cannot interleave with another process's transition of the same incident.
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                outcome = self._transition(incident_id, transition, ts, data, kind, key)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return outcome

    def _transition(self, incident_id: str, transition: Transition, ts: float, data: dict[str, Any],
                    kind: str, key: str) -> Outcome:
        row = self._db.execute("SELECT state FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            return Outcome(False, None, "unknown incident")
        current = IncidentState(row[0])
        to = next_state(current, transition)
        if to is None:
            return Outcome(False, current, f"not allowed from {current}")
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO events (incident_id, key, kind, ts, data) VALUES (?, ?, ?, ?, ?)",
            (incident_id, key, kind, ts, json.dumps(data)),
        ).rowcount == 1
        if not inserted:
            return Outcome(False, current, "already recorded")
        self._db.execute("UPDATE incidents SET state = ? WHERE id = ?", (str(to), incident_id))
        return Outcome(True, to)

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
        return self._write(
            "INSERT OR IGNORE INTO claims (key, ts, data) VALUES (?, ?, ?)", (key, ts, json.dumps(data))
        ) == 1

    # --- the outbox --------------------------------------------------------------------------------

    def add_intent(self, key: str, owner: str, kind: str, data: dict[str, Any], ts: float) -> bool:
        return self._write(
            "INSERT OR IGNORE INTO outbox (key, owner, kind, data, state, created) VALUES (?, ?, ?, ?, ?, ?)",
            (key, owner, kind, json.dumps(data), "pending", ts),
        ) == 1

    _INTENT = "SELECT key, owner, kind, data, state, attempts, next_at, created, error FROM outbox"

    def get_intent(self, key: str) -> Intent | None:
        row = self._db.execute(self._INTENT + " WHERE key = ?", (key,)).fetchone()
        return None if row is None else _intent(row)

    def pending_intents(self, owner: str) -> list[Intent]:
        rows = self._db.execute(self._INTENT + " WHERE owner = ? AND state = 'pending' ORDER BY created, key",
                                (owner,)).fetchall()
        return [_intent(r) for r in rows]

    def update_intent(self, key: str, state: IntentState, *, attempts: int, next_at: float = 0.0,
                      error: str = "") -> None:
        self._write("UPDATE outbox SET state = ?, attempts = ?, next_at = ?, error = ? WHERE key = ?",
                    (state, attempts, next_at, error, key))

    # --- end of the outbox ---------------------------------------------------------------------------

    def put_setting(self, key: str, data: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO settings (key, data) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET data = excluded.data",
            (key, json.dumps(data)),
        )

    def get_setting(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT data FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # --- API reads, audit log (API) ----------------------------------------------------------------

    def get_incident(self, incident_id: str) -> StoredIncident | None:
        row = self._db.execute("SELECT data, state FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            return None
        return StoredIncident(Incident.from_dict(json.loads(row[0])), IncidentState(row[1]))

    def append_audit(self, ts: float, user: str, action: str, target: str, data: dict[str, Any]) -> int:
        with self._write_lock:
            # IMMEDIATE: the last hash and the new record in one transaction, whichever process writes.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._append_audit_locked(ts, user, action, target, data)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return seq

    def audit_log(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        rows = self._db.execute(
            "SELECT seq, ts, user, action, target, data, prev, hash FROM audit WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (after_seq, -1 if limit is None else limit),
        ).fetchall()
        return [AuditRecord(q, t, u, a, g, json.loads(d), p, h) for q, t, u, a, g, d, p, h in rows]

    # --- end of API reads and audit log ------------------------------------------------------------

    # --- audit chain, purge and revocations (security) ----------------------------------------------

    def _migrate_audit(self) -> None:
        """Add the chain's columns to an audit table made before they existed."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(audit)")}
        for name in ("prev", "hash"):
            if name not in columns:
                self._db.execute(f"ALTER TABLE audit ADD COLUMN {name} TEXT NOT NULL DEFAULT ''")
        self._db.executescript(_AUDIT_SCHEMA)

    def _append_audit_locked(self, ts: float, user: str, action: str, target: str,
                             data: dict[str, Any]) -> int:
        row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        prev = row[1] if row else self._purge_anchor()
        seq = (row[0] if row else self._max_seq()) + 1
        digest = audit_hash(prev, seq, ts, user, action, target, data)
        self._db.execute(
            "INSERT INTO audit (seq, ts, user, action, target, data, prev, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, user, action, target, json.dumps(data), prev, digest),
        )
        return seq

    def _max_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        return int(row[0]) if row else 0

    def _purge_anchor(self) -> str:
        """The hash the first record after a purge chains to: the last purged record's."""
        row = self._db.execute("SELECT value FROM audit_anchor").fetchone()
        return str(row[0]) if row else ""

    def purge_audit(self, before_ts: float, by: str, now: float) -> int:
        """Delete the records older than ``before_ts`` in one audited operation; returns how many.

        The purge is written first (the only thing that lets the database delete), then the
        ``audit_purged`` record names the cutoff, the count and the hash of the last record removed,
        to which the first record kept chains: the chain stays checkable from the first record kept.
        """
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute(
                    "SELECT hash FROM audit WHERE ts < ? ORDER BY seq DESC LIMIT 1", (before_ts,)
                ).fetchone()
                self._db.execute("INSERT INTO audit_purges (before_ts, ts, by) VALUES (?, ?, ?)",
                                 (before_ts, now, by))
                removed = self._db.execute("DELETE FROM audit WHERE ts < ?", (before_ts,)).rowcount
                if last is not None:
                    self._db.execute("DELETE FROM audit_anchor")
                    self._db.execute("INSERT INTO audit_anchor (value) VALUES (?)", (last[0],))
                self._append_audit_locked(now, by, "audit_purged", "audit", {
                    "before": before_ts, "removed": removed, "anchor": last[0] if last else None})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def revoke(self, key: str, until: float) -> None:
        with self._write_lock:
            self._db.execute(
                "INSERT INTO revoked (key, until) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET until = max(until, excluded.until)", (key, until))
            # Expired revocations are of no use: the thing they revoke has expired too.
            self._db.execute("DELETE FROM revoked WHERE until < ?", (until - 30 * 86400,))

    def is_revoked(self, key: str, now: float) -> bool:
        row = self._db.execute("SELECT until FROM revoked WHERE key = ?", (key,)).fetchone()
        return row is not None and float(row[0]) > now

    # --- end of audit chain, purge and revocations --------------------------------------------------

    def close(self) -> None:
        self._db.close()


def _intent(row: tuple[Any, ...]) -> Intent:
    key, owner, kind, data, state, attempts, next_at, created, error = row
    return Intent(key, owner, kind, json.loads(data), state, int(attempts), float(next_at), float(created),
                  error)
