"""Escalation: the chain, acknowledgement links, restarts, panic, the morning report.

Notifications go through apprise's ``json://`` channel to a real HTTP server in the test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from flux_secu.alerts import escalation as policy
from flux_secu.alerts.ack import AckRejected, make_token, verify_token
from flux_secu.alerts.report import build_report
from flux_secu.rules.incident import Incident, IncidentKind, IncidentState
from flux_secu.store.base import StoredIncident
from flux_secu.store.sqlite import SQLiteStore

from .conftest import build_config
from .notify_receiver import Receiver

PARIS = ZoneInfo("Europe/Paris")


# --- pure policy --------------------------------------------------------------------------------

def test_rota_puts_this_weeks_contact_first() -> None:
    rota = [policy.RotaEntry(date(2026, 11, 16), "Bea"), policy.RotaEntry(date(2026, 11, 23), "Chloe")]
    contacts = ["Alice", "Bea", "Chloe"]
    assert policy.chain(contacts, rota, datetime(2026, 11, 22, 23, 0)) == ["Bea", "Alice", "Chloe"]
    assert policy.chain(contacts, rota, datetime(2026, 11, 25, 3, 0)) == ["Chloe", "Alice", "Bea"]
    assert policy.chain(contacts, rota, datetime(2026, 11, 1, 3, 0)) == contacts  # before any entry


def test_plan_and_due_steps() -> None:
    steps = policy.plan(["A", "B"], 1000.0, 60.0, rounds=2)
    assert [(s.contact, s.due_at) for s in steps] == [("A", 1000), ("B", 1060), ("A", 1120), ("B", 1180)]
    assert [s.key for s in policy.due(steps, 1061, set())] == ["notify:0:0:A", "notify:0:1:B"]
    assert [s.key for s in policy.due(steps, 1061, {"notify:0:0:A"})] == ["notify:0:1:B"]


def test_ack_tokens_are_signed_and_expire() -> None:
    token = make_token(b"k", "intrusion-cam-1", "Alice", expires_at=2000)
    claim = verify_token(b"k", token, now=1999)
    assert (claim.incident_id, claim.contact) == ("intrusion-cam-1", "Alice")
    with pytest.raises(AckRejected, match="expired"):
        verify_token(b"k", token, now=2001)
    with pytest.raises(AckRejected, match="signature"):
        verify_token(b"other", token, now=1999)
    forged = make_token(b"k", "intrusion-cam-2", "Alice", 2000).split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(AckRejected, match="signature"):
        verify_token(b"k", forged, now=1999)
    with pytest.raises(AckRejected, match="malformed"):
        verify_token(b"k", "garbage", now=1999)


def test_morning_report_counts_the_night() -> None:
    def stored(hour: int, kind: IncidentKind, state: IncidentState, day: int = 25) -> StoredIncident:
        at = datetime(2026, 11, day, hour, 0, tzinfo=PARIS).timestamp()
        return StoredIncident(Incident(f"{kind}-{day}-{hour}", kind, "s", "cam", "person", at), state)

    incidents = [
        stored(23, IncidentKind.INTRUSION, IncidentState.DETERRED),
        stored(2, IncidentKind.INTRUSION, IncidentState.ESCALATED, day=26),
        stored(3, IncidentKind.PANIC, IncidentState.ESCALATED, day=26),
        stored(10, IncidentKind.INTRUSION, IncidentState.DETERRED, day=26),  # the next day: not this night
    ]
    events = {i.incident.id: ["opened", "warning"] for i in incidents}
    ends = datetime(2026, 1, 1, 7, 30).time()
    report = build_report("s", "Site S", date(2026, 11, 25), incidents, events, PARIS, ends)
    assert report.counts["intrusions"] == 2 and report.counts["deterred"] == 1
    assert report.counts["escalated"] == 1 and report.counts["panic"] == 1 and report.counts["warnings"] == 3
    assert "23:00:00 intrusion" in report.body and "25/11/2026 - Site S" in report.title


# --- the actor, with real notifications ---------------------------------------------------------

@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def escalation_config(tmp_path: Path, port: int, ack_timeout_s: float, contacts: list[str],
                      police: bool = False) -> Any:
    def edit(d: dict[str, Any]) -> None:
        d["notifications"] = {"dry_run": False, "public_url": "https://flux.example.org"}
        esc: dict[str, Any] = {
            "ack_timeout_s": ack_timeout_s, "rounds": 2, "report_at": None,  # reports sent on demand here
            "contacts": [{"name": c, "channels": [f"json://127.0.0.1:{port}/{c}"]} for c in contacts],
        }
        if police:
            esc["police"] = {"name": "Police", "channels": [f"json://127.0.0.1:{port}/police"]}
            esc["manager"] = {"name": "Manager", "channels": [f"json://127.0.0.1:{port}/manager"]}
        d["sites"][0]["escalation"] = esc
    return build_config(tmp_path, edit)


def wait_ready(actor: Any, timeout: float = 30.0) -> Any:
    """The actor's ready() once Ray has restarted it (calls fail while it restarts)."""
    import ray
    from ray.exceptions import ActorUnavailableError

    deadline = time.time() + timeout
    while True:
        try:
            return ray.get(actor.ready.remote(), timeout=timeout)
        except ActorUnavailableError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def intrusion(store: SQLiteStore, n: int = 1) -> Incident:
    incident = Incident(f"intrusion-cam-test-{n}", IncidentKind.INTRUSION, "site-test", "cam-test",
                        "person", time.time())
    store.open_incident(incident)
    return incident


