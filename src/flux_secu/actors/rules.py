"""RulesActor: turns detections into incidents, and hands incidents to the site's speaker and escalation.

Decisions use the frame's capture time (the pipeline clock), never the wall clock, so a replayed
clip behaves like the night it pretends to be. Per frame: zones and masks decide what each detection
means (rules/policy.py), the tracker gives it an identity (rules/tracking.py), intrusion candidates
feed the camera's presence confirmation (rules/presence.py), and a confirmed presence opens one
incident, or joins the site's incident still going on when another camera saw the intruder first.

Time drives the lifecycle, not frames (``incidents/recheck.py``): rechecks fall due on the pipeline
clock, advanced by any frame of the deployment and, live, by a ticker thread on the wall clock, so a
camera cut or removed after the warning cannot keep its incident waiting. A fault of a camera of a
site whose intrusion is being verified escalates it at once (the intruder neutralised the camera).
Every state change goes through the store's ``transition`` (``incidents/lifecycle.py``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
import structlog

from flux_secu.actors.alerting import request_escalation
from flux_secu.alerts import outbox
from flux_secu.config import CameraConfig, Config, HealthConfig
from flux_secu.detect.detections import Detections
from flux_secu.detect.model import load_labels
from flux_secu.evidence.recorder import EvidenceRequest
from flux_secu.incidents.lifecycle import LIVE, VERIFYING, Transition
from flux_secu.incidents.recheck import CameraView, Recheck, Rechecks, tamper_reason, verdict
from flux_secu.logs import configure_from_env
from flux_secu.rules.calendar import Override, is_armed, site_calendar
from flux_secu.rules.incident import Incident, IncidentKind, IncidentState, incident_id
from flux_secu.rules.policy import CameraPolicy, Decision
from flux_secu.rules.presence import PresenceConfirmed, PresenceEnded, PresenceTracker
from flux_secu.rules.tracking import IouTracker, iou_matrix
from flux_secu.store import open_store
from flux_secu.video.faults import CameraFault, record_camera_fault
from flux_secu.video.frame import FrameMeta
from flux_secu.video.vigilance import Attention

log = structlog.get_logger("flux_secu.rules")

# Capture-to-detection latency is kept for the last LATENCY_SAMPLES frames (~140 bytes each): at
# 100 analysed frames/s that is the last ~3 minutes, enough for an operator or a benchmark window.
LATENCY_SAMPLES = 20_000
# A live frame's capture time is on the wall clock, so the camera hands it over a moment after
# capturing it; a replayed frame's is on the pipeline clock (``--at``), which can be any date.
# Frames whose hand-over is not within this many seconds after capture are replays: not counted.
_LIVE_HANDOVER_MAX_S = 60.0
OVERRIDE_REFRESH_S = 1.0
STATIONARY_AFTER_S = 20.0
"""A vehicle track that has not moved for this long is parked: remembered, never recorded again."""
ACTIVITY_MIN_HITS = 3
RESTORE_MARGIN_S = 60.0
"""After a restart, an intrusion opened longer ago than recheck_after_s + this is no longer resumed."""
TICK_S = 0.25
"""How often the live clock looks for rechecks due (a camera that sends nothing sends no frame to do it)."""
WATCHDOG_MARGIN_S = 1.0
"""A camera's watchdog notices a silent stream within this much after ``video_loss_after_s``."""


def override_key(site: str) -> str:
    return f"override:{site}"


