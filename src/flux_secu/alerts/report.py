"""Morning report: what happened on a site during the night, for its manager."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flux_secu.rules.incident import IncidentKind, IncidentState
from flux_secu.store.base import StoredIncident


@dataclass(frozen=True, slots=True)
class NightReport:
    site: str
    night_of: date
    counts: dict[str, int]
    lines: list[str]

    @property
    def title(self) -> str:
        return f"[flux-secu] Rapport de la nuit du {self.night_of:%d/%m/%Y} - {self.site}"

    @property
    def body(self) -> str:
        c = self.counts
        head = (f"Intrusions : {c['intrusions']} (dissuadées : {c['deterred']}, "
                f"escaladées : {c['escalated']}, prises en charge : {c['acknowledged']}). "
                f"Avertissements sonores : {c['warnings']}. "
                f"Alertes agent : {c['panic']}. Pannes caméra : {c['camera_faults']}.")
        if c.get("panic_refused"):
            head += f" Appuis de bouton d'alerte refusés : {c['panic_refused']} (voir le journal d'audit)."
        return "\n".join([head, *self.lines]) if self.lines else head + "\nRien à signaler."


def night_window(night_of: date, tz: ZoneInfo, ends: time) -> tuple[float, float]:
    """From noon of ``night_of`` to ``ends`` (local) the next morning, as epoch seconds."""
    start = datetime.combine(night_of, time(12, 0), tz)
    end = datetime.combine(night_of + timedelta(days=1), ends, tz)
    return start.timestamp(), end.timestamp()


def build_report(
    site: str, site_name: str, night_of: date, incidents: list[StoredIncident], events: dict[str, list[str]],
    tz: ZoneInfo, ends: time, refused: list[tuple[float, str, str]] | None = None,
) -> NightReport:
    """``events`` maps incident id -> the kinds of its events (warning, notification, acknowledged...);
    ``refused``: the panic presses the ingress refused, as (time, reason, device)."""
    start, end = night_window(night_of, tz, ends)
    refused_tonight = sorted(r for r in refused or [] if start <= r[0] < end)
    mine = [s for s in incidents if s.incident.site == site and start <= s.incident.opened_at < end]
    states = Counter(str(s.state) for s in mine if s.incident.kind == IncidentKind.INTRUSION)
    kinds = Counter(str(s.incident.kind) for s in mine)
    counts = {
        "intrusions": kinds[str(IncidentKind.INTRUSION)],
        "deterred": states[str(IncidentState.DETERRED)],
        "escalated": states[str(IncidentState.ESCALATED)],
        "acknowledged": states[str(IncidentState.ACKNOWLEDGED)] + states[str(IncidentState.CLOSED)],
        "warnings": sum(events.get(s.incident.id, []).count("warning") for s in mine),
        "panic": kinds[str(IncidentKind.PANIC)],
        "camera_faults": kinds[str(IncidentKind.CAMERA_FAULT)],
        "panic_refused": len(refused_tonight),
    }
    lines = [
        f"- {datetime.fromtimestamp(s.incident.opened_at, tz):%H:%M:%S} {s.incident.kind} "
        f"caméra {s.incident.camera} : {s.state}"
        for s in sorted(mine, key=lambda s: s.incident.opened_at)
    ] + [f"- {datetime.fromtimestamp(ts, tz):%H:%M:%S} bouton d'alerte {device or '?'} refusé ({reason})"
         for ts, reason, device in refused_tonight]
    return NightReport(site_name, night_of, counts, lines)
