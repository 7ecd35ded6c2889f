"""Exactly-once effects: the outbox of the site's alerts, against a real SQLite store and a real HTTP
receiver on loopback (apprise's ``json://``), with the faults injected for real: a gateway answering
503, the database locked by another connection when a write is due, the site's alerts process killed.

The escalation class runs in-process for the store faults (the lock must be taken at one precise
moment), and in its real Ray process (``SiteAlerts``) for the crash. The chain's clock is the
escalation's own ``_run_due(now)``: retries days of back-off in milliseconds.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_secu.actors.alerting import Escalation
from flux_secu.alerts import outbox
from flux_secu.rules.incident import Incident, IncidentKind, IncidentState
from flux_secu.store.sqlite import SQLiteStore

from .conftest import build_config
from .notify_receiver import Receiver


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def config_for(tmp_path: Path, port: int, contacts: dict[str, list[str]], ack_timeout_s: float = 600) -> Any:
    def edit(d: dict[str, Any]) -> None:
        d["notifications"] = {"dry_run": False, "public_url": "https://flux.example.org"}
        d["sites"][0]["escalation"] = {
            "ack_timeout_s": ack_timeout_s, "rounds": 1, "report_at": None,
            "contacts": [{"name": name, "channels": [f"json://127.0.0.1:{port}{path}" for path in paths]}
                         for name, paths in contacts.items()],
        }
    return build_config(tmp_path, edit)


def intrusion(store: SQLiteStore, n: int = 1) -> Incident:
    incident = Incident(f"intrusion-cam-test-{n}", IncidentKind.INTRUSION, "site-test", "cam-test",
                        "person", time.time())
    store.open_incident(incident)
    return incident


def escalation(config: Any) -> Escalation:
    """The site's escalation without its ticker thread: the test is its only clock."""
    esc = Escalation(config.sites[0], config)
    esc._stop.set()
    return esc


def tick(esc: Escalation, at: float) -> None:
    with esc.lock:
        esc._run_due(at)