@dataclass
class _Camera:
    """Everything the rules remember about one camera."""

    policy: CameraPolicy
    presence: PresenceTracker
    tracker: IouTracker
    recorded_tracks: set[int] = field(default_factory=set)
    parked: list[npt.NDArray[np.float32]] = field(default_factory=list)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RulesActor:
    def __init__(self, config: Config, speakers: dict[str, Any], escalations: dict[str, Any],
                 deployment_id: str = "") -> None:
        configure_from_env()
        self.config = config
        self.store = open_store(config.store)
        self.speakers, self.escalations = speakers, escalations
        self.labels = load_labels(config.model.labels)
        self.calendars = {site.id: site_calendar(config, site) for site in config.sites}
        self.cameras: dict[str, _Camera] = {}
        self.open_incidents: dict[str, str] = {}  # camera -> incident of its current presence
        # site -> (incident, last sighting ts, camera of that sighting)
        self.site_incident: dict[str, tuple[str, float, str]] = {}
        self.frames = 0
        self.pending: list[ray.ObjectRef] = []
        self.deployment_id = deployment_id
        self.camera_actors: dict[str, Any] = {}
        self.evidence_pending: list[tuple[str, str, ray.ObjectRef]] = []  # incident, camera, call
        self.rechecks = Rechecks()
        self._overrides: dict[str, Override | None] = {}
        self._overrides_read = 0.0
        # (wall time at the rules, capture -> rules, camera hand-over -> rules) in s, live frames only.
        self.latencies: deque[tuple[float, float, float]] = deque(maxlen=LATENCY_SAMPLES)
        self.restored: set[str] = set()
        self.incident_cameras: dict[str, set[str]] = {}
        """Every camera that saw each intrusion still being verified (its recheck weighs them all)."""
        self.camera_faults: dict[str, dict[str, float]] = {}
        """camera -> its active faults and when each began (video/faults.py)."""
        self.removed: set[str] = set()
        """Cameras removed from the deployment while it runs."""
        # The ticker thread and the actor's calls share this actor's state.
        self._lock = threading.RLock()
        self._restore()
        threading.Thread(target=self._ticker, name="rules-clock", daemon=True).start()

    def _restore(self) -> None:
        """After a restart: take back the intrusions still in progress from the store.

        Their recheck is scheduled again, and a presence confirmed on the same camera (the tracker's
        memory was lost with the process) joins the incident instead of announcing a new one.
        """
        window = self.config.rules.recheck_after_s + RESTORE_MARGIN_S
        in_progress = (IncidentState.OPEN, IncidentState.WARNED)
        now = time.time()
        for stored in self.store.incidents():
            inc = stored.incident
            if inc.kind != IncidentKind.INTRUSION or stored.state not in in_progress:
                continue
            events = self.store.events(inc.id)
            recheck = next((e for e in events if e.kind == "recheck"), None)
            if abs(now - inc.opened_at) > window:
                # Down for longer than the recheck: nobody knows whether the intruder left. Lose no
                # alert: the on-call chain decides.
                if self.store.record_event(inc.id, "recheck_missed", now, {"missed": True}):
                    self._escalate(inc, "Vérification impossible après un redémarrage.")
                continue
            self.incident_cameras[inc.id] = {inc.camera} | {
                str(e.data["camera"]) for e in events if e.kind == "seen_by"}
            if not any(e.kind == "presence_ended" for e in events):
                # Still in view when the process died: a presence confirmed again on that camera joins it.
                self.open_incidents[inc.camera] = inc.id
                self.site_incident[inc.site] = (inc.id, inc.opened_at, inc.camera)
                self.restored.add(inc.id)
            if recheck is None:
                self.rechecks.schedule(inc, inc.opened_at + self.config.rules.recheck_after_s, live=True)
            elif recheck.data.get("verdict") == "deterred":  # died while the views settled: settle again
                settle = self._settle_s(sorted(self.incident_cameras[inc.id]), live=True)
                self.rechecks.schedule(inc, now + settle, live=True, settling=True, checked_ts=recheck.ts)
            log.info("incident_restored", incident=inc.id, camera=inc.camera, state=str(stored.state))

    # --- per frame --------------------------------------------------------------------------------

    def observe(self, meta: FrameMeta, detections: Detections) -> Attention:
        """Apply the rules to one analysed frame. Returns the camera's attention (``video/vigilance.py``):
        ``follow`` while a confirmed presence is in view, ``watch`` while something that would be an
        intrusion is in view or a recheck is pending, ``rest`` while nothing it could see has any action
        (its site open), else ``none``. A parked vehicle (an event at most) is not a reason to watch: it
        would keep the camera awake all night."""
        with self._lock:
            return self._observe(meta, detections)

    def _observe(self, meta: FrameMeta, detections: Detections) -> Attention:
        self.frames += 1
        now = time.time()
        live = 0.0 <= meta.sent_wall_ts - meta.capture_ts <= _LIVE_HANDOVER_MAX_S
        if live:
            self.latencies.append((now, now - meta.capture_ts, now - meta.sent_wall_ts))
        cam = self._camera(meta)
        rules = self.config.rules
        armed = self.armed(meta.site, meta.capture_ts)
        confident = detections.select(detections.confidence >= rules.min_score)
        decisions = cam.policy.evaluate(confident, meta.geometry.width, meta.geometry.height, armed)
        rows = np.array([d.index for d in decisions], np.intp)
        groups = np.array([cam.policy.group_names.index(d.group) for d in decisions], np.int32)
        track_ids = cam.tracker.update(meta.capture_ts, confident.xyxy[rows].reshape(-1, 4), groups)
        intruders: list[tuple[Decision, int]] = []
        for decision, track_id in zip(decisions, track_ids, strict=True):
            track = cam.tracker.get(int(track_id))
            if decision.action == "intrusion":
                dwell = meta.capture_ts - track.first_seen if track else 0.0
                if dwell >= decision.min_dwell_s:
                    intruders.append((decision, int(track_id)))
            elif decision.action == "event":
                self._activity(meta, cam, confident, decision, int(track_id))
        suspect = any(d.action == "intrusion" for d in decisions)
        # Dwell is what a presence needs to start. Once it is confirmed, any intrusion candidate keeps
        # it going, whatever its track: followed at follow_fps, a walking person's box may no longer
        # overlap the last one, and the new track (dwell 0) must not end the presence (a second incident).
        seen = bool(intruders) or (suspect and cam.presence.confirmed)
        current = self.open_incidents.get(meta.camera)
        if seen and current is not None and self.site_incident.get(meta.site, ("",))[0] == current:
            self.site_incident[meta.site] = (current, meta.capture_ts, meta.camera)
        for change in cam.presence.observe(meta.capture_ts, seen):
            if isinstance(change, PresenceConfirmed):
                self._confirmed(meta, confident, intruders, change)
            elif isinstance(change, PresenceEnded):
                self._ended(meta, change)
        # Any frame advances the clock of its kind (live frames the wall clock's, a replay's the clip's).
        self._tick(meta.capture_ts, live)
        # Followed while the intruder is in view; the moment they are not (gone, hidden, or someone
        # else coming in) every frame counts again, so a new presence is confirmed as fast as a first.
        if cam.presence.confirmed and seen:
            return "follow"
        # Watched while its site's intrusion is verified: its health is then checked more closely too
        # (a covered or turned camera escalates the intrusion).
        if suspect or self.rechecks.of_site(meta.site):
            return "watch"
        # Nothing this camera sees matters now (its site open, by default: neither intrusion nor event): a
        # look a second notices closing time or an override, instead of every frame with a visitor in it.
        return "none" if cam.policy.acts[armed] else "rest"

    def _camera(self, meta: FrameMeta) -> _Camera:
        cam = self.cameras.get(meta.camera)
        if cam is None:
            try:
                _, camera_cfg = self.config.camera(meta.camera)
            except KeyError:
                # A camera added at runtime that this config does not list: default zones and policy.
                log.warning("camera_not_in_config", camera=meta.camera, site=meta.site)
                camera_cfg = CameraConfig(id=meta.camera, source="rtsp://unknown")
            rules = self.config.rules
            cam = _Camera(
                CameraPolicy(camera_cfg, self.config.model.class_groups, self.labels),
                PresenceTracker(rules.confirm_hits, rules.confirm_window, rules.clear_after_s),
                IouTracker(),
            )
            self.cameras[meta.camera] = cam
        return cam

    def armed(self, site: str, ts: float) -> bool:
        """Whether intrusion rules apply: closed by the calendar, unless an operator's override says not."""
        if time.time() - self._overrides_read >= OVERRIDE_REFRESH_S:
            self._overrides = {s: _override(self.store.get_setting(override_key(s))) for s in self.calendars}
            self._overrides_read = time.time()
        return is_armed(self.calendars[site], datetime.fromtimestamp(ts, UTC), self._overrides.get(site))

    # --- intrusions -------------------------------------------------------------------------------

    def _confirmed(self, meta: FrameMeta, dets: Detections, intruders: list[tuple[Decision, int]],
                   change: PresenceConfirmed) -> None:
        if not intruders:
            return
        restored = self.open_incidents.get(meta.camera)
        if restored in self.restored:
            # The presence this camera was tracking before a restart: the same incident, not a new one.
            self.restored.discard(restored)
            self.site_incident[meta.site] = (restored, meta.capture_ts, meta.camera)
            self.store.record_event(restored, "resumed", meta.capture_ts, {"camera": meta.camera},
                                    key=f"resumed:{round(change.first_seen_ts * 1000)}")
            return
        merged = self.site_incident.get(meta.site)
        if (merged is not None and merged[2] != meta.camera
                and meta.capture_ts - merged[1] <= self.config.rules.merge_window_s
                and self._still_going_on(merged[0])):
            # The same intruder walking from one camera's view to the next: one incident. (A new
            # presence on the same camera, after the last one ended, is a new incident; so is one
            # after the site's last incident was deterred or closed: it gets its own warning.)
            self.open_incidents[meta.camera] = merged[0]
            self.incident_cameras.setdefault(merged[0], set()).add(meta.camera)
            self.site_incident[meta.site] = (merged[0], meta.capture_ts, meta.camera)
            self.store.record_event(merged[0], "seen_by", meta.capture_ts,
                                    {"camera": meta.camera, "clip_time_s": meta.clip_time_s},
                                    key=f"seen_by:{meta.camera}:{round(change.first_seen_ts * 1000)}")
            return
        best = max(intruders, key=lambda it: float(dets.confidence[it[0].index]))
        rows = np.array([d.index for d, _ in intruders], np.intp)
        incident = Incident(
            id=incident_id(IncidentKind.INTRUSION, meta.camera, change.first_seen_ts),
            kind=IncidentKind.INTRUSION,
            site=meta.site,
            camera=meta.camera,
            label=best[0].group,
            opened_at=meta.capture_ts,
            clip_time_s=round(meta.clip_time_s, 3),
            first_seen_ts=change.first_seen_ts,
            score=round(float(dets.confidence[best[0].index]), 3),
            detections=dets.select(rows).to_list(self.labels),
            zone=best[0].zone,
        )
        self.open_incidents[meta.camera] = incident.id
        self.site_incident[meta.site] = (incident.id, meta.capture_ts, meta.camera)
        self.incident_cameras[incident.id] = {meta.camera}
        if not self.store.open_incident(incident):
            return  # replayed after a restart: already announced
        self.store.record_event(incident.id, "confirmed", time.time(), {
            "frame_capture_ts": meta.capture_ts, "frame_sent_wall_ts": meta.sent_wall_ts,
            "rules_wall_ts": time.time(), "zone": best[0].zone, "tracks": [t for _, t in intruders],
        })
        log.debug("incident_opened", incident=incident.id, site=meta.site, camera=meta.camera,
                  clip_time_s=incident.clip_time_s)
        speaker = self.speakers.get(meta.site)
        if speaker is not None:
            # The intent first: a call lost with the site's alerts process is swept from the store.
            self.store.add_intent(outbox.warn_key(incident.id), incident.site, outbox.WARN,
                                  {"incident": incident.to_dict()}, time.time())
            self.pending.append(speaker.warn.remote(incident))
            live = 0.0 <= meta.sent_wall_ts - meta.capture_ts <= _LIVE_HANDOVER_MAX_S
            self.rechecks.schedule(incident, meta.capture_ts + self.config.rules.recheck_after_s, live=live)
        else:  # nothing to deter with: straight to the on-call chain
            self._escalate(incident, "Site sans haut-parleur.")
        # After the warning is on its way: finding the camera's actor can take a round trip to Ray.
        self._request_evidence(incident, meta)
        self.pending = [r for r in self.pending if not _done(r)]

    def _still_going_on(self, incident_id: str) -> bool:
        stored = self.store.get_incident(incident_id)
        return stored is not None and stored.state in LIVE

    # --- the clock: rechecks ----------------------------------------------------------------------

    def tick(self, ts: float, live: bool = True) -> int:
        """Advance the pipeline clock to ``ts`` (the ticker does it live); returns the rechecks done."""
        with self._lock:
            return self._tick(ts, live)

    def _ticker(self) -> None:
        while True:
            time.sleep(TICK_S)
            try:
                self.tick(time.time(), live=True)
            except Exception as exc:  # the clock must survive a store outage or a bug in one recheck
                log.error("rules_tick_failed", error=repr(exc))

    def _tick(self, ts: float, live: bool) -> int:
        due = self.rechecks.due(ts, live=live)
        for recheck in due:
            self._after_recheck(recheck, ts)
        return len(due)

    def _view(self, camera: str, incident_id: str, before_ts: float) -> CameraView:
        cam = self.cameras.get(camera)  # None: removed, or changed and not seen since
        # Only the presence that belongs to this incident counts: someone new on the same camera after
        # the intruder left is a new incident, with its own warning and recheck.
        mine = cam is not None and self.open_incidents.get(camera) == incident_id
        faults = frozenset(f for f, since in self.camera_faults.get(camera, {}).items() if since <= before_ts)
        return CameraView(camera, cam.presence.last_seen if mine and cam is not None else None, faults,
                          present=camera not in self.removed)

    def _after_recheck(self, recheck: Recheck, ts: float) -> None:
        incident = recheck.incident
        cameras = sorted(self.incident_cameras.get(incident.id, set()) | {incident.camera})
        views = [self._view(c, incident.id, ts) for c in cameras]
        finding = verdict(views, ts, self.config.rules.recheck_window_s)
        if not recheck.settling:
            data = {"still_there": finding.verdict == "still_there", "verdict": finding.verdict,
                    "cameras": cameras, "clip_time_s": self._clip_time(incident, ts)}
            if finding.detail:
                data["detail"] = finding.detail
            if not self.store.record_event(incident.id, "recheck", ts, data):
                return  # done before a restart
            if finding.verdict == "deterred":
                # Nobody seen: deterred once the views have stayed healthy long enough for a camera
                # covered or cut just before now to have raised its fault.
                settle_s = self._settle_s(cameras, recheck.live)
                self.rechecks.schedule(incident, ts + settle_s, live=recheck.live, settling=True,
                                       checked_ts=ts)
                return
        if finding.verdict == "still_there":
            self._escalate(incident, "Toujours présent après l'avertissement sonore.")
        elif finding.verdict == "unverifiable":
            self._escalate(incident, f"Vérification impossible : {finding.detail}.")
        else:
            outcome = self.store.transition(incident.id, Transition.DETERRED, ts,
                                            {"cameras": cameras, "checked_ts": recheck.checked_ts})
            if outcome.applied:
                log.debug("incident_deterred", incident=incident.id)
        self.incident_cameras.pop(incident.id, None)

    def _settle_s(self, cameras: list[str], live: bool) -> float:
        """How long a view must stay healthy after a recheck that saw nobody: time for a camera covered
        just before it to raise its fault and, live, for a cut one's watchdog to notice the silence
        (a replayed file has no watchdog)."""
        settle = 0.0
        for camera in cameras:
            try:
                _, cfg = self.config.camera(camera)
                health, loss_s = cfg.health, cfg.video_loss_after_s
            except KeyError:
                health, loss_s = HealthConfig(), CameraConfig(id="x", source="x").video_loss_after_s
            if health.enabled:
                settle = max(settle, health.tamper_after_s + health.interval_s)
            if live:
                settle = max(settle, loss_s + WATCHDOG_MARGIN_S)
        return settle

    @staticmethod
    def _clip_time(incident: Incident, ts: float) -> float | None:
        if incident.clip_time_s is None:
            return None
        return round(incident.clip_time_s + ts - incident.opened_at, 3)

    def _tampered(self, fault: CameraFault) -> None:
        """A camera of a site whose intrusion is being verified went dark, covered, frozen, turned or
        silent: the intruder may have neutralised it. Escalate now, with the reason."""
        for recheck in self.rechecks.of_site(fault.site):
            incident = recheck.incident
            key = f"tampered:{fault.camera}:{fault.fault}:{round(fault.since * 1000)}"
            data = {"camera": fault.camera, "fault": fault.fault, "since": fault.since, **fault.details}
            if not self.store.record_event(incident.id, "tampered", fault.ts, data, key=key):
                continue
            stored = self.store.get_incident(incident.id)
            if stored is None or stored.state not in VERIFYING:
                continue
            self.rechecks.cancel(incident.id)
            self.incident_cameras.pop(incident.id, None)
            log.warning("intrusion_tampered", incident=incident.id, camera=fault.camera, fault=fault.fault)
            self._escalate(incident, tamper_reason(fault.camera, fault.fault))

    def _escalate(self, incident: Incident, reason: str) -> None:
        escalation = self.escalations.get(incident.site)
        if escalation is not None:
            self.pending.append(request_escalation(self.store, escalation, incident, reason))

    def _ended(self, meta: FrameMeta, change: PresenceEnded) -> None:
        incident = self.open_incidents.pop(meta.camera, None)
        if incident is not None:
            self.store.record_event(incident, "presence_ended", meta.capture_ts,
                                    {"camera": meta.camera, "last_seen_ts": change.last_seen_ts},
                                    key=f"presence_ended:{meta.camera}")

    def _request_evidence(self, incident: Incident, meta: FrameMeta) -> None:
        """Ask the camera (which alone has the frames) for the snapshot and clip of a new incident."""
        if not self.config.evidence.enabled or not self.deployment_id:
            return
        camera = self.camera_actors.get(meta.camera)
        if camera is None:
            from flux_secu.actors.camera_host import find_camera

            camera = find_camera(self.deployment_id, meta.camera)
            if camera is None:
                log.warning("evidence_camera_unknown", incident=incident.id, camera=meta.camera)
                return
            self.camera_actors[meta.camera] = camera
        request = EvidenceRequest(incident.id, meta.capture_ts, incident.detections,
                                  (meta.geometry.width, meta.geometry.height))
        self.evidence_pending.append((incident.id, meta.camera, camera.record_evidence.remote(request)))
        still = []
        for pending in self.evidence_pending:
            if _done(pending[2]):
                self._evidence_result(*pending)
            else:
                still.append(pending)
        self.evidence_pending = still

    def _evidence_result(self, incident: str, camera: str, ref: ray.ObjectRef) -> None:
        try:
            ray.get(ref)
        except Exception as exc:  # a camera that died holding its frames: the alert is unaffected
            log.error("evidence_failed", incident=incident, camera=camera, error=type(exc).__name__)
            # Its actor may have been replaced (removed and added again): look it up afresh next time.
            self.camera_actors.pop(camera, None)

    # --- activity (vehicles at night...) ----------------------------------------------------------

    def _activity(self, meta: FrameMeta, cam: _Camera, dets: Detections, decision: Decision,
                  track_id: int) -> None:
        track = cam.tracker.get(track_id)
        if track is None or track_id in cam.recorded_tracks:
            parked = track is not None and track.stationary(STATIONARY_AFTER_S)
            if parked and track is not None and not _known(cam.parked, track.box):
                cam.parked.append(track.box.copy())  # a parked car: never recorded again
            return
        if track.hits < ACTIVITY_MIN_HITS:
            return
        cam.recorded_tracks.add(track_id)
        if _known(cam.parked, track.box):
            return  # the same parked vehicle, found again after an occlusion
        activity = Incident(
            id=f"activity-{meta.camera}-{round(track.first_seen * 1000)}-{track_id}",
            kind=IncidentKind.ACTIVITY, site=meta.site, camera=meta.camera, label=decision.group,
            opened_at=meta.capture_ts, clip_time_s=round(meta.clip_time_s, 3), first_seen_ts=track.first_seen,
            score=round(float(dets.confidence[decision.index]), 3),
            detections=dets.select(np.array([decision.index])).to_list(self.labels),
        )
        if self.store.open_incident(activity):
            self.store.transition(activity.id, Transition.CLOSED, meta.capture_ts, {"zone": decision.zone},
                                  kind="activity")

    # --- camera faults ----------------------------------------------------------------------------

    def camera_fault(self, fault: CameraFault) -> bool:
        """A camera raised or cleared a fault (video loss, frozen, covered...): a ``camera_fault``
        incident, never an intrusion. False when already recorded (a retried call). During the
        verification of an intrusion of its site, a raised fault also escalates that intrusion."""
        with self._lock:
            faults = self.camera_faults.setdefault(fault.camera, {})
            if fault.active:
                faults[fault.fault] = fault.since
            else:
                faults.pop(fault.fault, None)
            recorded = record_camera_fault(self.store, fault)
            if recorded:
                log.info("camera_fault", site=fault.site, camera=fault.camera, fault=fault.fault,
                         change=fault.event, since=fault.since)
            if fault.active:
                self._tampered(fault)
            return recorded

    # --- housekeeping -----------------------------------------------------------------------------

    def use_cameras(self, config: Config, changed: list[str]) -> None:
        """Supervisor hook: the cameras of a running deployment changed (added, removed, new settings).

        Only cameras differ from the config in use (the supervisor refuses any other change), so the
        calendars stay; a changed camera's zones and presence start afresh with its next frame.
        """
        with self._lock:
            known = {c.id for site in config.sites for c in site.cameras}
            for camera in changed:
                self.cameras.pop(camera, None)
                self.camera_actors.pop(camera, None)  # a restarted camera may be on another host
                if camera in known:
                    self.removed.discard(camera)
                elif self._known(camera):
                    self.removed.add(camera)  # its intrusion's recheck can no longer see through it
            self.config = config

    def _known(self, camera: str) -> bool:
        try:
            self.config.camera(camera)
        except KeyError:
            return False
        return True

    def flush(self) -> int:
        """Wait for the warnings and notifications already handed out; returns how many."""
        with self._lock:
            pending, self.pending = self.pending, []
            evidence, self.evidence_pending = self.evidence_pending, []
        for incident, camera, ref in evidence:  # first: they do not raise, and cameras stop after this
            self._evidence_result(incident, camera, ref)
        ray.get(pending)
        return len(pending) + len(evidence)

    def stats(self, since: float | None = None) -> dict[str, Any]:
        """Counters, and the latency of live frames that reached the rules at or after wall time
        ``since`` (default: every sample kept): ``latency_ms`` from capture, ``handover_latency_ms``
        from the camera's hand-over (pool queue + detector + forwarding, without the camera's share)."""
        kept = [(total, after) for ts, total, after in self.latencies if since is None or ts >= since]
        return {"frames": self.frames, "cameras": len(self.cameras),
                "latency_ms": _summary_ms([total for total, _ in kept]),
                "handover_latency_ms": _summary_ms([after for _, after in kept])}


def _known(parked: list[npt.NDArray[np.float32]], box: npt.NDArray[np.float32]) -> bool:
    return bool(parked) and float(iou_matrix(np.array(parked), box[None]).max()) >= 0.7


def _override(data: dict[str, Any] | None) -> Override | None:
    if data is None:
        return None
    return Override(bool(data["armed"]), float(data["until"]), str(data.get("by", "")))


def _summary_ms(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = (round(float(v) * 1000, 1) for v in np.percentile(values, [50, 95, 99]))
    return {"n": len(values), "p50": p50, "p95": p95, "p99": p99, "max": round(max(values) * 1000, 1)}


def _done(ref: ray.ObjectRef) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
