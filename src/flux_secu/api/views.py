"""What the API shows, computed from the store and the config: pure functions, no HTTP, no Ray.

Evidence follows the evidence contract: files ``<evidence.dir>/<incident id>/{snapshot.jpg,clip.mp4}``,
each announced by an ``evidence`` event ``{"file", "path", "sha256"}``; a legal hold is a ``legal_hold``
event ``{"hold", "by"}`` (the last one counts).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flux_secu.config import Config, SiteConfig
from flux_secu.rules.calendar import Override, is_armed, site_calendar
from flux_secu.rules.incident import IncidentKind, IncidentState
from flux_secu.store.base import Store, StoredEvent, StoredIncident

EVIDENCE_FILES = ("snapshot.jpg", "clip.mp4")
MEDIA_TYPES = {"snapshot.jpg": "image/jpeg", "clip.mp4": "video/mp4"}
STALLED_AFTER_S = 10.0
"""A camera whose frame counter has not moved for this long is shown as stalled."""


def parse_override(data: dict[str, Any] | None) -> Override | None:
    if not data:
        return None
    return Override(bool(data["armed"]), float(data["until"]), str(data.get("by", "")))


def site_view(config: Config, site: SiteConfig, override: dict[str, Any] | None,
              now: float) -> dict[str, Any]:
    calendar = site_calendar(config, site)
    at = datetime.fromtimestamp(now, calendar.timezone)
    parsed = parse_override(override)
    active = parsed is not None and now < parsed.until
    hours = {day: [f"{r.start:%H:%M}-{r.end:%H:%M}" for r in site.opening_hours.for_weekday(i)]
             for i, day in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
    return {
        "id": site.id, "name": site.name, "timezone": str(calendar.timezone),
        "armed": is_armed(calendar, at, parsed), "open_by_calendar": calendar.is_open(at),
        "override": ({"armed": parsed.armed, "until": parsed.until, "by": parsed.by}
                     if active and parsed is not None else None),
        "opening_hours": hours, "holidays": [d.isoformat() for d in site.holidays],
        "closures": [{"start": c.start.isoformat(), "end": c.end.isoformat(), "reason": c.reason}
                     for c in site.closures],
        "cameras": [c.id for c in site.cameras],
    }


@dataclass(frozen=True, slots=True)
class Evidence:
    file: str
    path: Path
    sha256: str


def evidence_of(incident_id: str, events: list[StoredEvent],
                evidence_dir: Path | None = None) -> dict[str, Evidence]:
    """The incident's evidence files by name; an event whose path is not the contract's is ignored,
    so that a bad record can never make the API serve a file from elsewhere. With ``evidence_dir``,
    the path must resolve (links followed) to exactly ``<evidence_dir>/<incident id>/<file>``: a record
    naming ``/etc/x/<incident id>/snapshot.jpg``, or a link planted in the folder, is not served."""
    root = evidence_dir.resolve() if evidence_dir is not None else None
    out: dict[str, Evidence] = {}
    for event in events:
        if event.kind != "evidence":
            continue
        name, path = event.data.get("file"), event.data.get("path")
        if name not in EVIDENCE_FILES or not isinstance(path, str):
            continue
        p = Path(path)
        if p.name != name or p.parent.name != incident_id:
            continue
        if root is not None:
            try:
                resolved = p.resolve()
            except (OSError, RuntimeError):
                continue
            if resolved != root / incident_id / name:
                continue
            p = resolved
        out[name] = Evidence(name, p, str(event.data.get("sha256", "")))
    return out



def public_event_data(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """What of an event a viewer or an export may see. Notifications recorded before links were kept
    out of records carry the live link in their body: it is cut off there (and never served)."""
    if kind != "notification":
        return data
    body = data.get("body")
    if isinstance(body, str) and "/ack/" in body:
        kept = [line for line in body.split("\n") if "/ack/" not in line]
        data = {**data, "body": "\n".join(kept)}
    return data


def legal_hold(events: list[StoredEvent]) -> dict[str, Any] | None:
    holds = [e for e in events if e.kind == "legal_hold"]
    if not holds:
        return None
    last = holds[-1]
    return {"hold": bool(last.data.get("hold")), "by": last.data.get("by", ""), "ts": last.ts}


def incident_summary(stored: StoredIncident, events: list[StoredEvent]) -> dict[str, Any]:
    inc = stored.incident
    evidence = evidence_of(inc.id, events)
    ack = next((e for e in events if e.key == "acknowledged"), None)
    hold = legal_hold(events)
    return {
        "id": inc.id, "kind": str(inc.kind), "site": inc.site, "camera": inc.camera, "label": inc.label,
        "state": str(stored.state), "opened_at": inc.opened_at, "score": inc.score, "zone": inc.zone,
        "acknowledged_by": ack.data.get("by") if ack else None, "acknowledged_at": ack.ts if ack else None,
        "evidence": {name: f"/api/incidents/{inc.id}/evidence/{name}" for name in evidence},
        "legal_hold": bool(hold and hold["hold"]),
        "last_seq": max((e.seq for e in events), default=0),
    }


def incident_detail(stored: StoredIncident, events: list[StoredEvent]) -> dict[str, Any]:
    evidence = evidence_of(stored.incident.id, events)
    return {
        **incident_summary(stored, events),
        "incident": stored.incident.to_dict(),
        "timeline": [{"seq": e.seq, "kind": e.kind, "key": e.key, "ts": e.ts,
                      "data": public_event_data(e.kind, e.data)} for e in events],
        "notified": [{"contact": e.data.get("contact"), "ts": e.ts, "link_id": e.data.get("ack_token_id")}
                     for e in events if e.kind == "notification"],
        "evidence_files": [{"file": ev.file, "sha256": ev.sha256,
                            "url": f"/api/incidents/{stored.incident.id}/evidence/{ev.file}"}
                           for ev in evidence.values()],
        "legal_hold_detail": legal_hold(events),
    }


def matches(stored: StoredIncident, *, site: str | None, camera: str | None, kind: IncidentKind | None,
            state: IncidentState | None, since: float | None, until: float | None) -> bool:
    inc = stored.incident
    return ((site is None or inc.site == site) and (camera is None or inc.camera == camera)
            and (kind is None or inc.kind == kind) and (state is None or stored.state == state)
            and (since is None or inc.opened_at >= since) and (until is None or inc.opened_at < until))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CameraHealth:
    """Health at a glance from successive ``stats()``: ``ok`` while frames keep coming, ``stalled``
    when the frame counter has not moved for ``stalled_after_s``, ``unknown`` without live stats."""

    def __init__(self, stalled_after_s: float = STALLED_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stalled_after_s = stalled_after_s
        self.clock = clock
        self._last: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def status(self, camera: str, stats: dict[str, Any] | None) -> str:
        if stats is None:
            return "unknown"
        frames = int(stats.get("frames_read", 0))
        now = self.clock()
        with self._lock:
            seen = self._last.get(camera)
            if seen is None or seen[0] != frames:
                self._last[camera] = (frames, now)
            elif now - seen[1] >= self.stalled_after_s:
                return "stalled"
        return "ok" if frames > 0 else "starting"


class SnapshotIndex:
    """The latest evidence snapshot of each camera, kept by tailing the store's event log.

    A camera wall asks for every camera's image every few seconds; finding it by reading every incident
    would cost a full scan per image. The first call reads the log once, later ones only what is new.
    """

    def __init__(self, store: Store, evidence_dir: Path | None = None) -> None:
        self.store = store
        self.evidence_dir = evidence_dir
        self._after = 0
        self._camera_of: dict[str, str] = {}
        self._latest: dict[str, Path] = {}
        self._lock = threading.Lock()

    def latest(self, camera: str) -> tuple[str, Path] | None:
        with self._lock:
            for event in self.store.events(after_seq=self._after):
                self._after = event.seq
                if event.kind == "opened":
                    self._camera_of[event.incident_id] = str(event.data.get("camera", ""))
                elif event.kind == "evidence":
                    ev = evidence_of(event.incident_id, [event], self.evidence_dir).get("snapshot.jpg")
                    cam = self._camera_of.get(event.incident_id)
                    if ev is not None and cam:
                        self._latest[cam] = ev.path
            path = self._latest.get(camera)
        if path is None or not path.is_file():
            return None
        return path.parent.name, path
