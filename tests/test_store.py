"""The store contract, run against every store (SQLite, and Redis on a real redis-server); then what
only a networked store has to survive: Redis restarts and crashes, lost replies, an unreachable server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flux_secu.incidents.lifecycle import Transition
from flux_secu.rules.incident import Incident, IncidentKind, IncidentState, incident_id
from flux_secu.store.base import Store

from .conftest import LOWLIGHT_CLIP, RedisServer, build_config

StoreFactory = Callable[[], Store]


def make_incident(ts: float = 1_790_000_000.0, camera: str = "cam-a") -> Incident:
    return Incident(
        id=incident_id(IncidentKind.INTRUSION, camera, ts), kind=IncidentKind.INTRUSION, site="s",
        camera=camera, label="person", opened_at=ts + 0.4, clip_time_s=6.8, first_seen_ts=ts, score=0.8,
        detections=[{"label": "person", "score": 0.8, "box": [1.5, 2.0, 30.25, 80.0]}],
    )


# --- the contract: every store ----------------------------------------------------------------------


def test_incidents_and_events_survive_close_and_reopen(store_factory: StoreFactory) -> None:
    store = store_factory()
    incident = make_incident()
    assert store.open_incident(incident)
    assert store.record_event(incident.id, "warning", 1.0, {"speaker": "hp"}, key="warning:hp")
    assert store.transition(incident.id, Transition.WARNED, 1.5, {}).applied
    assert store.claim("report:s:2026-11-25", 3.0, {"sent": True})
    store.close()

    reopened = store_factory()
    (stored,) = reopened.incidents()
    assert stored.incident == incident and stored.state is IncidentState.WARNED
    assert [e.kind for e in reopened.events(incident.id)] == ["opened", "warning", "warned"]
    assert reopened.has_event(incident.id, "warning:hp")
    assert not reopened.claim("report:s:2026-11-25", 4.0, {})


def test_replaying_a_step_changes_nothing(store_factory: StoreFactory) -> None:
    store = store_factory()
    incident = make_incident()
    assert store.open_incident(incident)
    assert not store.open_incident(incident)
    assert store.record_event(incident.id, "notification", 1.0, {}, key="n:0")
    assert not store.record_event(incident.id, "notification", 2.0, {"other": 1}, key="n:0")
    assert store.record_event(incident.id, "recheck", 3.0, {})  # key defaults to the kind...
    assert not store.record_event(incident.id, "recheck", 4.0, {})
    assert store.record_event(incident.id, "recheck", 4.0, {}, key="recheck:2")  # ...unless given
    assert len(store.incidents()) == 1
    events = store.events(incident.id)
    assert [(e.key, e.ts) for e in events] == [("opened", incident.opened_at), ("n:0", 1.0),
                                               ("recheck", 3.0), ("recheck:2", 4.0)]
    assert events[1].data == {}  # the first write stands


def test_the_same_key_in_two_incidents_is_two_events(store_factory: StoreFactory) -> None:
    store = store_factory()
    first, second = make_incident(1.0), make_incident(2.0)
    for inc in (first, second):
        assert store.open_incident(inc)
        assert store.record_event(inc.id, "warning", 5.0, {}, key="warning:hp")
    assert [e.incident_id for e in store.events() if e.key == "warning:hp"] == [first.id, second.id]


def test_events_round_trip_exactly(store_factory: StoreFactory) -> None:
    store = store_factory()
    incident = make_incident()
    store.open_incident(incident)
    data = {"text": "Quittez les lieux immédiatement ✋", "nested": {"n": [1, 2.5, None, True]}, "empty": ""}
    ts = 1_790_000_000.123456789
    assert store.record_event(incident.id, "note", ts, data, key="note:1")
    opened, note = store.events(incident.id)
    assert opened.data == incident.to_dict() and opened.ts == incident.opened_at
    assert (note.incident_id, note.key, note.kind) == (incident.id, "note:1", "note")
    assert (note.ts, note.data) == (ts, data)
    assert isinstance(note.seq, int) and note.seq > opened.seq > 0


def test_events_can_be_tailed(store_factory: StoreFactory) -> None:
    store = store_factory()
    first, second = make_incident(1.0), make_incident(100.0)
    store.open_incident(first)
    last = store.events()[-1].seq
    store.open_incident(second)
    assert [e.incident_id for e in store.events(after_seq=last)] == [second.id]


def test_a_tail_sees_every_event_once_in_append_order(store_factory: StoreFactory) -> None:
    writer, reader = store_factory(), store_factory()
    incidents = [make_incident(float(i)) for i in range(3)]
    seen: list[tuple[str, str]] = []
    after = 0
    for round_ in range(4):
        for inc in incidents:
            if round_ == 0:
                writer.open_incident(inc)
            else:
                writer.record_event(inc.id, "tick", float(round_), {"round": round_}, key=f"tick:{round_}")
        new = reader.events(after_seq=after)
        assert [e.seq for e in new] == sorted(e.seq for e in new) and all(e.seq > after for e in new)
        seen += [(e.incident_id, e.key) for e in new]
        after = new[-1].seq
    assert reader.events(after_seq=after) == []
    expected = [(inc.id, "opened") for inc in incidents]
    expected += [(inc.id, f"tick:{r}") for r in range(1, 4) for inc in incidents]
    assert seen == expected


def test_one_incidents_events_after_a_seq(store_factory: StoreFactory) -> None:
    store = store_factory()
    first, second = make_incident(1.0), make_incident(2.0)
    store.open_incident(first)
    store.open_incident(second)
    store.record_event(first.id, "warning", 3.0, {})
    store.record_event(second.id, "warning", 3.0, {})
    store.record_event(first.id, "recheck", 4.0, {})
    events = store.events(first.id)
    assert [e.kind for e in events] == ["opened", "warning", "recheck"]
    assert [e.kind for e in store.events(first.id, after_seq=events[0].seq)] == ["warning", "recheck"]
    assert store.events(first.id, after_seq=events[-1].seq) == []
    assert store.events("intrusion-nowhere-1") == []


def test_incidents_are_listed_by_opening_time(store_factory: StoreFactory) -> None:
    store = store_factory()
    late, early, early_too = make_incident(50.0), make_incident(10.0), make_incident(10.0, camera="cam-b")
    for inc in (late, early_too, early):
        store.open_incident(inc)
    # Same opening time: by id, as SQLite's ORDER BY opened_at, id.
    assert [s.incident.id for s in store.incidents()] == [early.id, early_too.id, late.id]
    assert all(s.state is IncidentState.OPEN for s in store.incidents())


def test_has_event(store_factory: StoreFactory) -> None:
    store = store_factory()
    incident = make_incident()
    assert not store.has_event(incident.id, "opened")
    store.open_incident(incident)
    assert store.has_event(incident.id, "opened")
    assert not store.has_event(incident.id, "warning:hp")
    store.record_event(incident.id, "warning", 1.0, {}, key="warning:hp")
    assert store.has_event(incident.id, "warning:hp")
    assert not store.has_event(make_incident(5.0).id, "warning:hp")


def test_transitions_follow_the_lifecycle_and_never_go_back(store_factory: StoreFactory) -> None:
    store = store_factory()
    incident = make_incident()
    store.open_incident(incident)
    warned = store.transition(incident.id, Transition.WARNED, 1.0, {"speaker": "hp"})
    assert warned.applied and warned.state is IncidentState.WARNED
    escalated = store.transition(incident.id, Transition.ESCALATED, 2.0, {"reason": "toujours là"})
    assert escalated.applied and escalated.state is IncidentState.ESCALATED
    # A slow speaker's "warned" after the escalation: refused, nothing written, and it says why.
    late = store.transition(incident.id, Transition.WARNED, 3.0, {}, key="warned:late")
    assert not late.applied and late.state is IncidentState.ESCALATED and "escalated" in late.reason
    assert store.transition(incident.id, Transition.ACKNOWLEDGED, 4.0, {"by": "marc"}).applied
    for refused in (Transition.DETERRED, Transition.ESCALATED, Transition.WARNED):
        outcome = store.transition(incident.id, refused, 5.0, {}, key=f"{refused}:again")
        assert not outcome.applied and outcome.state is IncidentState.ACKNOWLEDGED
    assert store.get_incident(incident.id).state is IncidentState.ACKNOWLEDGED  # type: ignore[union-attr]
    assert [e.kind for e in store.events(incident.id)] == ["opened", "warned", "escalated", "acknowledged"]
    closed = store.transition(incident.id, Transition.RESOLVED, 6.0, {"by": "marc"})
    assert closed.applied and closed.state is IncidentState.CLOSED
    assert not store.transition(incident.id, Transition.CLOSED, 7.0, {}).applied  # closed is final


def test_a_transition_is_once_per_key(store_factory: StoreFactory) -> None:
    store = store_factory()
    incident = make_incident()
    store.open_incident(incident)
    assert store.transition(incident.id, Transition.CLOSED, 1.0, {"n": 1}, kind="video_restored").applied
    again = store.transition(incident.id, Transition.CLOSED, 2.0, {"n": 2}, kind="video_restored")
    assert not again.applied and again.state is IncidentState.CLOSED
    (event,) = [e for e in store.events(incident.id) if e.key == "video_restored"]
    assert event.data == {"n": 1} and event.kind == "video_restored"


def test_a_transition_of_an_unknown_incident_creates_nothing(store_factory: StoreFactory) -> None:
    store = store_factory()
    ghost = make_incident(7.0)
    outcome = store.transition(ghost.id, Transition.WARNED, 1.0, {})
    assert not outcome.applied and outcome.state is None and outcome.reason == "unknown incident"
    assert store.incidents() == [] and store.events() == []
    assert store.open_incident(ghost)
    assert store.incidents()[0].state is IncidentState.OPEN


def test_racing_transitions_apply_exactly_one(store_factory: StoreFactory) -> None:
    """An acknowledgement and a deterred recheck at the same instant, from two connections."""
    store = store_factory()
    incident = make_incident()
    store.open_incident(incident)
    outcomes: list[Any] = []
    barrier = threading.Barrier(2)

    def run(transition: Transition) -> None:
        mine = store_factory()
        barrier.wait()
        outcomes.append((transition, mine.transition(incident.id, transition, 1.0, {})))

    racing = (Transition.ACKNOWLEDGED, Transition.DETERRED)
    threads = [threading.Thread(target=run, args=(t,)) for t in racing]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.get_incident(incident.id)
    applied = {t for t, o in outcomes if o.applied}
    # Whichever came first, the acknowledgement stands: deterred is refused after it, and it is
    # allowed after deterred. Never both orders at once: the timeline says which one won.
    assert final is not None and final.state is IncidentState.ACKNOWLEDGED
    assert Transition.ACKNOWLEDGED in applied
    kinds = [e.kind for e in store.events(incident.id)][1:]
    assert kinds == (["deterred", "acknowledged"] if Transition.DETERRED in applied else ["acknowledged"])


def test_the_outbox_keeps_each_intent_once_until_it_is_settled(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.add_intent("warn:i-1", "site-a", "warn", {"incident": {"id": "i-1"}}, 10.0)
    assert not store.add_intent("warn:i-1", "site-a", "warn", {"other": 1}, 11.0)  # once
    assert store.add_intent("notify:i-1:0", "site-a", "notify", {}, 12.0)
    assert store.add_intent("warn:i-2", "site-b", "warn", {}, 9.0)
    assert [i.key for i in store.pending_intents("site-a")] == ["warn:i-1", "notify:i-1:0"]  # oldest first
    got = store_factory().get_intent("warn:i-1")  # another connection, another process
    assert got is not None and got.data == {"incident": {"id": "i-1"}} and got.state == "pending"
    assert (got.owner, got.kind, got.attempts, got.created) == ("site-a", "warn", 0, 10.0)
    store.update_intent("notify:i-1:0", "pending", attempts=1, next_at=20.5, error="HTTP 503")
    retry = store.get_intent("notify:i-1:0")
    assert retry is not None and (retry.attempts, retry.next_at, retry.error) == (1, 20.5, "HTTP 503")
    store.update_intent("warn:i-1", "done", attempts=1)
    store.update_intent("notify:i-1:0", "failed", attempts=5, error="HTTP 503")
    assert store.pending_intents("site-a") == []
    assert [i.key for i in store.pending_intents("site-b")] == ["warn:i-2"]
    assert store.get_intent("warn:i-1").state == "done"  # type: ignore[union-attr]
    assert store.get_intent("notify:i-1:0").state == "failed"  # type: ignore[union-attr]
    assert store.get_intent("nothing") is None
    store.update_intent("nothing", "done", attempts=1)  # an unknown key stays unknown
    assert store.get_intent("nothing") is None


def test_claim(store_factory: StoreFactory) -> None:
    store, other = store_factory(), store_factory()
    assert store.claim("report:s:2026-11-25", 1.0, {"to": ["ops"]})
    assert not store.claim("report:s:2026-11-25", 2.0, {})
    assert not other.claim("report:s:2026-11-25", 2.0, {})
    assert other.claim("report:s:2026-11-26", 2.0, {})
    assert store.events() == []  # claims are not incident events


def test_settings_are_replaced_and_kept(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.get_setting("override:site-a") is None
    store.put_setting("override:site-a", {"armed": True, "until": None})
    store.put_setting("override:site-a", {"armed": False, "until": 1_790_000_000.5, "by": "Zoé"})
    store.put_setting("override:site-b", {"armed": True})
    store.close()
    reopened = store_factory()
    assert reopened.get_setting("override:site-a") == {"armed": False, "until": 1_790_000_000.5, "by": "Zoé"}
    assert reopened.get_setting("override:site-b") == {"armed": True}
    assert reopened.events() == [] and reopened.incidents() == []


def test_concurrent_writers_get_exactly_one_true(store_factory: StoreFactory) -> None:
    stores = [store_factory(), store_factory()]
    threads_per_store, rounds = 3, 15
    incident = make_incident()
    results: dict[str, list[bool]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(len(stores) * threads_per_store)

    def work(store: Store) -> None:
        for r in range(rounds):
            barrier.wait()  # every thread races on the same keys at the same time
            outcomes = {
                "open": store.open_incident(incident),
                f"event:{r}": store.record_event(incident.id, "notification", float(r), {}, key=f"n:{r}"),
                f"claim:{r}": store.claim(f"report:{r}", float(r), {}),
            }
            with lock:
                for name, won in outcomes.items():
                    results.setdefault(name, []).append(won)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(threads_per_store)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 1 + 2 * rounds
    assert all(sum(won) == 1 for won in results.values()), results
    events = stores[0].events(incident.id)
    assert [e.key for e in events] == ["opened", *[f"n:{r}" for r in range(rounds)]]
    assert len({e.seq for e in stores[1].events()}) == 1 + rounds


# --- the contract, API reads and audit log: every store ---------------------------------------------


def test_the_audit_log_keeps_every_record_in_order_across_reopen(store_factory: StoreFactory) -> None:
    store, other = store_factory(), store_factory()
    first = store.append_audit(1.5, "zoé", "evidence_view", "intrusion-cam-a-1/snapshot.jpg",
                               {"ip": "127.0.0.1", "sha256": "ab" * 32})
    second = other.append_audit(2.5, "marc", "acknowledge", "intrusion-cam-a-1", {"via": "api"})
    third = store.append_audit(2.5, "marc", "acknowledge", "intrusion-cam-a-1", {"via": "api"})
    assert 0 < first < second < third  # the same line twice is two records: nothing is merged
    store.close()
    reopened = store_factory()
    records = reopened.audit_log()
    assert [(r.seq, r.ts, r.user, r.action, r.target) for r in records] == [
        (first, 1.5, "zoé", "evidence_view", "intrusion-cam-a-1/snapshot.jpg"),
        (second, 2.5, "marc", "acknowledge", "intrusion-cam-a-1"),
        (third, 2.5, "marc", "acknowledge", "intrusion-cam-a-1"),
    ]
    assert records[0].data == {"ip": "127.0.0.1", "sha256": "ab" * 32}
    assert [r.seq for r in reopened.audit_log(after_seq=first)] == [second, third]
    assert [r.seq for r in reopened.audit_log(limit=2)] == [first, second]
    assert reopened.audit_log(after_seq=third) == []
    assert reopened.events() == [] and reopened.incidents() == []  # not incident events


def test_one_incident_by_id(store_factory: StoreFactory) -> None:
    store = store_factory()
    first, second = make_incident(1.0), make_incident(2.0)
    for inc in (first, second):
        store.open_incident(inc)
    store.transition(second.id, Transition.ESCALATED, 3.0, {})
    got = store_factory().get_incident(second.id)
    assert got is not None and got.incident == second and got.state is IncidentState.ESCALATED
    assert store.get_incident(first.id) == store.incidents()[0]
    assert store.get_incident("intrusion-nowhere-1") is None
    store.transition("intrusion-nowhere-1", Transition.WARNED, 4.0, {})  # a bare state is no incident
    assert store.get_incident("intrusion-nowhere-1") is None


def test_sqlite_refuses_to_rewrite_the_audit_log(tmp_path: Path) -> None:
    import sqlite3

    from flux_secu.store import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    store.append_audit(1.0, "zoé", "export", "i-1", {})
    raw = sqlite3.connect(tmp_path / "s.db")
    for sql in ("UPDATE audit SET user = 'nobody'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(sql)
    raw.close()
    assert [r.user for r in store.audit_log()] == ["zoé"]
    store.close()


# --- end of the audit log contract ------------------------------------------------------------------


# --- Redis only: restarts, crashes, lost replies ----------------------------------------------------


def fill(store: Store, events: int) -> Incident:
    incident = make_incident()
    assert store.open_incident(incident)
    for i in range(events):
        assert store.record_event(incident.id, "notification", float(i), {"i": i}, key=f"n:{i}")
    store.transition(incident.id, Transition.ESCALATED, float(events), {})
    assert store.claim("report:s:2026-11-25", 1.0, {})
    return incident


def check_all_there(store: Store, incident: Incident, events: int) -> None:
    (stored,) = store.incidents()
    assert stored.incident == incident and stored.state is IncidentState.ESCALATED
    got = store.events(incident.id)
    assert [e.key for e in got] == ["opened", *[f"n:{i}" for i in range(events)], "escalated"]
    assert [e.data for e in got[1:-1]] == [{"i": i} for i in range(events)]
    assert store.events() == got
    assert not store.claim("report:s:2026-11-25", 2.0, {})
    assert not store.record_event(incident.id, "notification", 0.0, {}, key="n:0")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_a_redis_restart_or_crash_loses_nothing(private_redis: RedisServer, how: str) -> None:
    from flux_secu.store.redis import RedisStore

    store = RedisStore(private_redis.url, "restart")
    incident = fill(store, 40)
    last_seq = store.events()[-1].seq
    private_redis.stop(kill=how == "kill")  # kill: SIGKILL, nothing flushed at exit
    private_redis.start()
    check_all_there(store, incident, 40)  # the same store object: its connections broke
    check_all_there(RedisStore(private_redis.url, "restart"), incident, 40)
    # Numbering goes on after the restart: a reader tailing by seq misses nothing.
    assert store.record_event(incident.id, "acknowledged", 5.0, {})
    (new,) = store.events(after_seq=last_seq)
    assert new.kind == "acknowledged" and new.seq > last_seq
    store.close()


@pytest.mark.slow
def test_a_call_made_while_redis_is_down_succeeds_once_it_is_back(private_redis: RedisServer) -> None:
    from flux_secu.store.redis import RedisStore

    store = RedisStore(private_redis.url, "down")
    incident = make_incident()
    assert store.open_incident(incident)
    private_redis.stop()
    restart = threading.Timer(1.0, private_redis.start)
    t0 = time.monotonic()
    restart.start()
    try:
        assert store.record_event(incident.id, "warning", 1.0, {"speaker": "hp"}, key="warning:hp")
        waited = time.monotonic() - t0
    finally:
        restart.join()
    assert 0.9 <= waited < 10, waited
    assert [e.key for e in store.events(incident.id)] == ["opened", "warning:hp"]
    store.close()


def test_a_write_whose_reply_was_lost_is_retried_and_answers_as_the_first_try(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from flux_secu.store.redis import RedisStore

    store = RedisStore(redis_server.url, f"lost-reply-{uuid.uuid4().hex[:8]}")

    def reply_lost_once(name: str) -> None:
        real = getattr(store, name)
        failed: list[bool] = []

        def call(keys: list[str], args: list[Any]) -> Any:
            result = real(keys, args)  # the server did it...
            if not failed:
                failed.append(True)
                raise redis.ConnectionError("connection reset by peer")  # ...but the reply never came
            return result

        monkeypatch.setattr(store, name, call)

    for name in ("_open_incident", "_record_event", "_claim"):
        reply_lost_once(name)
    incident = make_incident()
    assert store.open_incident(incident)
    assert store.record_event(incident.id, "warning", 1.0, {}, key="warning:hp")
    assert store.claim("report:x", 1.0, {})
    assert [e.key for e in store.events(incident.id)] == ["opened", "warning:hp"]
    # Anyone else, or a later replay, still gets False.
    assert not store.open_incident(incident)
    assert not store.record_event(incident.id, "warning", 1.0, {}, key="warning:hp")
    assert not store.claim("report:x", 1.0, {})
    store.close()


def test_an_unreachable_redis_is_a_clear_error_after_the_bound(redis_server: RedisServer) -> None:
    import socket

    from flux_secu.store import StoreUnavailable
    from flux_secu.store.redis import RedisStore

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        RedisStore(f"redis://:s3cr3t-pw@127.0.0.1:{port}/0", unavailable_after_s=0.5)
    assert time.monotonic() - t0 < 3
    message = str(caught.value)
    assert "unreachable" in message and f"127.0.0.1:{port}" in message and "s3cr3t-pw" not in message


def test_store_config_selects_redis(tmp_path: Path, redis_server: RedisServer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from flux_secu.config import ConfigError
    from flux_secu.store import SQLiteStore, open_store
    from flux_secu.store.redis import RedisStore

    assert isinstance(open_store(build_config(tmp_path).store), SQLiteStore)
    monkeypatch.setenv("REDIS_URL_FOR_TESTS", redis_server.url)
    config = build_config(tmp_path, lambda d: d.update(
        store={"kind": "redis", "url": "${REDIS_URL_FOR_TESTS}", "prefix": "site-a"}))
    assert (config.store.kind, config.store.url.get_secret_value(), config.store.prefix) == (
        "redis", redis_server.url, "site-a")
    store = open_store(config.store)
    assert isinstance(store, RedisStore) and store.prefix == "site-a"
    store.close()
    with pytest.raises(ConfigError, match=r"store\.url: must be a redis://") as caught:
        build_config(tmp_path, lambda d: d.update(store={"kind": "redis", "url": "http://u:pw@h/0"}))
    assert "pw" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"store\.prefix"):
        build_config(tmp_path, lambda d: d.update(store={"kind": "redis", "prefix": "has space"}))


# --- end to end: the real pipeline on Redis, restarted in the middle of an incident -----------------


@pytest.mark.slow
def test_pipeline_on_redis_keeps_the_whole_incident_across_a_redis_restart(
    tmp_path: Path, private_redis: RedisServer, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.graph import Deployment
    from flux_secu.store.redis import RedisStore

    def edit(d: dict[str, Any]) -> None:
        d["store"] = {"kind": "redis", "url": private_redis.url, "prefix": "e2e"}
        d["sites"][0]["cameras"][0].update(loop=False, source=str(LOWLIGHT_CLIP))

    config = build_config(tmp_path, edit)
    store = RedisStore(private_redis.url, "e2e")
    dep = Deployment.build(config)
    try:
        site, camera = config.sites[0], config.sites[0].cameras[0]
        # 22:00 UTC is 23:00 in Paris: the site is closed.
        dep.add_camera(site.id, camera, realtime=False, clock_start=datetime(2026, 11, 25, 22, 0, tzinfo=UTC))
        deadline = time.monotonic() + 120
        while not store.incidents():  # the first person is confirmed: an incident is open
            assert time.monotonic() < deadline, "no incident was opened"
            time.sleep(0.02)
        before_outage = [e.kind for e in store.events()]
        private_redis.stop()  # in the middle of the incident: warning and recheck still to be written
        time.sleep(1.0)
        private_redis.start()
        stats = ray.get(dep.runs[camera.id], timeout=180)
        ray.get(dep.rules.flush.remote(), timeout=60)
    finally:
        for actor in dep.actors():
            ray.kill(actor, no_restart=True)
    assert stats["frames_lost"] == 0
    first = next(s for s in store.incidents() if (s.incident.clip_time_s or 0) < 22.8)
    assert first.incident.clip_time_s is not None and first.incident.clip_time_s <= 7.5
    # Evidence is written by the camera, in parallel with the warning: not part of this order.
    kinds = [e.kind for e in store.events(first.incident.id) if e.kind != "evidence"]
    assert kinds[:3] == ["opened", "confirmed", "warning"], (before_outage, kinds)
    assert "recheck" not in before_outage  # the outage did fall in the middle of the incident
    # Still there at the recheck (recheck_after_s: 4): escalated, the first contact notified once.
    assert {"recheck", "escalated", "notification"} <= set(kinds), kinds
    assert kinds.count("warning") == 1 and kinds.count("notification") == 1, kinds
    assert first.state is IncidentState.ESCALATED
    store.close()
