"""PanicIngressActor: receives staff panic-button presses over MQTT and HTTP and hands them to escalation.

The actor is a thin shell around three pieces that work without Ray (and are tested that way):

- :class:`PanicIngress`: verify a raw message (:mod:`flux_secu.alerts.panic`), hand the press over,
  log and count; it returns an HTTP-shaped answer ``(status, json)`` so that any HTTP front (the
  stdlib server here, the FastAPI app later through :meth:`PanicIngressActor.submit`) only forwards;
- :class:`MqttListener`: paho-mqtt client subscribed at QoS 1 to ``{topic_prefix}/{site}`` per site;
- :func:`make_http_server`: ``POST /panic/{site}`` on a threaded stdlib HTTP server.

One verifier serves both channels, so a press accepted over MQTT is a replay over HTTP and vice versa.
Nothing here decides who is told: an accepted press goes to ``Escalation.panic`` of its site,
which opens the ``panic`` incident with its proof and notifies the police and the site manager.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import ray
import structlog
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage
from ray.exceptions import RayError

from flux_secu.alerts import outbox
from flux_secu.alerts.panic import (
    HTTP_STATUS,
    MAX_MESSAGE_BYTES,
    PanicPress,
    PanicRejected,
    PanicVerifier,
    RejectReason,
    safe_text,
    verifier_from_config,
)
from flux_secu.config import Config, PanicMqttConfig
from flux_secu.logs import configure_from_env
from flux_secu.store import open_store

log = structlog.get_logger("flux_secu.panic")

Dispatch = Callable[[PanicPress], str]
"""Hands an accepted press over and returns the incident id; raises when it could not."""

_PATH = re.compile(r"^/panic/([^/]{1,128})$")
_ACK_PATH = re.compile(r"^/ack/([A-Za-z0-9_.=-]{10,1024})$")
Acknowledge = Callable[[str], dict[str, Any]]
"""Checks a signed acknowledgement token and acknowledges its incident (Escalation.acknowledge_link)."""

_ACK_FORM = """<!doctype html><html lang="fr"><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>flux-secu</title>
<body style="font-family:sans-serif;max-width:30em;margin:2em auto;padding:0 1em">
<h1>Prise en charge</h1><p>Confirmez que vous prenez en charge cet incident : la chaîne d'astreinte
s'arrêtera.</p><form method="post"><button style="font-size:1.4em;padding:.6em 1.2em">Je prends en charge
</button></form></body></html>"""


class PanicIngress:
    """Verify -> hand over -> log, for one message from either channel. Thread-safe."""

    def __init__(self, verifier: PanicVerifier, dispatch: Dispatch,
                 clock: Callable[[], float] = time.time,
                 record: Callable[[PanicPress], None] | None = None,
                 accepted_before: Callable[[PanicPress], bool] | None = None,
                 refused: Callable[[str, PanicRejected, str, str], None] | None = None) -> None:
        self.verifier = verifier
        self.dispatch = dispatch
        self.clock = clock
        self.record = record
        """Records the press as an intent in the store before it is handed over (None: not recorded)."""
        self.accepted_before = accepted_before
        """True for a press already carried out (the store remembers what a restarted ingress forgot)."""
        self.refused = refused
        """Records a refused press (site, refusal, channel, origin) where operators see it."""
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def handle(self, site: str, raw: bytes, channel: str, *, origin: str = "",
               retained: bool = False) -> tuple[int, dict[str, Any]]:
        """``(202, {"status": "accepted", "incident": ...})`` or the refusal's status and reason."""
        try:
            if retained:
                # A retained message is replayed by the broker to every new subscriber: never a fresh press.
                raise PanicRejected(RejectReason.MALFORMED, "retained message")
            press = self.verifier.verify(site, raw, channel, self.clock())
            if self.accepted_before is not None and self.accepted_before(press):
                raise PanicRejected(RejectReason.REPLAYED, "press already carried out", press.device_id)
        except PanicRejected as exc:
            self._count(f"rejected_{exc.reason}")
            if self.refused is not None and exc.press is None:
                try:
                    self.refused(site, exc, channel, origin)
                except Exception as error:  # the store is down: the log above still has it
                    log.error("panic_refusal_not_recorded", error=repr(error))
            # Never the payload: it holds the signature. The claimed device id is shown clipped.
            log.warning("panic_rejected", site=safe_text(site), channel=channel, reason=str(exc.reason),
                        detail=exc.detail, device=safe_text(exc.device) if exc.device else None,
                        origin=origin or None)
            if exc.press is None:
                return HTTP_STATUS[exc.reason], {"status": "rejected", "reason": str(exc.reason)}
            # Signed by a known button, but its clock is off: never dropped in silence. An incident asks
            # the manager to call the agent back (not the police: it may be an old press replayed).
            press = exc.press
        try:
            if self.record is not None:
                self.record(press)  # lost with this process or the escalation's: swept from the store
            incident = self.dispatch(press)
        except Exception as exc:  # the escalation is down: say so, and let the device send it again
            self.verifier.forget(press)
            self._count("dispatch_failed")
            log.error("panic_dispatch_failed", site=press.site, device=press.device_id, channel=channel,
                      message_id=press.message_id, error=type(exc).__name__)
            return 503, {"status": "error", "reason": "escalation_unavailable"}
        if press.stale:
            self._count("stale_call_back")
            return 202, {"status": "call_back", "reason": "stale", "incident": incident,
                         "message_id": press.message_id}
        self._count(f"accepted_{channel}")
        handover_ms = round((self.clock() - press.received_at) * 1e3, 1)
        log.warning("panic_accepted", site=press.site, device=press.device_id, agent=press.agent,
                    channel=channel, message_id=press.message_id, incident=incident,
                    pressed_at=press.pressed_at, handover_ms=handover_ms, origin=origin or None)
        return 202, {"status": "accepted", "incident": incident, "message_id": press.message_id}

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1