@pytest.mark.slow
def test_no_acknowledgement_escalates_to_the_next_contact_and_a_link_stops_it(
    tmp_path: Path, receiver: Receiver, ray_session: None
) -> None:
    import urllib.error
    import urllib.request

    import ray

    from flux_secu.actors.alerting import EscalationActor
    from flux_secu.actors.panic import PanicIngressActor

    config = escalation_config(tmp_path, receiver.port, 2.5, ["Alice", "Bea"], police=True)
    store = SQLiteStore(config.store.path)
    incident = intrusion(store)
    actor = EscalationActor.remote(config.sites[0], config)
    # Started before the chain: on a loaded box an actor's start alone can take longer than a step.
    ingress_cfg = config.model_copy(update={"panic": config.panic.model_copy(
        update={"http": config.panic.http.model_copy(update={"port": 0})})})
    ingress = PanicIngressActor.remote(ingress_cfg, {"site-test": actor}, mqtt=False)
    port = ray.get(ingress.ready.remote())["http"]["port"]
    try:
        assert ray.get(actor.escalate.remote(incident, "still there"))
        assert not ray.get(actor.escalate.remote(incident, "again"))  # idempotent
        receiver.wait_for(3)  # police + Alice at once, Bea after 2.5 s without acknowledgement
        assert set(receiver.paths()[:2]) == {"/police", "/Alice"}
        # Bea is notified when her step is due (2.5 s after the start), never before: the receipt
        # times alone would depend on how long apprise took to send the first messages.
        # The actor records the notification just after the receiver got it: wait for the record.
        deadline = time.monotonic() + 10
        while True:
            events = store.events(incident.id)
            sent = [e for e in events if e.kind == "notification" and e.data["contact"] == "Bea"]
            if sent or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        started = next(e for e in events if e.kind == "escalated").data["started_at"]
        assert sent, [e.kind for e in events]
        bea = sent[0]
        assert 2.5 <= bea.data["sent_ts"] - started < 5.0
        body = next(b for p, b, _ in receiver.posts if p == "/Bea")["message"]
        assert incident.id in body and "Site de test" in body
        link = body.split("Prendre en charge : ")[1].split()[0]
        assert link.startswith("https://flux.example.org/ack/")
        # The on-call person opens the link (a confirmation page), then confirms (POST).
        url = f"http://127.0.0.1:{port}/ack/{link.rsplit('/', 1)[1]}"
        with urllib.request.urlopen(url, timeout=10) as page:
            assert "Je prends en charge" in page.read().decode()
        assert not store.has_event(incident.id, "acknowledged")  # opening the link changes nothing
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10) as r:
            result = json.loads(r.read())
        assert result == {"ok": True, "incident": incident.id, "by": "Bea", "first": True}
        # Audited like the API's links; a second POST of the link is refused (single use).
        audit = [(r.user, r.action, r.data.get("ingress")) for r in store.audit_log()]
        assert audit == [("Bea", "acknowledge", "panic-http")]
        with pytest.raises(urllib.error.HTTPError) as reused:
            urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10)
        assert reused.value.code == 409
        with pytest.raises(urllib.error.HTTPError) as refused:
            forged = urllib.request.Request(url[:-3] + "xyz", data=b"", method="POST")
            urllib.request.urlopen(forged, timeout=10)
        assert refused.value.code == 403
        ray.get(ingress.stop.remote())
        time.sleep(3.5)  # round 2 would have re-notified Alice at 5.0 s
        assert receiver.paths().count("/Alice") == 1 and receiver.paths().count("/Bea") == 1
        (stored,) = store.incidents()
        assert stored.state is IncidentState.ACKNOWLEDGED
        assert not ray.get(actor.acknowledge_link.remote("forged.token"))["ok"]
    finally:
        ray.kill(actor, no_restart=True)
        ray.kill(ingress, no_restart=True)