def test_a_failing_channel_is_retried_with_back_off_then_given_up_without_resending_the_others(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = config_for(tmp_path, receiver.port, {"Alice": ["/alice-sms", "/alice-mail"], "Bea": ["/bea"]})
    receiver.failing.add("/alice-sms")
    esc = escalation(config)
    incident = intrusion(esc.store)
    t0 = time.time()
    assert esc.escalate(incident, "still there")
    assert receiver.paths() == ["/alice-mail"] and receiver.refused == ["/alice-sms"]
    for t in (1, 4):  # the back-off (5 s after the first failure) not over: no new try
        tick(esc, t0 + t)
    assert receiver.refused == ["/alice-sms"]
    for t in (6, 16, 36, 76, 140, 300):  # 5, 10, 20, 40 s: the 5th failure gives the channel up
        tick(esc, t0 + t)
    assert receiver.refused == ["/alice-sms"] * outbox.MAX_ATTEMPTS
    assert receiver.paths() == ["/alice-mail"]  # the channel that worked got it once, and only once
    events = esc.store.events(incident.id)
    failed = [e for e in events if e.kind == "notification_failed"]
    assert len(failed) == 1 and failed[0].data["channel"] == 0 and failed[0].data["attempts"] == 5
    assert [e.key for e in events if e.kind == "notification"] == ["notify:0:0:Alice:1"]
    # Alice was reached on one channel: Bea is called when her step is due, not before.
    assert "/bea" not in receiver.paths()
    tick(esc, t0 + 601)
    assert receiver.paths() == ["/alice-mail", "/bea"]


def test_a_contact_unreachable_on_every_channel_calls_the_next_one_at_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = config_for(tmp_path, receiver.port, {"Alice": ["/alice"], "Bea": ["/bea"]})
    receiver.failing.add("/alice")
    esc = escalation(config)
    incident = intrusion(esc.store)
    t0 = time.time()
    esc.escalate(incident, "still there")
    for t in (6, 16, 36, 76):
        tick(esc, t0 + t)
    assert receiver.paths() == ["/bea"]  # 76 s after the start, long before her step (600 s)
    assert receiver.refused == ["/alice"] * outbox.MAX_ATTEMPTS
    tick(esc, t0 + 601)
    assert receiver.paths() == ["/bea"]  # and once


def lock_database(path: Path) -> sqlite3.Connection:
    """Another process's long write: holds the database's write lock until rolled back."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_store_write_that_fails_loses_and_repeats_nothing(tmp_path: Path, receiver: Receiver) -> None:
    config = config_for(tmp_path, receiver.port, {"Alice": ["/alice"], "Bea": ["/bea"]}, ack_timeout_s=10)
    esc = escalation(config)
    esc.store._db.execute("PRAGMA busy_timeout=100")  # a locked database fails its write in 0.1 s
    incident = intrusion(esc.store)
    t0 = time.time()
    assert esc.escalate(incident, "still there")
    assert receiver.paths() == ["/alice"]

    # 1. The intent cannot be written (locked): nothing is sent; once the lock is gone, it is.
    other = lock_database(config.store.path)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        tick(esc, t0 + 11)
    other.rollback()
    assert receiver.paths() == ["/alice"]
    tick(esc, t0 + 11.5)
    assert receiver.paths() == ["/alice", "/bea"]

    # 2. Sent, then its record fails (the lock comes while the gateway answers): recorded later,
    # never sent again.
    second = intrusion(esc.store, 2)
    locks: list[sqlite3.Connection] = []
    receiver.on_post = lambda path: locks.append(lock_database(config.store.path))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        esc.escalate(second, "still there")
    receiver.on_post = None
    assert receiver.paths().count("/alice") == 2
    for t in (1, 2):  # still locked: the record is retried, the message is not resent
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            tick(esc, time.time() + t)
    locks[0].rollback()
    tick(esc, time.time())
    assert receiver.paths().count("/alice") == 2
    assert [e.key for e in esc.store.events(second.id) if e.kind == "notification"] == ["notify:0:0:Alice:0"]
    assert esc.store.get_intent(outbox.notify_key(second.id, "notify:0:0:Alice", 0)).state == "done"  # type: ignore[union-attr]


def test_the_morning_report_is_marked_sent_only_once_sent(tmp_path: Path, receiver: Receiver) -> None:
    config = config_for(tmp_path, receiver.port, {"Alice": ["/alice"]})
    esc = escalation(config)
    receiver.failing.add("/alice")
    assert esc.morning_report("2026-11-25") is None  # the gateway is down: not sent...
    intent = esc.store.get_intent(outbox.report_key("site-test", "2026-11-25"))
    assert intent is not None and intent.state == "pending" and intent.attempts == 1
    receiver.failing.clear()
    assert esc.morning_report("2026-11-25") is None  # ...and not retried before its back-off
    assert receiver.paths() == []
    esc.store.update_intent(intent.key, "pending", attempts=1, next_at=time.time())  # back-off over
    report = esc.morning_report("2026-11-25")
    assert report is not None and receiver.paths() == ["/alice"]
    assert esc.morning_report("2026-11-25") is None  # once per night
    assert receiver.paths() == ["/alice"]


@pytest.mark.slow
def test_intents_whose_call_was_lost_are_carried_out_once_by_the_site_alerts(
    tmp_path: Path, receiver: Receiver, ray_session: None
) -> None:
    """The rules recorded a warning and an escalation, then the calls were lost (the site's alerts
    process died): the process Ray brings back finds them in the store and carries each out once."""
    import ray

    from flux_secu.actors.site_alerts import SiteAlerts

    config = config_for(tmp_path, receiver.port, {"Alice": ["/alice"]})
    store = SQLiteStore(config.store.path)
    warned, escalated = intrusion(store, 1), intrusion(store, 2)
    host = SiteAlerts.remote(config.sites, config)
    try:
        ray.get(host.roles.remote())
        ray.kill(host, no_restart=False)  # a crash; Ray restarts it
        store.add_intent(outbox.warn_key(warned.id), "site-test", outbox.WARN,
                         {"incident": warned.to_dict()}, time.time())
        store.add_intent(outbox.escalate_key(escalated.id), "site-test", outbox.ESCALATE,
                         {"incident": escalated.to_dict(), "reason": "Toujours présent."}, time.time())
        deadline = time.monotonic() + 60
        while store.pending_intents("site-test") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.pending_intents("site-test") == []
        receiver.wait_for(1)
        assert [e.kind for e in store.events(warned.id)].count("warning") == 1
        assert store.get_incident(warned.id).state is IncidentState.WARNED  # type: ignore[union-attr]
        assert store.get_incident(escalated.id).state is IncidentState.ESCALATED  # type: ignore[union-attr]
        assert ray.get(host.sweep.remote(time.time() + 60)) == 0  # nothing left: nothing done twice
        time.sleep(1.5)  # the sweeper's own next pass
        assert receiver.paths() == ["/alice"]
        assert [e.kind for e in store.events(warned.id)].count("warning") == 1
    finally:
        ray.kill(host, no_restart=True)


def panic_config(tmp_path: Path, receiver: Receiver) -> Any:
    def edit(d: dict[str, Any]) -> None:
        d["notifications"] = {"dry_run": False, "public_url": "https://flux.example.org"}
        d["sites"][0]["escalation"] = {
            "ack_timeout_s": 600, "rounds": 1, "report_at": None,
            "contacts": [{"name": "Alice", "channels": [f"json://127.0.0.1:{receiver.port}/alice"]}],
            "police": {"name": "Police", "channels": [f"json://127.0.0.1:{receiver.port}/police"]},
            "manager": {"name": "Manager", "channels": [f"json://127.0.0.1:{receiver.port}/manager"]},
        }
        d["sites"][0]["panic"] = {"devices": [{"id": "btn-1", "agent": "Agent Dupont", "secret": SECRET}]}

    return build_config(tmp_path, edit)


SECRET = "0123456789abcdef0123456789abcdef"


@pytest.mark.slow
def test_a_panic_press_whose_hand_over_failed_is_carried_out_once(
    tmp_path: Path, receiver: Receiver, ray_session: None
) -> None:
    """The ingress verified and recorded the press, then could not hand it over (the escalation was
    down): it answers 503, the site's alerts carry the press out from the store anyway, and the
    device's resend lands on the same incident: the police are told once."""
    import ray

    from flux_secu.actors.panic import PanicIngress, panic_recorder
    from flux_secu.actors.site_alerts import SiteAlerts
    from flux_secu.alerts.panic import press_payload, verifier_from_config

    config = panic_config(tmp_path, receiver)
    store = SQLiteStore(config.store.path)
    host = SiteAlerts.remote(config.sites, config)
    _, escalations = ray.get(host.roles.remote())

    def down(press: Any) -> str:
        raise RuntimeError("escalation unavailable")

    ingress = PanicIngress(verifier_from_config(config), down, record=panic_recorder(store))
    raw = press_payload("site-test", "btn-1", SECRET, int(time.time()), "nonce-0001")
    try:
        assert ingress.handle("site-test", raw, "http")[0] == 503
        receiver.wait_for(2, timeout=30)  # swept from the store: the police and the manager are told
        assert sorted(receiver.paths()) == ["/manager", "/police"]
        (incident,) = [s.incident for s in store.incidents()]
        ingress.dispatch = lambda press: str(ray.get(escalations["site-test"].panic.remote(press)))
        status, answer = ingress.handle("site-test", raw, "http")  # the device sends it again
        assert status == 202 and answer["incident"] == incident.id
        assert ray.get(host.sweep.remote(time.time() + 60)) == 0
        assert sorted(receiver.paths()) == ["/manager", "/police"]  # once each
    finally:
        ray.kill(host, no_restart=True)


@pytest.mark.slow
def test_a_signed_press_with_a_stale_clock_asks_the_manager_to_call_back(
    tmp_path: Path, receiver: Receiver, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.panic import PanicIngress, panic_recorder
    from flux_secu.actors.site_alerts import SiteAlerts
    from flux_secu.alerts.panic import press_payload, verifier_from_config

    config = panic_config(tmp_path, receiver)
    store = SQLiteStore(config.store.path)
    host = SiteAlerts.remote(config.sites, config)
    _, escalations = ray.get(host.roles.remote())
    ingress = PanicIngress(verifier_from_config(config),
                           lambda press: str(ray.get(escalations["site-test"].panic.remote(press))),
                           record=panic_recorder(store))
    drifted = int(time.time()) - 3600  # the button's clock is an hour late
    try:
        status, answer = ingress.handle("site-test", press_payload("site-test", "btn-1", SECRET, drifted,
                                                                   "nonce-0002"), "mqtt")
        assert status == 202 and answer["status"] == "call_back"
        receiver.wait_for(1)
        assert receiver.paths() == ["/manager"]  # a call back, not the police
        assert "horloge décalée" in receiver.posts[0][1]["message"]
        (stored,) = store.incidents()
        assert stored.incident.kind is IncidentKind.PANIC and stored.incident.id == answer["incident"]
        proof = next(e.data for e in store.events(stored.incident.id) if e.kind == "panic_proof")
        assert proof["stale"] is True and proof["pressed_at"] == drifted
        # A forged press with the same stale clock is still refused outright.
        forged = press_payload("site-test", "btn-1", "not-the-secret-0000000000", drifted, "nonce-0003")
        assert ingress.handle("site-test", forged, "mqtt")[0] == 401
        assert len(store.incidents()) == 1
    finally:
        ray.kill(host, no_restart=True)


def test_a_restarted_ingress_refuses_a_replay_and_refused_presses_reach_the_audit_and_the_report(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The ingress's nonces live in memory; the store remembers which presses were carried out, so a
    press replayed after an ingress restart is refused, not a second incident or a 202. Every refused
    press is in the audit log and in the morning report."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from flux_secu.actors.panic import PanicIngress, panic_done, panic_recorder, refusal_recorder
    from flux_secu.alerts.panic import press_payload, verifier_from_config

    config = panic_config(tmp_path, receiver)
    esc = escalation(config)
    store = esc.store
    night = datetime(2026, 11, 25, 23, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()

    def ingress() -> PanicIngress:  # a new process: a new verifier, nothing in memory
        return PanicIngress(verifier_from_config(config), esc.panic, lambda: night, panic_recorder(store),
                            panic_done(store), refusal_recorder(store, lambda: night))

    press = press_payload("site-test", "btn-1", SECRET, int(night), "nonce-0001")
    assert ingress().handle("site-test", press, "mqtt")[0] == 202
    notified = len(receiver.posts)
    assert notified == 2  # police and manager
    assert ingress().handle("site-test", press, "mqtt") == (409, {"status": "rejected", "reason": "replayed"})
    forged = press_payload("site-test", "btn-1", "not-the-secret-0000000000", int(night), "nonce-0002")
    assert ingress().handle("site-test", forged, "http")[0] == 401
    assert len(store.incidents()) == 1 and len(receiver.posts) == notified
    # The button rebooted and its nonce counter started again: the same nonce a minute later is a new
    # press (its own incident, everybody told), not the old incident where nobody would be.
    night += 60
    rebooted = press_payload("site-test", "btn-1", SECRET, int(night), "nonce-0001")
    status, answer = ingress().handle("site-test", rebooted, "mqtt")
    assert status == 202 and len(store.incidents()) == 2 and len(receiver.posts) == 2 * notified
    assert answer["incident"] != store.incidents()[0].incident.id
    refused = [r for r in store.audit_log() if r.action == "panic_refused"]
    assert [(r.target, r.data["reason"], r.data["device"]) for r in refused] == [
        ("site-test", "replayed", "btn-1"), ("site-test", "bad_signature", "btn-1")]
    assert SECRET not in repr(refused)
    report = esc.morning_report("2026-11-25")
    assert report is not None and report["counts"]["panic_refused"] == 2
    assert "refusés : 2" in report["body"] and "btn-1 refusé (bad_signature)" in report["body"]
