"""Notifications to escalation contacts.

This version records the notification it would send (first contact of the chain) in
``notifications.jsonl``; channels are kept redacted there since apprise URLs embed tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from flux_secu.config import ContactConfig
from flux_secu.redact import redact_channel
from flux_secu.rules.incident import Incident


@dataclass(frozen=True, slots=True)
class Notification:
    incident_id: str
    contact: str
    channels: list[str]
    title: str
    body: str
    sent_ts: float


def compose(incident: Incident, site_name: str, contact: ContactConfig, tz: ZoneInfo) -> Notification:
    local = datetime.fromtimestamp(incident.opened_at, tz)
    title = f"[flux-secu] Intrusion - {site_name}"
    body = (
        f"Personne détectée sur le site fermé {site_name} (caméra {incident.camera}) "
        f"le {local:%d/%m/%Y à %H:%M:%S}. Incident {incident.id}."
    )
    return Notification(
        incident_id=incident.id,
        contact=contact.name,
        channels=[redact_channel(c) for c in contact.channels],
        title=title,
        body=body,
        sent_ts=time.time(),
    )


class RecordingNotifier:
    """Appends each notification to a JSON-lines file instead of sending it."""

    def __init__(self, out_file: Path) -> None:
        self.out_file = out_file
        out_file.parent.mkdir(parents=True, exist_ok=True)

    def send(self, notification: Notification) -> None:
        with self.out_file.open("a", encoding="utf-8") as log:
            log.write(json.dumps(asdict(notification), ensure_ascii=False) + "\n")
