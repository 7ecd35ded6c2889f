"""Redis store: for a Ray cluster, where actors on several machines share one store.

Data layout (every key starts with ``{prefix}:``, so several deployments can share one Redis)::

    {prefix}:incident:{id}   hash    data (the incident as JSON), state, opened_at, token
    {prefix}:incidents       zset    incident ids, score opened_at (ties: by id, as SQLite's ORDER BY)
    {prefix}:events          stream  the global event log; entry id ``{seq}-0``, fields
                                     incident, key, kind, ts, data (JSON)
    {prefix}:seq             string  the last ``seq`` handed out (INCR)
    {prefix}:evkeys:{id}     hash    event key -> ``{seq}:{token}``: uniqueness of (incident, key),
                                     and where each of the incident's events sits in the stream
    {prefix}:claims          hash    claim key -> JSON {ts, data, token}
    {prefix}:settings        hash    setting key -> JSON (last write wins)
    {prefix}:outbox          hash    intent key -> JSON {owner, kind, data, state, attempts, next_at,
                                     created, error, token}
    {prefix}:outbox-pending:{owner}  zset  the owner's pending intent keys, score created
    {prefix}:audit           stream  the audit log (API); entry id ``{seq}-0``, fields ts, user, action,
                                     target, data (JSON), prev, hash (the chain); ``{prefix}:audit-seq``
                                     numbers it, ``{prefix}:audit-head`` is the last hash
    {prefix}:revoked:{key}   string  a revoked session or incident's links, expiring with what it revokes

Atomicity. Every write is one Lua script, and Redis runs a script to its end without interleaving any
other client's command: "is this key taken?" and "take it" cannot be separated, so two writers racing
on the same (incident, key) get exactly one True between them, whichever process or machine they are
on. Redis writes a script's effects to the append-only file (and to replicas) as one MULTI/EXEC
block, and when it loads an AOF whose tail is a half-written block it drops that block: a crash of
the server leaves all of a script's writes or none. Inside the script the event key is written last,
after the stream entry, so even a script that fails halfway (a key of the wrong type, say) cannot
leave a key claimed without its event: at worst ``seq`` skips a number.

``seq``. INCR of ``{prefix}:seq`` inside the same script as the XADD, used as the stream entry id
``{seq}-0``: an integer, increasing in append order, and an entry is visible to readers in the same
instant as its number, so a reader tailing with ``after_seq`` never sees seq N+1 while N is missing.

Lost replies. A call that fails on a broken connection may or may not have run on the server. Each
write carries a random token stored with what it created; a retry that finds its own token answers
as the first attempt did (True), so a reply lost in a Redis restart never turns "I opened this
incident" into "someone else did" — which would silence the warning.

Restarts. Connection errors (including Redis answering LOADING while it reads its AOF back) are
retried with exponential back-off and jitter for up to ``unavailable_after_s`` (30 s), then
:class:`~flux_secu.store.base.StoreUnavailable` is raised. Nothing is lost across a restart only if
the server persists every write before answering: ``appendonly yes`` with ``appendfsync always``
(``everysec`` may lose the last second on a crash of the server or its machine).

Needs Redis >= 5.0 (streams). A single server (or a Sentinel-managed primary) is assumed: the scripts
touch several keys, which Redis Cluster would only allow within one hash slot.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import structlog
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from flux_secu.incidents.lifecycle import Outcome, Transition, allowed_from, target
from flux_secu.redact import redact_url
from flux_secu.rules.incident import Incident, IncidentState
from flux_secu.store.base import (
    AuditRecord,
    Intent,
    IntentState,
    StoredEvent,
    StoredIncident,
    StoreUnavailable,
    audit_hash,
)

log = structlog.get_logger("flux_secu.store")

T = TypeVar("T")

# Appends one event unless its key exists; returns its seq, or 0 when another call recorded the key.
# Shared by the scripts below (Redis scripts cannot call each other).
_APPEND = """
local function append(keys_key, seq_key, stream_key, incident_id, key, kind, ts, data, token)
  local seen = redis.call('HGET', keys_key, key)
  if seen then
    local seq, owner = string.match(seen, '^(%d+):(.*)$')
    if owner == token then return tonumber(seq) end
    return 0
  end
  local seq = redis.call('INCR', seq_key)
  redis.call('XADD', stream_key, seq .. '-0',
             'incident', incident_id, 'key', key, 'kind', kind, 'ts', ts, 'data', data)
  redis.call('HSET', keys_key, key, seq .. ':' .. token)
  return seq