@pytest.mark.slow
def test_restarted_site_alerts_resume_the_chain_without_duplicates(
    tmp_path: Path, receiver: Receiver, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.site_alerts import SiteAlerts

    config = escalation_config(tmp_path, receiver.port, 2.0, ["Alice", "Bea", "Chloe"])
    store = SQLiteStore(config.store.path)
    incident = intrusion(store)
    host = SiteAlerts.remote(config.sites, config)  # the deployment's process for every site
    _, escalations = ray.get(host.roles.remote())
    actor = escalations[config.sites[0].id]
    try:
        ray.get(actor.escalate.remote(incident))
        receiver.wait_for(1)
        ray.kill(host, no_restart=False)  # crash mid-chain; Ray restarts it
        assert wait_ready(actor) == 1  # the escalation was rebuilt from the store
        receiver.wait_for(3, timeout=20)
        time.sleep(0.5)
        assert receiver.paths()[:3] == ["/Alice", "/Bea", "/Chloe"]  # each once, in order
        keys = [e.key for e in store.events(incident.id) if e.kind == "notification"]
        # One channel each: one notification per channel, keyed by the step and the channel.
        assert keys[:3] == ["notify:0:0:Alice:0", "notify:0:1:Bea:0", "notify:0:2:Chloe:0"]
        assert len(keys) == len(set(keys))
    finally:
        ray.kill(host, no_restart=True)


@pytest.mark.slow
def test_panic_press_notifies_police_and_manager_at_once_with_proof(
    tmp_path: Path, receiver: Receiver, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.alerting import EscalationActor
    from flux_secu.alerts.panic import PanicPress

    config = escalation_config(tmp_path, receiver.port, 60, ["Alice"], police=True)
    actor = EscalationActor.remote(config.sites[0], config)
    try:
        now = time.time()
        press = PanicPress("site-test", "btn-7", "Agent Dupont", now - 0.2, now, "mqtt",
                           message_id="site-test:btn-7:n-1")
        incident_id = ray.get(actor.panic.remote(press))
        assert ray.get(actor.panic.remote(press)) == incident_id  # redelivered: changes nothing
        assert incident_id == f"panic-site-test-btn-7-{round(now - 0.2)}-n-1"
        receiver.wait_for(2)
        assert sorted(receiver.paths()) == ["/manager", "/police"]  # no verification step, no on-call chain
        store = SQLiteStore(config.store.path)
        proof = next(e for e in store.events(incident_id) if e.kind == "panic_proof").data
        assert proof["device_id"] == "btn-7" and proof["agent"] == "Agent Dupont"
        (stored,) = store.incidents()
        assert stored.incident.kind is IncidentKind.PANIC and stored.state is IncidentState.ESCALATED
        local = datetime.now(PARIS)
        night = local.date() if local.hour >= 12 else (local - timedelta(days=1)).date()
        report = ray.get(actor.morning_report.remote(night.isoformat()))
        in_night = local.hour >= 12 or local.time() < time_of_day(7, 30)
        assert report is not None and report["counts"]["panic"] == (1 if in_night else 0)
        receiver.wait_for(3)
        assert receiver.paths()[-1] == "/manager" and "Rapport de la nuit" in receiver.posts[-1][1]["title"]
        assert ray.get(actor.morning_report.remote(night.isoformat())) is None  # once per night
    finally:
        ray.kill(actor, no_restart=True)


def test_rate_limit_one_warning_per_zone_per_interval() -> None:
    from flux_secu.alerts.ratelimit import RateLimiter

    limiter = RateLimiter()
    assert limiter.allow(("hp", "cam/quai"), 100.0, 20.0)
    assert not limiter.allow(("hp", "cam/quai"), 110.0, 20.0)
    assert limiter.allow(("hp", "cam/parking"), 110.0, 20.0)  # another zone
    assert limiter.allow(("hp", "cam/quai"), 120.0, 20.0)


@pytest.mark.slow
def test_failing_speaker_is_recorded_and_escalated(
    tmp_path: Path, receiver: Receiver, ray_session: None
) -> None:
    import ray

    from flux_secu.actors.site_alerts import SiteAlerts

    config = escalation_config(tmp_path, receiver.port, 60, ["Alice"])
    site = config.sites[0].model_copy(update={"speakers": [
        config.sites[0].speakers[0].model_copy(update={"driver": "command", "command": ["false", "{wav}"]}),
    ]})
    store = SQLiteStore(config.store.path)
    incident = intrusion(store)
    host = SiteAlerts.remote([site], config)  # the speaker calls its escalation inside the process
    speakers, _ = ray.get(host.roles.remote())
    speaker = speakers[site.id]
    try:
        assert ray.get(speaker.warn.remote(incident)) == 0
        receiver.wait_for(1)  # nobody could be warned: the on-call chain is called at once
        assert receiver.paths() == ["/Alice"]
        kinds = {e.kind: e.data for e in store.events(incident.id)}
        assert "exit" in kinds["warning_failed"]["error"] or "status" in kinds["warning_failed"]["error"]
        assert "Haut-parleur en panne" in kinds["escalated"]["reason"]
    finally:
        ray.kill(host, no_restart=True)
