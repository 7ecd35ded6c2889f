"""RulesActor: turns detections into incidents, and hands incidents to the site's speaker and escalation.

Decisions use the frame's capture time (the pipeline clock), never the wall clock, so a replayed
clip behaves like the night it pretends to be.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import numpy as np
import ray
import structlog

from flux_secu.config import Config
from flux_secu.detect.detections import Detections
from flux_secu.detect.model import load_labels
from flux_secu.logs import configure_from_env
from flux_secu.rules.calendar import SiteCalendar
from flux_secu.rules.incident import Incident, IncidentKind, IncidentState, incident_id
from flux_secu.rules.presence import PresenceConfirmed, PresenceEnded, PresenceTracker
from flux_secu.rules.recheck import Rechecks
from flux_secu.store import open_store
from flux_secu.video.frame import FrameMeta

log = structlog.get_logger("flux_secu.rules")

# Capture-to-detection latency is kept for the last LATENCY_SAMPLES frames (~16 bytes each): at
# 100 analysed frames/s that is the last ~3 minutes, enough for an operator or a benchmark window.
LATENCY_SAMPLES = 20_000
# A live frame's capture time is on the wall clock, so the camera hands it over a moment after
# capturing it; a replayed frame's is on the pipeline clock (``--at``), which can be any date.
# Frames whose hand-over is not within this many seconds after capture are replays: not counted.
_LIVE_HANDOVER_MAX_S = 60.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RulesActor:
    def __init__(self, config: Config, speakers: dict[str, Any], escalations: dict[str, Any]) -> None:
        configure_from_env()
        self.config = config
        self.store = open_store(config.store)
        self.speakers, self.escalations = speakers, escalations
        labels = load_labels(config.model.labels)
        if config.rules.person_label not in labels:
            raise ValueError(f"rules.person_label {config.rules.person_label!r} is not a model label")
        self.labels = labels
        self.person_class = labels.index(config.rules.person_label)
        self.calendars = {
            site.id: SiteCalendar(site.opening_hours, frozenset(site.holidays), config.site_timezone(site))
            for site in config.sites
        }
        self.trackers: dict[str, PresenceTracker] = {}
        self.open_incidents: dict[str, str] = {}  # camera -> incident of its current presence
        self.frames = 0
        self.pending: list[ray.ObjectRef] = []
        self.rechecks = Rechecks()
        # (wall time the detections arrived, capture -> detections arrived in s), live frames only.
        self.latencies: deque[tuple[float, float]] = deque(maxlen=LATENCY_SAMPLES)

    def observe(self, meta: FrameMeta, detections: Detections) -> None:
        self.frames += 1
        now = time.time()
        if 0.0 <= meta.sent_wall_ts - meta.capture_ts <= _LIVE_HANDOVER_MAX_S:
            self.latencies.append((now, now - meta.capture_ts))
        rules = self.config.rules
        tracker = self.trackers.get(meta.camera)
        if tracker is None:
            tracker = PresenceTracker(rules.confirm_hits, rules.confirm_window, rules.clear_after_s)
            self.trackers[meta.camera] = tracker
        persons = detections.of_class(self.person_class, rules.min_score)
        for change in tracker.observe(meta.capture_ts, len(persons) > 0):
            if isinstance(change, PresenceConfirmed):
                self._confirmed(meta, persons, change)
            elif isinstance(change, PresenceEnded):
                self._ended(meta, change)
        for recheck in self.rechecks.due(meta.camera, meta.capture_ts):
            seen = tracker.last_seen
            still_there = (self.open_incidents.get(meta.camera) == recheck.incident.id and seen is not None
                           and meta.capture_ts - seen <= rules.recheck_window_s)
            self._after_recheck(recheck.incident, meta, still_there)

    def _confirmed(self, meta: FrameMeta, persons: Detections, change: PresenceConfirmed) -> None:
        at = datetime.fromtimestamp(meta.capture_ts, UTC)
        if self.calendars[meta.site].is_open(at):
            return  # a person during opening hours is a customer
        incident = Incident(
            id=incident_id(IncidentKind.INTRUSION, meta.camera, change.first_seen_ts),
            kind=IncidentKind.INTRUSION,
            site=meta.site,
            camera=meta.camera,
            label=self.config.rules.person_label,
            opened_at=meta.capture_ts,
            clip_time_s=round(meta.clip_time_s, 3),
            first_seen_ts=change.first_seen_ts,
            score=round(float(persons.confidence.max()), 3) if len(persons) else 0.0,
            detections=persons.to_list(self.labels),
        )
        self.open_incidents[meta.camera] = incident.id
        if not self.store.open_incident(incident):
            return  # replayed after a restart: already announced
        self.store.record_event(incident.id, "confirmed", time.time(), {
            "frame_capture_ts": meta.capture_ts, "frame_sent_wall_ts": meta.sent_wall_ts,
            "rules_wall_ts": time.time(),
        })
        log.debug("incident_opened", incident=incident.id, site=meta.site, camera=meta.camera,
                 clip_time_s=incident.clip_time_s)
        speaker = self.speakers.get(meta.site)
        if speaker is not None:
            self.pending.append(speaker.warn.remote(incident))
            self.rechecks.schedule(incident, meta.capture_ts + self.config.rules.recheck_after_s)
        else:  # nothing to deter with: straight to the on-call chain
            self._escalate(incident, "Site sans haut-parleur.")
        self.pending = [r for r in self.pending if not _done(r)]

    def _after_recheck(self, incident: Incident, meta: FrameMeta, still_there: bool) -> None:
        key = "recheck"
        if not self.store.record_event(incident.id, key, meta.capture_ts,
                                       {"still_there": still_there, "clip_time_s": meta.clip_time_s}):
            return
        if still_there:
            self._escalate(incident, "Toujours présent après l'avertissement sonore.")
        else:
            self.store.set_state(incident.id, IncidentState.DETERRED)
            self.store.record_event(incident.id, "deterred", meta.capture_ts, {})
            log.debug("incident_deterred", incident=incident.id)

    def _escalate(self, incident: Incident, reason: str) -> None:
        escalation = self.escalations.get(incident.site)
        if escalation is not None:
            self.pending.append(escalation.escalate.remote(incident, reason))

    def _ended(self, meta: FrameMeta, change: PresenceEnded) -> None:
        incident = self.open_incidents.pop(meta.camera, None)
        if incident is not None:
            self.store.record_event(incident, "presence_ended", meta.capture_ts,
                                    {"last_seen_ts": change.last_seen_ts})

    def flush(self) -> int:
        """Wait for the warnings and notifications already handed out; returns how many."""
        pending, self.pending = self.pending, []
        ray.get(pending)
        return len(pending)

    def stats(self, since: float | None = None) -> dict[str, Any]:
        """Counters, and the capture-to-detection latency of live frames that reached the rules at
        or after wall time ``since`` (default: every sample kept)."""
        values = [lat for ts, lat in self.latencies if since is None or ts >= since]
        return {"frames": self.frames, "cameras": len(self.trackers), "latency_ms": _summary_ms(values)}


def _summary_ms(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = (round(float(v) * 1000, 1) for v in np.percentile(values, [50, 95, 99]))
    return {"n": len(values), "p50": p50, "p95": p95, "p99": p99, "max": round(max(values) * 1000, 1)}


def _done(ref: ray.ObjectRef) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