def panic_recorder(store: Any) -> Callable[[PanicPress], None]:
    """Records a press as an intent in the store before it is handed over: if the hand-over is lost (the
    escalation's process died, this one died), the site's alerts carry it out from the store."""
    from dataclasses import asdict

    from flux_secu.actors.alerting import panic_incident_id

    def record(press: PanicPress) -> None:
        store.add_intent(outbox.panic_key(panic_incident_id(press)), press.site, outbox.PANIC,
                         {"press": asdict(press)}, time.time())

    return record


def panic_done(store: Any) -> Callable[[PanicPress], bool]:
    """Whether a press was carried out already: its intent is done (a replay after an ingress restart,
    whose nonces in memory are gone). A press whose hand-over failed (pending) may be sent again."""
    from flux_secu.actors.alerting import panic_incident_id

    def done(press: PanicPress) -> bool:
        intent = store.get_intent(outbox.panic_key(panic_incident_id(press)))
        return intent is not None and intent.state == "done"

    return done


Refusal = Callable[[str, PanicRejected, str, str], None]


def refusal_recorder(store: Any, clock: Callable[[], float]) -> Refusal:
    """Refused presses go to the audit log (the web interface's audit view, the morning report)."""
    from flux_secu.actors.alerting import PANIC_REFUSED

    def record(site: str, exc: PanicRejected, channel: str, origin: str) -> None:
        store.append_audit(clock(), "panic-ingress", PANIC_REFUSED, safe_text(site), {
            "reason": str(exc.reason), "detail": exc.detail, "channel": channel, "origin": origin,
            "device": safe_text(exc.device) if exc.device else None})

    return record


def ray_dispatch(escalations: Mapping[str, Any], attempts: int = 3, timeout_s: float = 5.0) -> Dispatch:
    """Calls ``escalations[site].panic.remote(press)`` and waits for the incident id.

    Retried a few times: the escalation actor restarts on failure (``max_restarts=-1``) and a panic
    must survive that. A retry after a timeout may run ``panic`` twice for one press, which is why the
    escalation keys the incident on ``press.message_id``.
    """

    def dispatch(press: PanicPress) -> str:
        actor = escalations[press.site]
        for attempt in range(1, attempts + 1):
            try:
                return str(ray.get(actor.panic.remote(press), timeout=timeout_s))
            except RayError as exc:
                if attempt == attempts:
                    raise
                log.warning("panic_dispatch_retry", site=press.site, message_id=press.message_id,
                            attempt=attempt, error=type(exc).__name__)
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    return dispatch


def topic_for(prefix: str, site: str) -> str:
    return f"{prefix}/{site}"