end
"""

# KEYS: incident hash, incidents zset, evkeys hash, seq, events stream
# ARGV: id, data, state, opened_at, token
_OPEN_INCIDENT = _APPEND + """
local owner = redis.call('HGET', KEYS[1], 'token')
if owner then
  if owner == ARGV[5] then return 1 end
  return 0
end
append(KEYS[3], KEYS[4], KEYS[5], ARGV[1], 'opened', 'opened', ARGV[4], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'state', ARGV[3], 'opened_at', ARGV[4], 'token', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""

# KEYS: evkeys hash, seq, events stream.  ARGV: incident id, key, kind, ts, data, token
_RECORD_EVENT = _APPEND + """
return append(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
"""

# KEYS: incident hash, evkeys hash, seq, events stream.
# ARGV: incident id, key, kind, ts, data, token, new state, allowed states (comma-separated).
# Returns {applied (0/1), state after, reason}. The state is checked and changed with the event in one
# script: no other client's transition can come between. An unknown incident stays unknown (a bare
# hash holding only a state would make a later open_incident believe the incident existed).
_TRANSITION = _APPEND + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, '', 'unknown incident'} end
local seen = redis.call('HGET', KEYS[2], ARGV[2])
if seen then
  local owner = string.match(seen, '^%d+:(.*)$')
  if owner == ARGV[6] then return {1, state, ''} end
  return {0, state, 'already recorded'}
end
local allowed = false
for s in string.gmatch(ARGV[8], '[^,]+') do
  if s == state then allowed = true end
end
if not allowed then return {0, state, 'not allowed from ' .. state} end
append(KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
redis.call('HSET', KEYS[1], 'state', ARGV[7])
return {1, ARGV[7], ''}
"""

# KEYS: claims hash.  ARGV: key, value (JSON with a token), token
_CLAIM = """
local seen = redis.call('HGET', KEYS[1], ARGV[1])
if seen then
  if cjson.decode(seen)['token'] == ARGV[3] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: outbox hash, the owner's pending zset.  ARGV: key, value (JSON with a token), token, created
_ADD_INTENT = """
local seen = redis.call('HGET', KEYS[1], ARGV[1])
if seen then
  if cjson.decode(seen)['token'] == ARGV[3] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""

# KEYS: outbox hash, the owner's pending zset.  ARGV: key, state, attempts, next_at, error.  Sending it
# again after a lost reply writes the same values: safe to retry as it is.
_UPDATE_INTENT = """
local seen = redis.call('HGET', KEYS[1], ARGV[1])
if not seen then return 0 end
local intent = cjson.decode(seen)
intent['state'] = ARGV[2]
intent['attempts'] = tonumber(ARGV[3])
intent['next_at'] = tonumber(ARGV[4])
intent['error'] = ARGV[5]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(intent))
if ARGV[2] ~= 'pending' then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

# KEYS: evkeys hash, events stream.  ARGV: after_seq.  One incident's events in seq order, read in
# one consistent snapshot instead of scanning the whole log.
_EVENTS_OF = """
local after = tonumber(ARGV[1])
local seqs = {}
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local seq = tonumber(string.match(v, '^(%d+):'))
  if seq and seq > after then table.insert(seqs, seq) end
end
table.sort(seqs)
local out = {}
for _, seq in ipairs(seqs) do
  local entry = redis.call('XRANGE', KEYS[2], seq .. '-0', seq .. '-0')
  if entry[1] then table.insert(out, entry[1]) end
end
return out
"""

# Errors after which the same call may succeed: the server restarting, loading its AOF (LOADING is a
# BusyLoadingError, a ConnectionError), or too slow to answer within the socket timeout.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)
_XRANGE_PAGE = 10_000


