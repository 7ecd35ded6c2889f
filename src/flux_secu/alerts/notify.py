"""Notifications: compose the message, then send it through apprise (or only record it, in dry run).

Every channel is an apprise URL (SMS gateways, e-mail, Telegram, ntfy, webhooks...). URLs embed
tokens, so they are never logged: records keep ``scheme://***``.

The acknowledgement link goes to the contact and nowhere else: the message sent carries it, the
record (stored on the incident's timeline, shown to every viewer, exported) keeps only who was
notified and the link's id (:func:`flux_secu.alerts.ack.token_id`), so that nobody who reads the
timeline can acknowledge in the contact's name.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from flux_secu.alerts.ack import token_id
from flux_secu.redact import redact_channel
from flux_secu.rules.incident import Incident, IncidentKind


def reveal(value: Any) -> str:
    """The plain text of a ``SecretStr`` (or of a plain string), at the last moment before use."""
    return str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)


@dataclass(frozen=True, slots=True)
class Notification:
    incident_id: str
    contact: str
    channels: list[Any]
    """apprise URLs, as ``SecretStr`` (the config's) or plain strings."""
    title: str
    body: str
    sent_ts: float = field(default_factory=time.time)
    ack_link: str | None = field(default=None, repr=False)
    """Sent to the contact only; never in :meth:`record`."""

    @property
    def message(self) -> str:
        """The text sent: the body, then the acknowledgement link."""
        return f"{self.body}\nPrendre en charge : {self.ack_link}" if self.ack_link else self.body

    def record(self) -> dict[str, object]:
        """What may be stored and logged: channels redacted, the link replaced by its id."""
        data = asdict(self)
        data["channels"] = [redact_channel(reveal(c)) for c in self.channels]
        link = data.pop("ack_link")
        data["ack_token_id"] = token_id(str(link).rsplit("/", 1)[-1]) if link else None
        return data


class NotificationError(Exception):
    pass


class Notifier(Protocol):
    def send(self, notification: Notification) -> None: ...


def compose(
    incident: Incident, site_name: str, contact: str, channels: list[str], tz: ZoneInfo,
    *, ack_link: str | None = None, evidence_link: str | None = None, reason: str = "",
) -> Notification:
    local = datetime.fromtimestamp(incident.opened_at, tz)
    when = f"{local:%d/%m/%Y à %H:%M:%S}"
    if incident.kind == IncidentKind.PANIC:
        title = f"[flux-secu] ALERTE AGENT - {site_name}"
        body = (f"Bouton d'alerte déclenché sur le site {site_name} le {when} ({incident.label})."
                f"{' ' + reason if reason else ''}")
    else:
        title = f"[flux-secu] Intrusion - {site_name}"
        body = (f"Personne détectée sur le site fermé {site_name} (caméra {incident.camera}) le {when}."
                f"{' ' + reason if reason else ''}")
    body += f" Incident {incident.id}."
    if evidence_link:
        body += f"\nPreuves : {evidence_link}"
    return Notification(incident.id, contact, list(channels), title, body, ack_link=ack_link)


class AppriseNotifier:
    """Sends through apprise; raises NotificationError when no channel accepted the message."""

    def send(self, notification: Notification) -> None:
        import apprise

        client = apprise.Apprise()
        for channel in notification.channels:
            url = reveal(channel)
            if not client.add(url):
                raise NotificationError(f"unusable channel {redact_channel(url)}")
        if not client.notify(title=notification.title, body=notification.message):
            raise NotificationError(f"no channel of {notification.contact} accepted the message")


class RecordingNotifier:
    """Dry run: appends each notification (redacted, without its link) to a JSON-lines file instead
    of sending it."""

    def __init__(self, out_file: Path) -> None:
        self.out_file = out_file
        out_file.parent.mkdir(parents=True, exist_ok=True)

    def send(self, notification: Notification) -> None:
        with self.out_file.open("a", encoding="utf-8") as log:
            log.write(json.dumps(notification.record(), ensure_ascii=False) + "\n")
