"""SpeakerActor and EscalationActor: one of each per site, each owning its output channel."""

from __future__ import annotations

import time
from pathlib import Path
from zoneinfo import ZoneInfo

import ray
import structlog

from flux_secu.alerts.notify import RecordingNotifier, compose
from flux_secu.alerts.speakers import FileSpeakerDriver, SpeakerDriver
from flux_secu.alerts.tts import synthesise
from flux_secu.config import SiteConfig, StoreConfig
from flux_secu.logs import configure_from_env
from flux_secu.rules.incident import Incident, IncidentState
from flux_secu.store import open_store

log = structlog.get_logger("flux_secu.alerts")


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class SpeakerActor:
    """Plays the site's warning on each of its speakers, once per incident."""

    def __init__(self, site: SiteConfig, store: StoreConfig, var_dir: Path) -> None:
        configure_from_env()
        self.site = site
        self.store = open_store(store)
        self.speakers: list[tuple[str, SpeakerDriver, Path, int]] = []
        for speaker in site.speakers:
            # Synthesised once, at start: a warning must not wait for speech synthesis.
            wav = synthesise(speaker.message, speaker.voice, var_dir / "tts")
            driver = FileSpeakerDriver(speaker.id, var_dir / "speakers" / site.id / speaker.id)
            self.speakers.append((speaker.id, driver, wav, speaker.repeat))

    def ready(self) -> int:
        return len(self.speakers)

    def warn(self, incident: Incident) -> int:
        """Returns the number of speakers that played (0 when already done for this incident)."""
        played = 0
        for speaker_id, driver, wav, repeat in self.speakers:
            key = f"warning:{speaker_id}"
            if self.store.has_event(incident.id, key):
                continue  # replayed after a restart: never announce twice
            play = driver.play(incident.id, wav, repeat)
            self.store.record_event(incident.id, "warning", play.command_ts, {
                "speaker": speaker_id, "wav": str(play.wav), "repeat": repeat,
                "command_ts": play.command_ts,
            }, key=key)
            played += 1
            log.debug("warning_played", incident=incident.id, site=self.site.id, speaker=speaker_id)
        if played:
            self.store.set_state(incident.id, IncidentState.WARNED)
        return played


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class EscalationActor:
    """Notifies the first contact of the site's chain (the full chain comes with acknowledgements)."""

    def __init__(self, site: SiteConfig, store: StoreConfig, var_dir: Path, timezone: str) -> None:
        configure_from_env()
        self.site = site
        self.tz = ZoneInfo(site.timezone or timezone)
        self.store = open_store(store)
        self.notifier = RecordingNotifier(var_dir / "notifications" / f"{site.id}.jsonl")

    def ready(self) -> int:
        return len(self.site.escalation.contacts)

    def notify(self, incident: Incident) -> bool:
        contact = self.site.escalation.contacts[0]
        key = f"notification:{contact.name}:0"
        if self.store.has_event(incident.id, key):
            return False
        notification = compose(incident, self.site.name, contact, self.tz)
        self.notifier.send(notification)
        self.store.record_event(incident.id, "notification", notification.sent_ts, {
            "contact": contact.name, "channels": notification.channels,
            "title": notification.title, "body": notification.body, "sent_ts": notification.sent_ts,
        }, key=key)
        log.debug("notification_sent", incident=incident.id, site=self.site.id, contact=contact.name,
                 at=time.strftime("%H:%M:%S"))
        return True