class RedisStore:
    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "flux-secu", *,
                 unavailable_after_s: float = 30.0, socket_timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self.unavailable_after_s = unavailable_after_s
        self._where = redact_url(url)
        # redis-py's own retries are off (Retry(..., 0)): _call() retries with a time bound instead,
        # and is the one place that knows a write is safe to resend (it carries a token).
        self._client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=socket_timeout_s,
            socket_connect_timeout=min(socket_timeout_s, 2.0), retry=Retry(NoBackoff(), 0),
        )
        self._open_incident: Script = self._client.register_script(_OPEN_INCIDENT)
        self._record_event: Script = self._client.register_script(_RECORD_EVENT)
        self._transition: Script = self._client.register_script(_TRANSITION)
        self._claim: Script = self._client.register_script(_CLAIM)
        self._add_intent: Script = self._client.register_script(_ADD_INTENT)
        self._update_intent: Script = self._client.register_script(_UPDATE_INTENT)
        self._events_of: Script = self._client.register_script(_EVENTS_OF)
        self._call("connect", self._client.ping)
        self._call("connect", self._warn_if_not_durable)

    # --- keys ---------------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # --- the Store protocol -------------------------------------------------------------------------

    def open_incident(self, incident: Incident) -> bool:
        data = json.dumps(incident.to_dict())
        keys = [self._key("incident", incident.id), self._key("incidents"),
                self._key("evkeys", incident.id), self._key("seq"), self._key("events")]
        args = [incident.id, data, str(IncidentState.OPEN), repr(float(incident.opened_at)), _token()]
        return bool(self._call("open_incident", lambda: self._open_incident(keys, args)))

    def record_event(
        self, incident_id: str, kind: str, ts: float, data: dict[str, Any], key: str | None = None
    ) -> bool:
        keys = [self._key("evkeys", incident_id), self._key("seq"), self._key("events")]
        args = [incident_id, key or kind, kind, repr(float(ts)), json.dumps(data), _token()]
        return bool(self._call("record_event", lambda: self._record_event(keys, args)))

    def has_event(self, incident_id: str, key: str) -> bool:
        keys_key = self._key("evkeys", incident_id)
        return bool(self._call("has_event", lambda: self._client.hexists(keys_key, key)))

    def transition(self, incident_id: str, transition: Transition, ts: float, data: dict[str, Any], *,
                   kind: str | None = None, key: str | None = None) -> Outcome:
        kind = kind or str(transition)
        keys = [self._key("incident", incident_id), self._key("evkeys", incident_id), self._key("seq"),
                self._key("events")]
        allowed = ",".join(sorted(str(s) for s in allowed_from(transition)))
        args = [incident_id, key or kind, kind, repr(float(ts)), json.dumps(data), _token(),
                str(target(transition)), allowed]
        applied, state, reason = self._call("transition", lambda: self._transition(keys, args))
        return Outcome(bool(applied), IncidentState(state) if state else None, str(reason))

    def incidents(self) -> list[StoredIncident]:
        def read() -> list[tuple[str | None, str | None]]:
            ids: list[str] = self._client.zrange(self._key("incidents"), 0, -1)
            pipe = self._client.pipeline(transaction=False)
            for incident_id in ids:
                pipe.hmget(self._key("incident", incident_id), ["data", "state"])
            return [(d, s) for d, s in pipe.execute()]

        # Both are written by one script, so an id in the zset always has its hash.
        return [StoredIncident(Incident.from_dict(json.loads(d)), IncidentState(s))
                for d, s in self._call("incidents", read) if d is not None and s is not None]

    def events(self, incident_id: str | None = None, after_seq: int = 0) -> list[StoredEvent]:
        if incident_id is not None:
            keys = [self._key("evkeys", incident_id), self._key("events")]
            entries = self._call("events", lambda: self._events_of(keys, [int(after_seq)]))
            return [_event(entry_id, fields) for entry_id, fields in entries]

        def read_page(start: int) -> list[tuple[str, dict[str, str]]]:
            # Entry ids are "{seq}-0": the first one after `start` is "{start + 1}-0".
            return self._client.xrange(self._key("events"), f"{start + 1}-0", "+", count=_XRANGE_PAGE)

        out: list[StoredEvent] = []
        start = int(after_seq)
        while True:
            page = self._call("events", lambda s=start: read_page(s))
            out.extend(_event(entry_id, fields) for entry_id, fields in page)
            if len(page) < _XRANGE_PAGE:
                return out
            start = out[-1].seq

    def claim(self, key: str, ts: float, data: dict[str, Any]) -> bool:
        token = _token()
        value = json.dumps({"ts": ts, "data": data, "token": token})
        keys = [self._key("claims")]
        return bool(self._call("claim", lambda: self._claim(keys, [key, value, token])))

    # --- the outbox --------------------------------------------------------------------------------

    def add_intent(self, key: str, owner: str, kind: str, data: dict[str, Any], ts: float) -> bool:
        token = _token()
        value = json.dumps({"owner": owner, "kind": kind, "data": data, "state": "pending", "attempts": 0,
                            "next_at": 0.0, "created": ts, "error": "", "token": token})
        keys = [self._key("outbox"), self._key("outbox-pending", owner)]
        return bool(self._call("add_intent", lambda: self._add_intent(keys, [key, value, token, repr(ts)])))

    def get_intent(self, key: str) -> Intent | None:
        value = self._call("get_intent", lambda: self._client.hget(self._key("outbox"), key))
        return None if value is None else _intent(key, value)

    def pending_intents(self, owner: str) -> list[Intent]:
        def read() -> list[tuple[str, str | None]]:
            keys: list[str] = self._client.zrange(self._key("outbox-pending", owner), 0, -1)
            values = self._client.hmget(self._key("outbox"), keys) if keys else []
            return list(zip(keys, values, strict=True))

        intents = [_intent(k, v) for k, v in self._call("pending_intents", read) if v is not None]
        return [i for i in intents if i.state == "pending"]

    def update_intent(self, key: str, state: IntentState, *, attempts: int, next_at: float = 0.0,
                      error: str = "") -> None:
        intent = self.get_intent(key)
        if intent is None:
            return
        keys = [self._key("outbox"), self._key("outbox-pending", intent.owner)]
        args = [key, state, attempts, repr(float(next_at)), error]
        self._call("update_intent", lambda: self._update_intent(keys, args))

    # --- end of the outbox ---------------------------------------------------------------------------

    def put_setting(self, key: str, data: dict[str, Any]) -> None:
        # A plain overwrite: sending it twice after a lost reply leaves the same value.
        value = json.dumps(data)
        self._call("put_setting", lambda: self._client.hset(self._key("settings"), key, value))

    def get_setting(self, key: str) -> dict[str, Any] | None:
        value = self._call("get_setting", lambda: self._client.hget(self._key("settings"), key))
        return None if value is None else dict(json.loads(value))

    # --- API reads, audit log (API) ----------------------------------------------------------------

    def get_incident(self, incident_id: str) -> StoredIncident | None:
        key = self._key("incident", incident_id)
        data, state = self._call("get_incident", lambda: self._client.hmget(key, ["data", "state"]))
        if data is None or state is None:
            return None
        return StoredIncident(Incident.from_dict(json.loads(data)), IncidentState(state))

    def append_audit(self, ts: float, user: str, action: str, target: str, data: dict[str, Any]) -> int:
        return int(self._call("append_audit", lambda: self._append_chained(ts, user, action, target, data)))

    def audit_log(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        def read() -> list[tuple[str, dict[str, str]]]:
            return self._client.xrange(self._key("audit"), f"{int(after_seq) + 1}-0", "+", count=limit)

        return [
            AuditRecord(int(entry_id.split("-", 1)[0]), float(f["ts"]), f["user"], f["action"], f["target"],
                        json.loads(f["data"]), f.get("prev", ""), f.get("hash", ""))
            for entry_id, f in self._call("audit_log", read)
        ]

    # --- end of API reads and audit log ------------------------------------------------------------

    def close(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()

    # --- audit chain, purge and revocations (security) ----------------------------------------------

    def _append_chained(self, ts: float, user: str, action: str, target: str, data: dict[str, Any]) -> int:
        """One audit record chained to the last one. The hash is computed here (Lua has no SHA-256),
        so the read of the head and the write are one optimistic transaction (WATCH): a writer that
        raced another retries on the new head. At least once, like every write here."""
        seq_key, head_key = self._key("audit-seq"), self._key("audit-head")
        with self._client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(seq_key, head_key)
                    seq = int(pipe.get(seq_key) or 0) + 1
                    prev = str(pipe.get(head_key) or "")
                    digest = audit_hash(prev, seq, float(ts), user, action, target, data)
                    pipe.multi()
                    pipe.set(seq_key, seq)
                    pipe.set(head_key, digest)
                    pipe.xadd(self._key("audit"), {"ts": repr(float(ts)), "user": user, "action": action,
                                                   "target": target, "data": json.dumps(data),
                                                   "prev": prev, "hash": digest}, id=f"{seq}-0")
                    pipe.execute()
                    return seq
                except redis.WatchError:
                    continue

    def purge_audit(self, before_ts: float, by: str, now: float) -> int:
        """See :meth:`flux_secu.store.base.Store.purge_audit`. Redis has no triggers: append-only is
        this class's rule, and the purge is the one method that deletes."""
        old = [r for r in self.audit_log() if r.ts < before_ts]
        if old:
            ids = [f"{r.seq}-0" for r in old]
            self._call("purge_audit", lambda: self._client.xdel(self._key("audit"), *ids))
        self.append_audit(now, by, "audit_purged", "audit", {
            "before": before_ts, "removed": len(old), "anchor": old[-1].hash if old else None})
        return len(old)

    def revoke(self, key: str, until: float) -> None:
        ttl_ms = max(1, int((until - time.time()) * 1000))
        self._call("revoke", lambda: self._client.set(self._key("revoked", key), "1", px=ttl_ms))

    def is_revoked(self, key: str, now: float) -> bool:
        return bool(self._call("is_revoked", lambda: self._client.exists(self._key("revoked", key))))

    # --- end of audit chain, purge and revocations --------------------------------------------------

    # --- plumbing -----------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried while Redis cannot be reached, for at most ``unavailable_after_s``."""
        deadline = time.monotonic() + self.unavailable_after_s
        delay = 0.05
        attempts = 0
        while True:
            try:
                return fn()
            except _TRANSIENT as exc:
                attempts += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailable(
                        f"redis store at {self._where} unreachable for {self.unavailable_after_s:g} s "
                        f"({attempts} attempts at {what}): {exc}"
                    ) from exc
                if attempts == 1:
                    log.warning("store_unreachable", store=self._where, op=what, error=str(exc))
                # Jitter: the actors of a whole cluster reconnect at once after a Redis restart.
                time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, 1.0)

    def _warn_if_not_durable(self) -> None:
        """Say so at start when the server would lose acknowledged writes in a crash."""
        try:
            conf: dict[str, str] = self._client.config_get("append*")
        except redis.ResponseError:  # CONFIG is often disabled on managed Redis: nothing to check
            return
        if conf.get("appendonly") != "yes" or conf.get("appendfsync") != "always":
            log.warning("store_not_durable", store=self._where, appendonly=conf.get("appendonly"),
                        appendfsync=conf.get("appendfsync"),
                        advice="set appendonly yes and appendfsync always, or a restart may lose incidents")


def _token() -> str:
    return uuid.uuid4().hex


def _event(entry_id: str, fields: dict[str, str] | list[str]) -> StoredEvent:
    if isinstance(fields, list):  # from a script: a flat [field, value, ...] list
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    return StoredEvent(
        seq=int(entry_id.split("-", 1)[0]), incident_id=fields["incident"], key=fields["key"],
        kind=fields["kind"], ts=float(fields["ts"]), data=json.loads(fields["data"]),
    )


def _intent(key: str, value: str) -> Intent:
    d = json.loads(value)
    return Intent(key, d["owner"], d["kind"], d["data"], d["state"], int(d["attempts"]), float(d["next_at"]),
                  float(d["created"]), d.get("error", ""))