class MqttListener:
    """paho-mqtt client (callback API v2) feeding :class:`PanicIngress`.

    - a fixed client id with a persistent session (``clean_session=False``) and QoS 1: presses published
      while the ingress is down or restarting are queued by the broker and delivered on reconnection;
    - manual acknowledgement: the PUBACK goes out only once the press was handed over (or refused), so a
      crash in between makes the broker deliver it again;
    - messages are processed on a small thread pool, so the network loop (keep-alives, reconnection)
      never waits on the escalation actor;
    - a device gets no answer over MQTT, so a press that could not be handed over (escalation down) is
      tried again every ``retry_s`` until it is, or until it is stale (``max_skew_s`` after the press).
    """

    def __init__(self, ingress: PanicIngress, settings: PanicMqttConfig, sites: list[str],
                 workers: int = 2, retry_s: float = 2.0) -> None:
        self.ingress = ingress
        self.retry_s = retry_s
        self._closing = threading.Event()
        self.settings = settings
        self.topics = {topic_for(settings.topic_prefix, s): s for s in sites}
        self.subscribed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="panic-mqtt")
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                             clean_session=False, manual_ack=True)
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            self.client.username_pw_set(settings.username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def start(self) -> None:
        # connect_async + loop_start: a broker that is down at start is retried, never fatal.
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self._closing.set()
        self.client.disconnect()
        self.client.loop_stop()
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _on_connect(self, client: Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("panic_mqtt_refused", host=self.settings.host, port=self.settings.port,
                      reason=str(reason_code))
            return
        log.info("panic_mqtt_connected", host=self.settings.host, port=self.settings.port,
                 topics=sorted(self.topics))
        # Subscribed again on every connection: harmless with a persistent session, needed without one.
        if self.topics:
            client.subscribe([(t, 1) for t in sorted(self.topics)])
        else:
            self.subscribed.set()

    def _on_subscribe(self, client: Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("panic_mqtt_subscribe_refused", reasons=failed)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self.subscribed.clear()
        log.warning("panic_mqtt_disconnected", reason=str(reason_code))  # paho reconnects by itself

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        self._pool.submit(self._process, message)

    def _process(self, message: MQTTMessage) -> None:
        try:
            site = self.topics.get(message.topic, message.topic)
            origin = f"mqtt:{message.topic}"
            status, _ = self.ingress.handle(site, message.payload, "mqtt", origin=origin,
                                            retained=bool(message.retain))
            # 503: verified but not handed over, and its nonce released; verifying it again also ends
            # the retries once the press has gone stale.
            while status == 503 and not self._closing.wait(self.retry_s):
                status, _ = self.ingress.handle(site, message.payload, "mqtt", origin=origin)
        except Exception:
            log.exception("panic_mqtt_error", topic=safe_text(message.topic))
        finally:
            if message.qos > 0:
                self.client.ack(message.mid, message.qos)


def make_http_server(ingress: PanicIngress, host: str, port: int,
                     acknowledge: Acknowledge | None = None) -> ThreadingHTTPServer:
    """``POST /panic/{site}`` with the press as JSON body, and the acknowledgement links
    (``GET /ack/{token}``: a confirmation page, so that a link preview never acknowledges by itself;
    ``POST /ack/{token}``: acknowledge). One thread per request."""

    class Handler(_PanicHandler):
        pass

    Handler.ingress = ingress
    Handler.acknowledge = staticmethod(acknowledge) if acknowledge else None  # type: ignore[assignment]
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


class _PanicHandler(BaseHTTPRequestHandler):
    ingress: PanicIngress
    acknowledge: Acknowledge | None = None
    timeout = 5.0  # a client that stalls mid-request must not hold a thread forever
    server_version = "flux-secu"
    sys_version = ""

    def _ack_token(self) -> str | None:
        match = _ACK_PATH.match(urlsplit(self.path).path)
        return match.group(1) if match and self.acknowledge is not None else None

    def do_POST(self) -> None:
        token = self._ack_token()
        if token is not None:
            assert self.acknowledge is not None
            answer = self.acknowledge(token)
            return self._reply(int(answer.pop("status", 200 if answer.get("ok") else 403)), answer)
        site = self._site()
        if site is None:
            return self._reply(404, {"status": "not_found"})
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return self._reply(411, {"status": "rejected", "reason": "length_required"})
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            return self._reply(400, {"status": "rejected", "reason": str(RejectReason.MALFORMED)})
        if length > MAX_MESSAGE_BYTES:
            return self._reply(413, {"status": "rejected", "reason": "too_large"})
        body = self.rfile.read(length)
        status, answer = self.ingress.handle(site, body, "http", origin=self.client_address[0])
        self._reply(status, answer)

    def do_GET(self) -> None:
        if self._ack_token() is not None and self.command == "GET":
            page = _ACK_FORM.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return None
        if self._site() is None:
            return self._reply(404, {"status": "not_found"})
        self._reply(405, {"status": "method_not_allowed"}, allow="POST")

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _site(self) -> str | None:
        match = _PATH.match(urlsplit(self.path).path)
        return match.group(1) if match else None

    def _reply(self, status: int, answer: dict[str, Any], allow: str | None = None) -> None:
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request to stderr; the ingress already logs each press.
        log.debug("panic_http_request", client=self.client_address[0], line=format % args)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=4)
class PanicIngressActor:
    """Owns the MQTT client and the webhook server of the panic-button ingress (one per deployment).

    ``escalations`` maps every site id to its escalation handle (``SiteRole`` or actor); every site with panic
    devices must have one.
    """

    def __init__(self, config: Config, escalations: dict[str, Any],
                 clock: Callable[[], float] | None = None, mqtt: bool = True) -> None:
        configure_from_env()
        sites = [s.id for s in config.sites if s.panic is not None]
        missing = [s for s in sites if s not in escalations]
        if missing:
            raise ValueError(f"no escalation actor for site(s) with panic devices: {', '.join(missing)}")
        self.settings = config.panic
        store = open_store(config.store)
        self.ingress = PanicIngress(verifier_from_config(config), ray_dispatch(escalations),
                                    clock or time.time, panic_recorder(store), panic_done(store),
                                    refusal_recorder(store, clock or time.time))
        self.mqtt: MqttListener | None = None
        self.http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        if self.settings.mqtt.enabled and mqtt and sites:
            self.mqtt = MqttListener(self.ingress, self.settings.mqtt, sites)
            self.mqtt.start()
        if self.settings.http.enabled:
            # Any site's escalation can check a link (one secret); the store then holds the
            # acknowledgement, and the actor that runs that incident's chain stops at its next tick.
            first = next(iter(escalations.values()), None)
            # The link is checked and audited as the API does (flux_secu.alerts.ack.redeem).
            from flux_secu.alerts.ack import load_secret, redeem

            store = open_store(config.store)
            secret = load_secret(config.notifications.ack_secret, config.var_dir)

            def acknowledge(token: str) -> dict[str, Any]:
                def ack(incident: Any, contact: str) -> bool:
                    actor = escalations.get(incident.site, first)
                    return actor is not None and bool(
                        ray.get(actor.acknowledge.remote(incident.id, contact, "link"), timeout=10))

                outcome, claim = redeem(store, secret, token, time.time(), ack)
                if claim is not None and outcome.status in (200, 409):
                    store.append_audit(time.time(), claim.contact, "acknowledge" if outcome.status == 200
                                       else "acknowledge_refused", claim.incident_id,
                                       {"via": "link", "ingress": "panic-http", "link_id": claim.token_id,
                                        "first": outcome.status == 200})
                return {**outcome.answer, "status": outcome.status}

            self.http = make_http_server(self.ingress, self.settings.http.host, self.settings.http.port,
                                         acknowledge)
            self._http_thread = threading.Thread(
                target=self.http.serve_forever, kwargs={"poll_interval": 0.5}, name="panic-http", daemon=True
            )
            self._http_thread.start()
            log.info("panic_http_listening", host=self.settings.http.host, port=self.http.server_port)

    def ready(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Where it listens; waits up to ``timeout_s`` for the MQTT subscriptions (False if not there)."""
        mqtt = http = None
        if self.mqtt is not None:
            mqtt = {"subscribed": self.mqtt.subscribed.wait(timeout_s), "topics": sorted(self.mqtt.topics)}
        if self.http is not None:
            http = {"host": self.settings.http.host, "port": self.http.server_port}
        return {"sites": self.ingress.verifier.sites, "mqtt": mqtt, "http": http}

    def submit(
        self, site: str, raw: bytes, channel: str = "http", origin: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """The webhook's logic, for an HTTP front living elsewhere (the FastAPI app): forward the body."""
        return self.ingress.handle(site, raw, channel, origin=origin)

    def stats(self) -> dict[str, int]:
        return self.ingress.stats()

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        if self.mqtt is not None:
            self.mqtt.stop()
            self.mqtt = None
