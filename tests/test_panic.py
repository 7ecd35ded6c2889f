"""Panic button ingress: press verification (fast), MQTT + HTTP channels against a real Mosquitto and a
real socket (fast, no Ray), and the whole path to the police through real Ray actors (slow)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from paho.mqtt.client import CallbackAPIVersion, Client

from flux_secu.actors.panic import MqttListener, PanicIngress, make_http_server, topic_for
from flux_secu.alerts.panic import (
    MAX_MESSAGE_BYTES,
    PanicDevice,
    PanicPress,
    PanicRejected,
    PanicVerifier,
    RejectReason,
    press_payload,
    sign,
    verifier_from_config,
)
from flux_secu.config import ConfigError, PanicMqttConfig

from .conftest import build_config

SITE = "site-test"
OTHER = "site-other"
SECRET = "0123456789abcdef-secret"
NOW = 1_764_108_000  # 2025-11-25 22:00 UTC


def make_verifier(**kwargs: Any) -> PanicVerifier:
    devices = {
        SITE: {
            "btn-1": PanicDevice("btn-1", "Agent Dupont", SECRET.encode()),
            "btn-2": PanicDevice("btn-2", "Agent Martin", b"another-secret-of-16+"),
        },
        OTHER: {"btn-1": PanicDevice("btn-1", "Agent Durand", SECRET.encode())},
    }
    return PanicVerifier(devices, **kwargs)


def rejected(verifier: PanicVerifier, raw: bytes, site: str = SITE, now: float = NOW) -> RejectReason:
    with pytest.raises(PanicRejected) as info:
        verifier.verify(site, raw, "mqtt", now)
    return info.value.reason


# --- the verifier ---------------------------------------------------------------------------------


def test_a_signed_press_is_accepted_with_its_proof() -> None:
    verifier = make_verifier()
    press = verifier.verify(SITE, press_payload(SITE, "btn-1", SECRET, NOW - 3, "nonce-0001"), "http", NOW)
    assert press == PanicPress(site=SITE, device_id="btn-1", agent="Agent Dupont", pressed_at=NOW - 3,
                               received_at=NOW, channel="http", message_id=f"{SITE}:btn-1:nonce-0001")


def test_signature_is_hmac_sha256_of_the_documented_string() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{SITE}|btn-1|{NOW}|abcdefgh".encode(), hashlib.sha256).hexdigest()
    assert sign(SITE, "btn-1", SECRET, NOW, "abcdefgh") == expected


def test_unknown_device_and_unknown_site() -> None:
    verifier = make_verifier()
    assert rejected(verifier, press_payload(SITE, "btn-9", SECRET, NOW, "nonce-0001")) == "unknown_device"
    raw = press_payload("site-nowhere", "btn-1", SECRET, NOW, "nonce-0001")
    assert rejected(verifier, raw, site="site-nowhere") == "unknown_site"


def test_bad_signature_wrong_key_or_tampered_field() -> None:
    verifier = make_verifier()
    assert rejected(verifier, press_payload(SITE, "btn-1", "not-the-secret-at-all", NOW, "n-000001")) == (
        "bad_signature")
    genuine = json.loads(press_payload(SITE, "btn-1", SECRET, NOW, "n-000002"))
    for field, value in (("ts", NOW - 1), ("nonce", "n-000003"), ("device", "btn-2")):
        tampered = json.dumps({**genuine, field: value}).encode()
        assert rejected(verifier, tampered) == "bad_signature", field


def test_a_press_for_one_site_cannot_be_replayed_to_another() -> None:
    # Same device id and same secret on both sites: only the site in the signed string tells them apart.
    verifier = make_verifier()
    raw = press_payload(SITE, "btn-1", SECRET, NOW, "nonce-0001")
    assert rejected(verifier, raw, site=OTHER) == "bad_signature"
    assert verifier.verify(SITE, raw, "mqtt", NOW).site == SITE


def test_stale_and_future_timestamps() -> None:
    verifier = make_verifier(max_skew_s=120)
    assert rejected(verifier, press_payload(SITE, "btn-1", SECRET, NOW - 121, "nonce-old1")) == "stale"
    assert rejected(verifier, press_payload(SITE, "btn-1", SECRET, NOW + 121, "nonce-fut1")) == "stale"
    for ts in (NOW - 120, NOW + 120):  # the bounds are inside the window
        verifier.verify(SITE, press_payload(SITE, "btn-1", SECRET, ts, f"nonce-{ts}"), "mqtt", NOW)


def test_replayed_nonce_is_refused_on_either_channel() -> None:
    verifier = make_verifier()
    raw = press_payload(SITE, "btn-1", SECRET, NOW, "nonce-0001")
    verifier.verify(SITE, raw, "mqtt", NOW)
    assert rejected(verifier, raw, now=NOW + 1) == "replayed"
    with pytest.raises(PanicRejected, match="replayed"):
        verifier.verify(SITE, raw, "http", NOW + 1)
    # The same nonce from another device is another press.
    other = press_payload(SITE, "btn-2", b"another-secret-of-16+", NOW, "nonce-0001")
    verifier.verify(SITE, other, "mqtt", NOW)


MALFORMED = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"[1, 2]",
    b'"a string"',
    json.dumps({"device": "btn-1", "ts": NOW, "nonce": "nonce-0001"}).encode(),  # no sig
    json.dumps({"device": "btn-1", "ts": NOW, "nonce": "nonce-0001", "sig": "0" * 64, "x": 1}).encode(),
    json.dumps({"device": "btn-1", "ts": str(NOW), "nonce": "nonce-0001", "sig": "0" * 64}).encode(),
    json.dumps({"device": "btn-1", "ts": NOW + 0.5, "nonce": "nonce-0001", "sig": "0" * 64}).encode(),
    json.dumps({"device": "btn-1", "ts": True, "nonce": "nonce-0001", "sig": "0" * 64}).encode(),
    json.dumps({"device": "btn-1", "ts": NOW, "nonce": "short", "sig": "0" * 64}).encode(),
    json.dumps({"device": "btn-1", "ts": NOW, "nonce": "n|x|y|zzzz", "sig": "0" * 64}).encode(),
    json.dumps({"device": "btn-1", "ts": NOW, "nonce": "nonce-0001", "sig": "0" * 63}).encode(),
    json.dumps({"device": "btn-1", "ts": NOW, "nonce": "nonce-0001", "sig": "A" * 64}).encode(),
    json.dumps({"device": "BTN|1", "ts": NOW, "nonce": "nonce-0001", "sig": "0" * 64}).encode(),
    json.dumps({"device": 7, "ts": NOW, "nonce": "nonce-0001", "sig": "0" * 64}).encode(),
    b" " * (MAX_MESSAGE_BYTES + 1),
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_messages(raw: bytes) -> None:
    assert rejected(make_verifier(), raw) == "malformed"


def test_a_rejected_message_does_not_consume_its_nonce() -> None:
    verifier = make_verifier()
    forged = press_payload(SITE, "btn-1", "attacker-guess-000000", NOW, "nonce-0001")
    stale = press_payload(SITE, "btn-1", SECRET, NOW - 500, "nonce-0001")
    for raw in (forged, stale):
        rejected(verifier, raw)
    assert verifier.remembered() == 0
    verifier.verify(SITE, press_payload(SITE, "btn-1", SECRET, NOW, "nonce-0001"), "mqtt", NOW)
    assert verifier.remembered() == 1


def test_replay_memory_forgets_what_has_gone_stale() -> None:
    verifier = make_verifier(max_skew_s=60)
    old = press_payload(SITE, "btn-1", SECRET, NOW, "nonce-0001")
    verifier.verify(SITE, old, "mqtt", NOW)
    verifier.verify(SITE, press_payload(SITE, "btn-1", SECRET, NOW + 100, "nonce-0002"), "mqtt", NOW + 100)
    assert verifier.remembered() == 1  # nonce-0001 pruned: its replay is stale anyway
    assert rejected(verifier, old, now=NOW + 100) == "stale"


def test_a_full_replay_memory_raises_a_floor_instead_of_forgetting_silently() -> None:
    verifier = make_verifier(replay_capacity=2)
    payloads = [press_payload(SITE, "btn-1", SECRET, NOW + i, f"nonce-000{i}") for i in range(3)]
    for raw in payloads:
        verifier.verify(SITE, raw, "mqtt", NOW + 2)
    assert verifier.remembered() == 2
    assert rejected(verifier, payloads[0], now=NOW + 2) == "replayed"  # evicted, caught by the floor


def test_forget_releases_a_press_that_could_not_be_handed_over() -> None:
    verifier = make_verifier()
    raw = press_payload(SITE, "btn-1", SECRET, NOW, "nonce-0001")
    verifier.forget(verifier.verify(SITE, raw, "http", NOW))
    verifier.verify(SITE, raw, "http", NOW + 1)


# --- configuration --------------------------------------------------------------------------------


def panic_edit(mqtt: dict[str, Any] | None = None, http: dict[str, Any] | None = None,
               devices: list[dict[str, Any]] | None = None) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["panic"] = {"max_skew_s": 90, "mqtt": mqtt or {"enabled": False},
                         "http": http or {"enabled": False}}
        esc = data["sites"][0]["escalation"]
        esc["police"] = {"name": "Police municipale", "channels": ["json://127.0.0.1:9/police"]}
        esc["manager"] = {"name": "Responsable de site", "channels": ["json://127.0.0.1:9/manager"]}
        data["sites"][0]["panic"] = {"devices": devices or [
            {"id": "btn-1", "agent": "Agent Dupont", "secret": "${PANIC_SECRET_FOR_TESTS}"},
            {"id": "btn-2", "agent": "Agent Martin", "secret": "${PANIC_SECRET_FOR_TESTS}-2"},
        ]}
    return edit


@pytest.fixture()
def panic_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PANIC_SECRET_FOR_TESTS", SECRET)
    return SECRET


def test_config_devices_secrets_from_env_and_hidden(tmp_path: Path, panic_secret: str) -> None:
    config = build_config(tmp_path, panic_edit())
    site = config.sites[0]
    assert site.panic is not None and config.panic.max_skew_s == 90
    assert site.panic.devices[1].secret.get_secret_value() == SECRET + "-2"
    assert SECRET not in repr(config) and SECRET not in str(site.panic)
    assert config.panic.mqtt.topic_prefix == "flux-secu/panic"
    verifier = verifier_from_config(config)
    assert verifier.sites == [SITE] and verifier.max_skew_s == 90
    verifier.verify(SITE, press_payload(SITE, "btn-2", SECRET + "-2", NOW, "nonce-0001"), "http", NOW)


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ([{"id": "btn-1", "agent": "A", "secret": "short"}],
         "sites[0].panic.devices[0].secret: must be at least 16"),
        ([{"id": "btn-1", "agent": "A", "secret": SECRET}] * 2, "duplicate panic device id 'btn-1'"),
        ([{"id": "btn-1", "agent": "A"}], "sites[0].panic.devices[0].secret: Field required"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, devices: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        build_config(tmp_path, panic_edit(devices=devices))
    assert SECRET not in str(info.value)


# --- the ingress, without Ray: HTTP answers and logs ---------------------------------------------


class Recorder:
    """Stands in for ``EscalationActor.panic``."""

    def __init__(self, fail: bool = False) -> None:
        self.presses: list[PanicPress] = []
        self.fail = fail
        self.event = threading.Event()

    def __call__(self, press: PanicPress) -> str:
        if self.fail:
            raise RuntimeError("escalation down")
        self.presses.append(press)
        self.event.set()
        return f"panic-{press.message_id}"


def test_ingress_answers_and_logs_without_secrets() -> None:
    recorder = Recorder()
    ingress = PanicIngress(make_verifier(), recorder, clock=lambda: NOW)
    good = press_payload(SITE, "btn-1", SECRET, NOW, "nonce-0001")
    with structlog.testing.capture_logs() as logs:
        assert ingress.handle(SITE, good, "http") == (
            202, {"status": "accepted", "incident": f"panic-{SITE}:btn-1:nonce-0001",
                  "message_id": f"{SITE}:btn-1:nonce-0001"})
        assert ingress.handle(SITE, good, "mqtt")[0] == 409
        assert ingress.handle(SITE, press_payload(SITE, "btn-1", "wrong-secret-xxxxxxx", NOW, "n-000002"),
                              "http")[0] == 401
        assert ingress.handle(SITE, press_payload(SITE, "btn-7", SECRET, NOW, "n-000003"), "http")[0] == 403
        assert ingress.handle(SITE, b"{", "http") == (400, {"status": "rejected", "reason": "malformed"})
        assert ingress.handle("site-x", good, "http")[0] == 404
        assert ingress.handle(SITE, good, "mqtt", retained=True)[0] == 400
    assert len(recorder.presses) == 1
    assert [e["event"] for e in logs].count("panic_accepted") == 1
    refused = [e for e in logs if e["event"] == "panic_rejected"]
    assert [e["reason"] for e in refused] == ["replayed", "bad_signature", "unknown_device", "malformed",
                                              "unknown_site", "malformed"]
    text = repr(logs)
    assert SECRET not in text and json.loads(good)["sig"] not in text
    assert ingress.stats() == {"accepted_http": 1, "rejected_replayed": 1, "rejected_bad_signature": 1,
                               "rejected_unknown_device": 1, "rejected_malformed": 2,
                               "rejected_unknown_site": 1}


def test_a_press_that_could_not_be_handed_over_can_be_sent_again() -> None:
    recorder = Recorder(fail=True)
    ingress = PanicIngress(make_verifier(), recorder, clock=lambda: NOW)
    raw = press_payload(SITE, "btn-1", SECRET, NOW, "nonce-0001")
    assert ingress.handle(SITE, raw, "http")[0] == 503
    recorder.fail = False
    assert ingress.handle(SITE, raw, "http")[0] == 202


# --- both channels for real (Mosquitto, sockets), escalation faked -------------------------------


def post(port: int, path: str, body: bytes, method: str = "POST") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def publish(host: str, port: int, topic: str, payloads: list[bytes]) -> None:
    client = Client(CallbackAPIVersion.VERSION2, client_id="test-device")
    client.connect(host, port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture()
def live_ingress(mosquitto_broker: tuple[str, int]) -> Iterator[tuple[PanicIngress, Recorder, int, str]]:
    host, port = mosquitto_broker
    recorder = Recorder()
    ingress = PanicIngress(make_verifier(), recorder)
    listener = MqttListener(ingress, PanicMqttConfig(host=host, port=port, client_id="test-ingress"),
                            [SITE, OTHER])
    listener.start()
    server = make_http_server(ingress, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert listener.subscribed.wait(5)
        yield ingress, recorder, server.server_port, host
    finally:
        server.shutdown()
        server.server_close()
        listener.stop()


def test_both_channels_accept_presses_and_refuse_forgeries_and_replays(
    live_ingress: tuple[PanicIngress, Recorder, int, str], mosquitto_broker: tuple[str, int]
) -> None:
    ingress, recorder, http_port, _ = live_ingress
    host, port = mosquitto_broker
    now = int(time.time())
    by_mqtt = press_payload(SITE, "btn-1", SECRET, now, "mqtt-0001")
    by_http = press_payload(SITE, "btn-2", b"another-secret-of-16+", now, "http-0001")
    forged = press_payload(SITE, "btn-1", "attacker-guess-000000", now, "forged-01")

    publish(host, port, topic_for("flux-secu/panic", SITE), [by_mqtt])
    wait_for(lambda: len(recorder.presses) == 1)
    status, answer = post(http_port, f"/panic/{SITE}", by_http)
    assert (status, answer["status"]) == (202, "accepted")
    assert [(p.channel, p.device_id) for p in recorder.presses] == [("mqtt", "btn-1"), ("http", "btn-2")]

    # Refused over MQTT: forged, replayed, replayed from the other channel, addressed to the other site.
    publish(host, port, topic_for("flux-secu/panic", SITE), [forged, by_mqtt, by_http])
    publish(host, port, topic_for("flux-secu/panic", OTHER), [by_mqtt])
    wait_for(lambda: sum(v for k, v in ingress.stats().items() if k.startswith("rejected")) == 4)
    # Refused over HTTP.
    assert post(http_port, f"/panic/{SITE}", forged)[0] == 401
    assert post(http_port, f"/panic/{SITE}", by_mqtt)[0] == 409
    assert post(http_port, f"/panic/{OTHER}", by_http)[0] == 403
    assert post(http_port, "/panic/site-nowhere", by_http)[0] == 404
    assert post(http_port, f"/panic/{SITE}", b"{}")[0] == 400
    assert post(http_port, "/elsewhere", by_http)[0] == 404
    assert post(http_port, f"/panic/{SITE}", b"", method="GET")[0] == 405
    assert post(http_port, f"/panic/{SITE}", b"x" * (MAX_MESSAGE_BYTES + 1))[0] == 413
    assert len(recorder.presses) == 2
    assert ingress.stats()["rejected_bad_signature"] == 3  # forged x2, MQTT press to the wrong site


def test_an_mqtt_press_is_retried_while_the_escalation_is_down(mosquitto_broker: tuple[str, int]) -> None:
    host, port = mosquitto_broker
    calls: list[PanicPress] = []

    def flaky(press: PanicPress) -> str:  # down twice, then back
        calls.append(press)
        if len(calls) < 3:
            raise RuntimeError("escalation restarting")
        return "panic-1"

    ingress = PanicIngress(make_verifier(), flaky)
    listener = MqttListener(ingress, PanicMqttConfig(host=host, port=port, client_id="test-ingress"), [SITE],
                            retry_s=0.05)
    listener.start()
    try:
        assert listener.subscribed.wait(5)
        publish(host, port, topic_for("flux-secu/panic", SITE),
                [press_payload(SITE, "btn-1", SECRET, int(time.time()), "nonce-0001")])
        wait_for(lambda: ingress.stats().get("accepted_mqtt") == 1)
    finally:
        listener.stop()
    assert len(calls) == 3 and ingress.stats()["dispatch_failed"] == 2


def test_attacker_text_is_clipped_in_logs() -> None:
    ingress = PanicIngress(make_verifier(), Recorder(), clock=lambda: NOW)
    with structlog.testing.capture_logs() as logs:
        ingress.handle("x" * 1000 + "\n", b"{}", "http")
    assert len(logs[0]["site"]) == 67 and "\n" not in logs[0]["site"]


def test_a_retained_press_is_not_taken_for_a_new_one(mosquitto_broker: tuple[str, int]) -> None:
    host, port = mosquitto_broker
    topic = topic_for("flux-secu/panic", SITE)
    client = Client(CallbackAPIVersion.VERSION2, client_id="test-device")
    client.connect(host, port)
    client.loop_start()
    raw = press_payload(SITE, "btn-1", SECRET, int(time.time()), "retained1")
    client.publish(topic, raw, qos=1, retain=True).wait_for_publish(timeout=5)
    client.disconnect()
    client.loop_stop()
    recorder = Recorder()
    ingress = PanicIngress(make_verifier(), recorder)
    listener = MqttListener(ingress, PanicMqttConfig(host=host, port=port, client_id="test-ingress"), [SITE])
    listener.start()
    try:
        wait_for(lambda: ingress.stats().get("rejected_malformed") == 1)
    finally:
        listener.stop()
    assert recorder.presses == []


# --- end to end: real Ray, real EscalationActor, real SQLite store --------------------------------


@pytest.mark.slow
def test_panic_over_mqtt_and_http_reaches_the_police(
    tmp_path: Path, panic_secret: str, mosquitto_broker: tuple[str, int], ray_session: None
) -> None:
    import ray

    from flux_secu.actors.alerting import EscalationActor
    from flux_secu.actors.panic import PanicIngressActor
    from flux_secu.store.sqlite import SQLiteStore

    host, port = mosquitto_broker
    config = build_config(tmp_path, panic_edit(mqtt={"host": host, "port": port, "client_id": "e2e-ingress"},
                                               http={"port": 0}))
    config.var_dir.mkdir(parents=True, exist_ok=True)
    site = config.sites[0]
    escalation = EscalationActor.remote(site, config, True)  # type: ignore[attr-defined]
    ingress = PanicIngressActor.remote(config, {SITE: escalation})  # type: ignore[attr-defined]
    store = SQLiteStore(config.store.path)
    try:
        ray.get(escalation.ready.remote(), timeout=60)
        ready = ray.get(ingress.ready.remote(10), timeout=60)
        assert ready["mqtt"] == {"subscribed": True, "topics": [f"flux-secu/panic/{SITE}"]}
        http_port = ready["http"]["port"]

        now = int(time.time())
        by_mqtt = press_payload(SITE, "btn-1", SECRET, now, "mqtt-0001")
        by_http = press_payload(SITE, "btn-2", SECRET + "-2", now, "http-0001")
        sent = time.time()
        publish(host, port, topic_for("flux-secu/panic", SITE), [by_mqtt])
        wait_for(lambda: len(store.incidents()) == 1)
        status, answer = post(http_port, f"/panic/{SITE}", by_http)
        assert status == 202, answer

        incidents = {s.incident.label: s for s in store.incidents()}
        assert set(incidents) == {"Agent Dupont", "Agent Martin"}
        assert answer["incident"] == incidents["Agent Martin"].incident.id
        for agent, device, channel in (("Agent Dupont", "btn-1", "mqtt"), ("Agent Martin", "btn-2", "http")):
            stored = incidents[agent]
            assert stored.incident.kind == "panic" and stored.incident.site == SITE
            events = store.events(stored.incident.id)
            proof = next(e.data for e in events if e.kind == "panic_proof")
            assert proof["device_id"] == device and proof["agent"] == agent and proof["site"] == SITE
            assert proof["channel"] == channel and proof["pressed_at"] == now
            notified = {e.data["contact"]: e.ts for e in events if e.kind == "notification"}
            assert set(notified) == {"Police municipale", "Responsable de site"}
            assert notified["Police municipale"] - sent < 5  # at once: no verification, no loudspeaker
            assert "warning" not in [e.kind for e in events]
        notes = (config.var_dir / "notifications" / f"{SITE}.jsonl").read_text().splitlines()
        assert sum(json.loads(n)["contact"] == "Police municipale" for n in notes) == 2

        # Forged and replayed, over both channels: refused, and nothing changes in the store.
        before = (store.incidents(), store.events())
        forged = press_payload(SITE, "btn-1", "attacker-guess-000000", now, "forged-01")
        publish(host, port, topic_for("flux-secu/panic", SITE), [forged, by_mqtt, by_http])
        assert post(http_port, f"/panic/{SITE}", forged)[0] == 401
        assert post(http_port, f"/panic/{SITE}", by_http)[0] == 409
        assert post(http_port, f"/panic/{SITE}", by_mqtt)[0] == 409
        wait_for(lambda: sum(v for k, v in ray.get(ingress.stats.remote()).items()
                             if k.startswith("rejected")) == 6)
        stats = ray.get(ingress.stats.remote())
        assert stats == {"accepted_mqtt": 1, "accepted_http": 1, "rejected_bad_signature": 2,
                         "rejected_replayed": 4}
        assert (store.incidents(), store.events()) == before
    finally:
        store.close()
        ray.get(ingress.stop.remote(), timeout=30)
        ray.kill(ingress)
        ray.kill(escalation)
