"""Speaker and Escalation: one of each per site, each owning its output channel.

In a deployment every site's pair lives in one ``SiteAlerts`` process (``actors/site_alerts.py``);
``SpeakerActor`` and ``EscalationActor`` run one of them in a process of its own.

Both check the store before acting and record what they did under an idempotency key, so a step
replayed after a restart announces nothing twice. Every effect is an intent in the store first
(``alerts/outbox.py``): the warning and the escalation are requested there by whoever asks for them,
each notification of the chain is recorded there before it is sent, one channel at a time, and marked
done after. The escalation chain's progress lives in the store: a restarted Escalation rebuilds its
plan from there and goes on where it was, and a notification sent but not yet marked is marked, never
sent again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import ray
import structlog

from flux_secu.alerts import escalation as policy
from flux_secu.alerts import outbox
from flux_secu.alerts.ack import load_secret, make_token, record_acknowledgement, redeem
from flux_secu.alerts.notify import (
    AppriseNotifier,
    Notification,
    NotificationError,
    Notifier,
    RecordingNotifier,
    compose,
)
from flux_secu.alerts.ratelimit import RateLimiter
from flux_secu.alerts.report import build_report
from flux_secu.alerts.speakers import (
    FileSpeakerDriver,
    SpeakerDriver,
    SpeakerError,
    make_driver,
    warning_wav,
)
from flux_secu.alerts.tts import synthesise
from flux_secu.config import Config, ContactConfig, SiteConfig, StoreConfig
from flux_secu.incidents.lifecycle import Transition
from flux_secu.logs import configure_from_env
from flux_secu.rules.incident import Incident, IncidentKind, IncidentState
from flux_secu.store import open_store

log = structlog.get_logger("flux_secu.alerts")

TICK_S = 0.5
PANIC_REFUSED = "panic_refused"
"""The audit action of a panic press the ingress refused (shown in the audit log and the morning report)."""


def request_escalation(store: Any, escalation: Any, incident: Incident, reason: str) -> Any:
    """Record the escalation as an intent, then hand it to the site's escalation: if the call is lost
    (the site's alerts process died), the intent is swept from the store when it is back."""
    store.add_intent(outbox.escalate_key(incident.id), incident.site, outbox.ESCALATE,
                     {"incident": incident.to_dict(), "reason": reason}, time.time())
    return escalation.escalate.remote(incident, reason)


def settle_intent(store: Any, key: str) -> None:
    """Mark an intent done (a call that came directly, or the sweep of a lost one)."""
    intent = store.get_intent(key)
    if intent is not None and intent.state == "pending":
        store.update_intent(key, "done", attempts=intent.attempts + 1)


@dataclass
class _Speaker:
    id: str
    driver: SpeakerDriver
    wav: Path
    zone_wavs: dict[str, Path]
    repeat: int
    min_interval_s: float


class Speaker:
    """Plays the site's warning on each of its speakers, once per incident.

    A failing speaker is recorded and the incident goes straight to the on-call chain: a warning
    that could not be given must never pass in silence.
    """

    def __init__(self, site: SiteConfig, store: StoreConfig, var_dir: Path, escalation: Any = None,
                 dry_run: bool = False) -> None:
        self.site = site
        self.store = open_store(store)
        self.escalation = escalation
        self.limiter = RateLimiter()
        self.speakers: list[_Speaker] = []
        for speaker in site.speakers:
            # Synthesised once, at start: a warning must not wait for speech synthesis.
            wav = warning_wav(speaker, var_dir)
            zone_wavs = {zone: synthesise(text, speaker.voice, var_dir / "tts")
                         for zone, text in speaker.zone_messages.items()}
            # A replay (dry run) never sounds a real speaker: plays are recorded as files.
            driver = (FileSpeakerDriver(speaker.id, var_dir / "speakers" / site.id / speaker.id) if dry_run
                      else make_driver(speaker, var_dir, site_id=site.id))
            self.speakers.append(_Speaker(speaker.id, driver, wav, zone_wavs, speaker.repeat,
                                          speaker.min_interval_s))

    def ready(self) -> int:
        return len(self.speakers)

    def warn(self, incident: Incident) -> int:
        """Returns the number of speakers that played (0 when already done for this incident)."""
        played, failures = 0, []
        for speaker in self.speakers:
            key = f"warning:{speaker.id}"
            if self.store.has_event(incident.id, key):
                continue  # replayed after a restart: never announce twice
            zone = f"{incident.camera}/{incident.zone}"  # zone ids are per camera
            if not self.limiter.allow((speaker.id, zone), incident.opened_at, speaker.min_interval_s):
                self.store.record_event(incident.id, "warning_skipped", time.time(),
                                        {"speaker": speaker.id, "reason": "rate limit", "zone": zone},
                                        key=f"warning_skipped:{speaker.id}")
                continue
            wav = speaker.zone_wavs.get(incident.zone, speaker.wav)
            try:
                play = speaker.driver.play(incident.id, wav, speaker.repeat)
            except SpeakerError as exc:
                failures.append(f"{speaker.id}: {exc}")
                self.store.record_event(incident.id, "warning_failed", time.time(),
                                        {"speaker": speaker.id, "error": str(exc)},
                                        key=f"warning_failed:{speaker.id}")
                log.error("warning_failed", incident=incident.id, site=self.site.id, speaker=speaker.id,
                          error=str(exc))
                continue
            self.store.record_event(incident.id, "warning", play.command_ts, {
                "speaker": speaker.id, "wav": str(play.wav), "repeat": speaker.repeat,
                "command_ts": play.command_ts, "zone": incident.zone,
            }, key=key)
            played += 1
            log.debug("warning_played", incident=incident.id, site=self.site.id, speaker=speaker.id)
        if played:
            # Refused (and fine) when the incident went on meanwhile: escalated, acknowledged...
            self.store.transition(incident.id, Transition.WARNED, time.time(), {"speakers": played})
        if failures and self.escalation is not None:
            request_escalation(self.store, self.escalation, incident,
                               "Haut-parleur en panne : " + "; ".join(failures))
        settle_intent(self.store, outbox.warn_key(incident.id))
        return played


@dataclass
class _Active:
    """An escalation in progress: its plan and the steps already done (by idempotency key)."""

    incident: Incident
    steps: list[policy.Step]
    reason: str = ""
    done: set[str] = field(default_factory=set)
    early: set[str] = field(default_factory=set)
    """Steps due now although their time has not come: the contact before could not be reached."""


class Escalation:
    """Notifies the site's on-call chain until someone acknowledges; police and manager when due."""

    def __init__(self, site: SiteConfig, config: Config, dry_run: bool = False) -> None:
        self.site = site
        self.esc = site.escalation
        self.config = config
        self.tz = ZoneInfo(site.timezone or config.timezone)
        self.store = open_store(config.store)
        self.notifier: Notifier = (
            RecordingNotifier(config.var_dir / "notifications" / f"{site.id}.jsonl")
            if dry_run or config.notifications.dry_run else AppriseNotifier()
        )
        self.secret = load_secret(config.notifications.ack_secret, config.var_dir)
        self.contacts = {c.name: c for c in self.esc.contacts}
        self.all_contacts = {c.name: c for c in [*self.esc.contacts, self.esc.police, self.esc.manager] if c}
        self.rota = [policy.RotaEntry(e.starts, e.contact) for e in self.esc.rota]
        self.lock = threading.RLock()
        self.active: dict[str, _Active] = {}
        self._sent: dict[str, tuple[str, dict[str, Any]]] = {}
        """Notifications sent whose record failed (the store was down), by intent key (with their event's
        key and data): recorded again, never resent."""
        self.log = log.bind(site=site.id)
        self._resume()
        self._stop = threading.Event()
        threading.Thread(target=self._ticker, name="escalation-ticker", daemon=True).start()

    def ready(self) -> int:
        return len(self.active)

    # --- intrusions -----------------------------------------------------------------------------

    def escalate(self, incident: Incident, reason: str = "") -> bool:
        """Start the chain for a verified intrusion; False when it was already started."""
        with self.lock:
            now = time.time()
            order = policy.chain(list(self.contacts), self.rota, datetime.fromtimestamp(now, self.tz))
            at_once = [self.esc.police.name] if self.esc.police and self.esc.police_on_verified else []
            started = self._start(incident, order, self.esc.ack_timeout_s, self.esc.rounds, at_once, reason,
                                  now)
            settle_intent(self.store, outbox.escalate_key(incident.id))
            return started

    def _start(self, incident: Incident, order: list[str], step_s: float, rounds: int, at_once: list[str],
               reason: str, now: float) -> bool:
        """Record the plan in the store (so a restart resumes it), then send what is due."""
        plan = {"reason": reason, "chain": order, "started_at": now, "step_s": step_s, "rounds": rounds,
                "at_once": at_once}
        outcome = self.store.transition(incident.id, Transition.ESCALATED, now, plan)
        if not outcome.applied:  # already escalated, or acknowledged or closed meanwhile
            self.log.debug("escalation_refused", incident=incident.id, reason=outcome.reason)
            return False
        self.log.debug("escalation_started", incident=incident.id, chain=order, at_once=at_once)
        self.active[incident.id] = _Active(incident, _steps(plan), reason)
        self._run_due(now)
        return True

    def acknowledge(self, incident_id: str, by: str, via: str = "api") -> bool:
        """Stop the chain; False when the incident was already acknowledged (or is unknown)."""
        with self.lock:
            known = {s.incident.id for s in self.store.incidents()}
            if incident_id not in known:
                return False
            first = record_acknowledgement(self.store, incident_id, by, via, time.time())
            if first:
                self.log.info("acknowledged", incident=incident_id, by=by, via=via)
            self.active.pop(incident_id, None)
            return first

    def acknowledge_link(self, token: str) -> dict[str, Any]:
        """Acknowledge through a signed link, checked as the API and the ingress check it
        (``alerts.ack.redeem``: single use, refused once closed or revoked); the answer's ``ok`` says."""
        outcome, _ = redeem(self.store, self.secret, token, time.time(),
                            lambda incident, contact: self.acknowledge(incident.id, contact, via="link"))
        if not outcome.answer.get("ok"):
            self.log.warning("acknowledgement_refused", reason=outcome.answer.get("reason"))
        return dict(outcome.answer)

    def ack_link(self, incident_id: str, contact: str) -> str:
        expires = time.time() + self.config.notifications.ack_link_ttl_s
        token = make_token(self.secret, incident_id, contact, expires)
        return f"{self.config.notifications.public_url.rstrip('/')}/ack/{token}"

    # --- panic button ---------------------------------------------------------------------------

    def panic(self, press: Any) -> str:
        """An agent's panic press: incident with its proof, police and manager notified at once.

        Idempotent: the same press delivered twice (MQTT redelivery, ingress restart) changes nothing,
        and a press handed over again after a failure half-way (the proof written, not the chain) goes
        on from where it stopped. A press whose signature is valid but whose clock is off
        (``press.stale``) is no proof of an emergency: the manager is asked to call the agent back.
        """
        with self.lock:
            incident = Incident(
                id=panic_incident_id(press), kind=IncidentKind.PANIC,
                site=press.site, camera="", label=press.agent, opened_at=press.received_at,
            )
            self.store.open_incident(incident)
            self.store.record_event(incident.id, "panic_proof", press.received_at,
                                    asdict(press), key="proof")
            if getattr(press, "stale", False):
                contact = self.esc.manager or self.esc.contacts[0]
                reason = ("Bouton d'alerte reçu avec une horloge décalée : rappeler l'agent pour "
                          "vérifier (non transmis à la police).")
                self._start(incident, [], 0.0, 1, [contact.name], reason, time.time())
            else:
                at_once = [c.name for c in (self.esc.police, self.esc.manager) if c]
                if not at_once:  # a config without police nor manager still reaches someone
                    at_once = [self.esc.contacts[0].name]
                self._start(incident, [], 0.0, 1, at_once, "Alerte déclenchée par un agent.", time.time())
            settle_intent(self.store, outbox.panic_key(incident.id))
            self.log.warning("panic", incident=incident.id, device=press.device_id, agent=press.agent,
                             stale=getattr(press, "stale", False))
            return incident.id

    # --- morning report -------------------------------------------------------------------------

    def morning_report(self, night_of: str | None = None) -> dict[str, Any] | None:
        """Send the report of a night (default: last night) to the manager, once per night; a failed send
        is retried with back-off (marked sent only once it was)."""
        with self.lock:
            now = time.time()
            now_local = datetime.now(self.tz)
            night = (datetime.fromisoformat(night_of).date() if night_of
                     else (now_local - timedelta(days=1)).date())
            key = outbox.report_key(self.site.id, night.isoformat())
            self.store.add_intent(key, self.site.id, outbox.REPORT, {"night": night.isoformat()}, now)
            intent = self.store.get_intent(key)
            if intent is None or intent.state != "pending" or intent.next_at > now:
                return None
            incidents = self.store.incidents()
            events = {s.incident.id: [e.kind for e in self.store.events(s.incident.id)] for s in incidents
                      if s.incident.site == self.site.id}
            refused = [(r.ts, str(r.data.get("reason", "")), str(r.data.get("device") or ""))
                       for r in self.store.audit_log()
                       if r.action == PANIC_REFUSED and r.target == self.site.id]
            report = build_report(self.site.id, self.site.name, night, incidents, events, self.tz,
                                  self.esc.report_at or dtime(7, 30), refused)
            contact = self.esc.manager or self.esc.contacts[0]
            note = Notification(f"report-{night}", contact.name, list(contact.channels),
                                report.title, report.body)
            attempts = intent.attempts + 1
            try:
                self.notifier.send(note)
            except NotificationError as exc:
                final = attempts >= outbox.MAX_ATTEMPTS
                self.store.update_intent(key, "failed" if final else "pending", attempts=attempts,
                                         next_at=now + outbox.retry_delay(attempts), error=str(exc))
                self.log.error("report_failed", error=str(exc), attempts=attempts, final=final)
                return None
            self.store.update_intent(key, "done", attempts=attempts)
            self.log.info("morning_report", night=str(night), **report.counts)
            return {"title": report.title, "body": report.body, "counts": report.counts}

    # --- internals ------------------------------------------------------------------------------

    def _resume(self) -> None:
        """Rebuild the escalations in progress from the store (after a restart)."""
        for stored in self.store.incidents():
            inc = stored.incident
            if inc.site != self.site.id or stored.state != IncidentState.ESCALATED:
                continue
            events = self.store.events(inc.id)
            started = next((e for e in events if e.key == "escalated"), None)
            if started is None:
                continue
            # Which steps are done is read from their channels' intents at the next tick.
            self.active[inc.id] = _Active(inc, _steps(started.data), started.data.get("reason", ""))
            self.log.info("escalation_resumed", incident=inc.id)

    def _ticker(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                with self.lock:
                    self._run_due(time.time())
                # From report_at until noon: a deployment started in the afternoon does not send a
                # report of the night before; one down at report_at still sends it when it is back.
                now_local = datetime.now(self.tz).time()
                if self.esc.report_at is not None and self.esc.report_at <= now_local < dtime(12, 0):
                    self.morning_report()
            except Exception as exc:  # the ticker must survive any single failure
                self.log.error("escalation_tick_failed", error=repr(exc))

    def _run_due(self, now: float) -> None:
        for incident_id, active in list(self.active.items()):
            if self.store.has_event(incident_id, "acknowledged"):
                del self.active[incident_id]  # acknowledged elsewhere (API, another actor): stop
                continue
            while self._run_steps(active, now):
                pass  # a contact given up calls the next one in the same tick
            if len(active.done) >= len(active.steps):
                self.log.warning("escalation_exhausted", incident=incident_id)
                del self.active[incident_id]

    def _run_steps(self, active: _Active, now: float) -> bool:
        """Send the steps due; True when a contact given up made the next one due at once."""
        called_early = False
        for step in policy.due(active.steps, now, active.done, active.early):
            contact = self.all_contacts.get(step.contact)
            outcome = "failed" if contact is None else self._notify_step(active, contact, step, now)
            if outcome == "waiting":
                continue
            active.done.add(step.key)
            if outcome == "failed" and contact is not None:  # reached on no channel: the next one now
                after = [s for s in active.steps if s.due_at > step.due_at and s.key not in active.done]
                if after:
                    active.early.add(min(after, key=lambda s: s.due_at).key)
                    called_early = True
        return called_early

    def _notify_step(self, active: _Active, contact: ContactConfig, step: policy.Step, now: float) -> str:
        """One step: the contact notified on each channel, once. ``done`` once every channel was sent or
        given up with at least one sent, ``failed`` when every one was given up, else ``waiting``."""
        outcomes = [self._notify_channel(active.incident, contact, i, step, now, active.reason)
                    for i in range(len(contact.channels))]
        if "waiting" in outcomes:
            return "waiting"
        return "done" if "done" in outcomes else "failed"

    def _notify_channel(self, incident: Incident, contact: ContactConfig, channel: int,
                        step: policy.Step, now: float, reason: str) -> str:
        event_key = outbox.channel_key(step.key, channel)
        key = outbox.notify_key(incident.id, step.key, channel)
        if key in self._sent:  # sent; its record failed: record it, never send it again
            self._record_sent(incident.id, key)
            return "done"
        intent = self.store.get_intent(key)
        if intent is None:  # the intent first: if this write fails, nothing was sent
            self.store.add_intent(key, self.site.id, outbox.NOTIFY,
                                  {"incident": incident.id, "contact": contact.name, "channel": channel,
                                   "step": asdict(step)}, now)
            intent = self.store.get_intent(key)
            if intent is None:
                return "waiting"
        if intent.state != "pending":
            return intent.state
        if intent.next_at > now:
            return "waiting"
        url = contact.channels[channel]
        base = self.config.notifications.public_url.rstrip("/")
        note = compose(incident, self.site.name, contact.name, [url], self.tz,
                       ack_link=self.ack_link(incident.id, contact.name),
                       evidence_link=f"{base}/incidents/{incident.id}", reason=reason)
        attempts = intent.attempts + 1
        try:
            self.notifier.send(note)
        except NotificationError as exc:
            final = attempts >= outbox.MAX_ATTEMPTS
            self.store.update_intent(key, "failed" if final else "pending", attempts=attempts,
                                     next_at=now + outbox.retry_delay(attempts), error=str(exc))
            self.log.error("notification_failed", incident=incident.id, contact=contact.name, channel=channel,
                           attempts=attempts, final=final, error=str(exc))
            if final:
                self.store.record_event(incident.id, "notification_failed", time.time(),
                                        {"contact": contact.name, "channel": channel, "attempts": attempts,
                                         "error": str(exc)}, key=f"{event_key}:failed")
                return "failed"
            return "waiting"
        data = {**note.record(), "channel": channel, "attempts": attempts, "step": asdict(step)}
        self._sent[key] = (event_key, data)
        self._record_sent(incident.id, key)
        self.log.info("notification_sent", incident=incident.id, contact=contact.name, channel=channel,
                      round=step.round)
        return "done"

    def _record_sent(self, incident_id: str, key: str) -> None:
        event_key, data = self._sent[key]
        self.store.record_event(incident_id, "notification", float(data["sent_ts"]), data, key=event_key)
        intent = self.store.get_intent(key)
        self.store.update_intent(key, "done", attempts=intent.attempts + 1 if intent else 1)
        del self._sent[key]


def panic_incident_id(press: Any) -> str:
    """The press's device clock is in the id: a button whose nonce counter restarts after a reboot
    reuses old nonces, and must not land on an old incident (where nobody would be told)."""
    nonce = str(press.message_id).rsplit(":", 1)[-1]
    return f"panic-{press.site}-{press.device_id}-{round(float(press.pressed_at))}-{nonce}"


def _steps(plan: dict[str, Any]) -> list[policy.Step]:
    """The steps of a recorded plan: the contacts notified at once, then the chain."""
    started = float(plan["started_at"])
    first = [policy.Step(-1, i, name, started) for i, name in enumerate(plan.get("at_once", []))]
    chain = policy.plan(plan["chain"], started, float(plan.get("step_s", 0.0)), int(plan.get("rounds", 1)))
    return first + chain


# The process's logging is the actor shell's business (SiteAlerts does it for the classes it hosts).


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class SpeakerActor(Speaker):
    """One site's speakers in a process of their own (a deployment hosts them in ``SiteAlerts``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        configure_from_env()
        super().__init__(*args, **kwargs)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=4)
class EscalationActor(Escalation):
    """One site's escalation in a process of its own (a deployment hosts it in ``SiteAlerts``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        configure_from_env()
        super().__init__(*args, **kwargs)
