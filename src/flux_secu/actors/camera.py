"""Camera: one camera's reader. Decode, sample to detect_fps, motion-gate, letterbox, hand over.

Cameras run as threads of a few ``CameraHost`` processes (``actors/camera_host.py``), not one process each.

At most ``max_in_flight`` frames are in the pool at once. Live, a frame that finds no free slot
waits in a single pending slot where the next sampled frame replaces it (newest wins, the older one
is counted as dropped). In replay (``realtime=False``) the camera waits for a slot instead, so an
evaluation sees every sampled frame.

Faults (``video/link.py``, ``video/health.py``) go to ``faults`` (the rules actor, which records them as
``camera_fault`` incidents): ``video_loss`` when no frame arrived for ``video_loss_after_s`` (a
watchdog thread, since a dead stream can block a read), ``video_restored`` at the next frame,
``analysis_stalled`` when the pool answers none of its frames for as long (``video/analysis.py``), and
the health checks' frozen, black, blank, covered and moved. A failed open or read is logged (URL
redacted) and retried after an exponential back-off with jitter.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
import structlog

from flux_secu.config import CameraConfig, StoreConfig
from flux_secu.detect.letterbox import LetterboxSpec, letterbox
from flux_secu.evidence.privacy import PrivacyMask
from flux_secu.evidence.recorder import EvidenceFile, EvidenceRecorder, EvidenceRequest, EvidenceSettings
from flux_secu.redact import redact_url
from flux_secu.video.analysis import AnalysisWatch, StallEvent
from flux_secu.video.faults import CameraFault
from flux_secu.video.frame import CameraFrame, FrameMeta
from flux_secu.video.health import FaultChange, HealthMonitor
from flux_secu.video.link import Backoff, LinkEvent, LinkMonitor
from flux_secu.video.motion import MotionGate
from flux_secu.video.sampling import FrameSampler
from flux_secu.video.slot import NewestWins
from flux_secu.video.source import Grabbed, SourceError, VideoSource
from flux_secu.video.vigilance import Attention, Vigilance

log = structlog.get_logger("flux_secu.camera")

MAX_IN_FLIGHT = 2
STALE_AFTER_S = 1.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 30.0
WATCHDOG_PERIOD_S = 0.5
OPEN_TIMEOUT_S = 10.0
# A live camera decodes on one thread: the box decodes tens of cameras at once, which is where the
# parallelism is (see VideoSource). A replay decodes with FFmpeg's default threads.
LIVE_DECODE_THREADS = 1
# Live camera processes run at a lower CPU priority than the shared stages (inference, rules, alerts).
# When the box is short of CPU, a camera that decodes a little late delays its own frames, but a
# detector that waits for the CPU delays every camera's: measured on 2 cores with 15 cameras,
# p95 capture-to-detection fell from ~850 ms (with drops) to ~400 ms (none). Raising one's own nice
# value needs no privilege. The camera's CPU share is unchanged whenever the box is not saturated.
CAMERA_NICE = 5
QUIET_BURST_S = 0.25
"""A quiet camera reads this long's packets at once, then naps as long (``_nap_if_quiet``)."""


@dataclass
class CameraCounters:
    frames_read: int = 0
    """Video packets read (one per frame of the source, decoded or not)."""
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_gated: int = 0
    frames_skipped_following: int = 0
    """Frames with motion left out while the rules follow a confirmed presence (``follow_fps``)."""
    frames_skipped_resting: int = 0
    """Frames with motion left out while nothing in view has any action (a site open: ``follow_fps``)."""
    frames_sent: int = 0
    frames_done: int = 0
    frames_lost: int = 0
    reconnects: int = 0
    loops: int = 0
    faults_raised: int = 0
    quiet_periods: int = 0
    """How many times the camera went quiet (key frames only, ``video/vigilance.py``)."""


class Camera:
    """One camera's reader; it runs in a ``CameraHost`` process (``run()`` on one of its threads)."""

    def __init__(
        self,
        site: str,
        camera: CameraConfig,
        spec: LetterboxSpec,
        pool: Any,
        *,
        realtime: bool = True,
        clock_start: datetime | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        evidence: EvidenceSettings | None = None,
        store: StoreConfig | None = None,
        faults: Any = None,
    ) -> None:
        self.instance = uuid.uuid4().hex[:12]
        """This reader's identity: a camera restarted (crash, reload) is a new instance."""
        self.started = False  # set by its host when run() begins: a reader runs once
        self.watched = False  # a live camera's link is watched while it runs (``watch_link``)
        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self.site, self.config, self.spec, self.pool = site, camera, spec, pool
        self.realtime = realtime
        # Replay: capture time = --at + clip position, so a clip played at "23:00" is a real night.
        self.clock_start = clock_start.timestamp() if clock_start is not None else None
        self.max_in_flight = max_in_flight
        self.counters = CameraCounters()
        self._stop = threading.Event()
        self._in_flight: list[ray.ObjectRef] = []
        self._sent_ts: dict[ray.ObjectRef, float] = {}  # capture time of each frame in flight
        motion = camera.motion
        self._vigilance = Vigilance(motion.quiet_after_s if motion.enabled else 0.0, motion.quiet_max_gop_s)
        self._mode = "watching"
        self._burst, self._waited = 0, False  # packets read since the last nap; the last one came late
        self._catch_up_sampler = FrameSampler(camera.detect_fps)
        # The rules' last word (on the latest frame they saw) and the frames it lets through.
        self._attention: Attention = "none"
        self._attention_ts = float("-inf")
        self._follow = FrameSampler(min(camera.follow_fps, camera.detect_fps))
        self._slot: NewestWins[tuple[FrameMeta, npt.NDArray[np.uint8]]] = NewestWins(max_in_flight)
        self._seq = 0
        self.log = log.bind(site=site, camera=camera.id)
        self._evidence = _Evidence(evidence, store, camera, self.log) if evidence is not None else None
        self.faults = faults
        """Where camera faults go (the rules actor's ``camera_fault``); None: logged only."""
        self._fault_refs: list[ray.ObjectRef] = []
        self._fault_lock = threading.Lock()  # the read loop and the watchdog both raise faults
        self._link = LinkMonitor(camera.video_loss_after_s, time.time())
        # Video that arrives but is never analysed (every inference actor hung): as long as video loss.
        self._analysis = AnalysisWatch(camera.video_loss_after_s)
        # Started at its first check: a replay's frames are timed on the pipeline clock, not the wall's.
        self._health = HealthMonitor(camera.health)
        self.last_error = ""

    def stats(self) -> dict[str, Any]:
        faults = [*self._health.active, *(["analysis_stalled"] if self._analysis.stalled else [])]
        return {"camera": self.config.id, "site": self.site, "instance": self.instance,
                **self.counters.__dict__,
                "drops": self._slot.drops, "in_flight": len(self._in_flight),
                "link": "lost" if self._link.lost else "up",
                "faults": sorted(faults),
                "vigilance": self._mode,
                "gop_s": None if (gop := self._vigilance.gop_s) is None else round(gop, 3),
                "last_error": self.last_error}

    def stop(self) -> None:
        self._stop.set()

    def latest_jpeg(self) -> bytes | None:
        """The latest sampled frame, privacy-masked and downscaled (the live view of the camera wall)."""
        return self._evidence.recorder.latest_jpeg() if self._evidence is not None else None

    def record_evidence(self, request: EvidenceRequest) -> list[str]:
        """Write an incident's snapshot now and its clip once the frames after it are in (the rules
        call this when they open an incident); returns the files written by this call."""
        if self._evidence is None:
            return []
        return self._evidence.request(request)

    def run(self) -> dict[str, Any]:
        """Read the source until stopped (live) or until the end of the file (replay)."""
        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
        sampler = FrameSampler(self.config.detect_fps)
        gate = MotionGate(self.config.motion)
        # A replay reads a file as fast as it can: no silence to watch. Live, the host's watchdog
        # thread calls watch_link() (one thread for all its cameras: each of its own cost ~0.2 % of a core).
        self.watched = self.realtime
        try:
            self._run(backoff, sampler, gate)
        finally:
            # Whatever ended the loop (stop, end of file, an unexpected error): nothing left watching,
            # and the clips being gathered are written.
            self._stop.set()
            self.watched = False
            if self._evidence is not None:
                self._evidence.source_ended()
        self._drain()
        if self._fault_refs:  # the last faults reach the store before the camera reports it stopped
            ray.wait(self._fault_refs, num_returns=len(self._fault_refs), timeout=5.0)
        return self.stats()

    def _run(self, backoff: Backoff, sampler: FrameSampler, gate: MotionGate) -> None:
        while not self._stop.is_set():
            try:
                source = self._open()
            except SourceError as exc:
                if not self.realtime:  # a replay's file: trying again reads the same bytes
                    raise
                self._failed("camera_open_failed", exc, backoff)
                continue
            self.log.info("camera_started", source=redact_url(self.config.source), fps=source.fps,
                          realtime=self.realtime)
            read_before = self.counters.frames_read
            try:
                finished = self._read(source, sampler, gate)
            except SourceError as exc:
                if not self.realtime:
                    raise
                finished = False
                if self.counters.frames_read > read_before:
                    backoff.reset()  # it worked for a while: the next attempt comes soon
                self._failed("camera_read_failed", exc, backoff)
            finally:
                source.close()
            if finished:
                break

    def _open(self) -> VideoSource:
        return VideoSource(self.config.url(), loop=self.config.loop and self.realtime, realtime=self.realtime,
                           decode_threads=LIVE_DECODE_THREADS if self.realtime else None,
                           transport=self.config.transport, open_timeout_s=OPEN_TIMEOUT_S,
                           read_timeout_s=self.config.video_loss_after_s)

    def _failed(self, event: str, exc: SourceError, backoff: Backoff) -> None:
        """Log (the message names the redacted URL only) and wait before the next attempt."""
        delay = backoff.next()
        self.last_error = str(exc)
        if self._evidence is not None:  # the frames after an incident may never come: keep what is there
            self._evidence.source_ended(wait=False)
        self.counters.reconnects += 1
        self.log.error(event, error=str(exc), retry_in_s=round(delay, 2))
        self._stop.wait(delay)

    def _read(self, source: VideoSource, sampler: FrameSampler, gate: MotionGate) -> bool:
        """True at the end of a non-looping file."""
        quiet_heartbeat_s = self.config.motion.quiet_heartbeat_s
        while not self._stop.is_set():
            self._nap_if_quiet(source)
            started = time.monotonic()
            grabbed = source.grab()
            if grabbed is None:
                return True
            self._waited = time.monotonic() - started > 0.5 / source.fps
            self._burst += 1
            self.counters.frames_read += 1
            self.counters.loops = grabbed.loop
            if self.realtime and (restored := self._link.frame(time.time())) is not None:
                self._link_event(restored)
            if grabbed.catch_up:  # decoded again on waking up: evidence of the moments before
                self._keep_catch_up(source, grabbed)
                continue
            if grabbed.keyframe:
                self._vigilance.key_frame(grabbed.pos_s)
            if not grabbed.decoded:  # a quiet camera's packet between two key frames
                if self._in_flight:  # the rules' word on a heartbeat frame wakes it at once
                    self._reap()
                    self._set_mode(source, self._capture_ts(source, grabbed))
                continue
            self.counters.frames_decoded += 1
            if not sampler.take(grabbed.pos_s):
                continue
            # Only for sampled frames: a wait per decoded frame (25/s) cost more than the frames it freed.
            self._reap()
            self.counters.frames_sampled += 1
            capture_ts = self._capture_ts(source, grabbed)
            image = source.retrieve()
            if self._evidence is not None:
                self._evidence.keep(capture_ts, image)
            if self._health.due(capture_ts):
                for change in self._health.check(image, capture_ts):
                    self._health_change(change, grabbed.pos_s)
            decision = gate.check(image, capture_ts, quiet_heartbeat_s if self._mode == "quiet" else None)
            if decision.reason in ("motion", "recalibrated"):
                self._vigilance.wake(capture_ts)
            self._set_mode(source, capture_ts)
            if not decision.analyse:
                self.counters.frames_gated += 1
                continue
            throttled = self._attention in ("follow", "rest")
            if throttled and not self.realtime and self._in_flight:
                # A replay reads far faster than the detector answers: before leaving this frame out,
                # wait for the word on the frames in flight, which a live camera would have by now
                # (a person gone brings every frame back at once, in a replay as in the night).
                ray.wait(self._in_flight, num_returns=len(self._in_flight))
                self._reap()
                throttled = self._attention in ("follow", "rest")
            if throttled and not self._follow.take(grabbed.pos_s):
                if self._attention == "follow":
                    self.counters.frames_skipped_following += 1
                else:
                    self.counters.frames_skipped_resting += 1
                continue
            canvas, geometry = letterbox(image, self.spec)
            meta = FrameMeta(
                site=self.site, camera=self.config.id, seq=self._seq, capture_ts=capture_ts,
                clip_time_s=grabbed.pos_s, geometry=geometry, sent_wall_ts=0.0, motion=decision.reason,
                node=self.node,
            )
            self._seq += 1
            self._offer(meta, canvas)
        return False

    def _capture_ts(self, source: VideoSource, grabbed: Grabbed) -> float:
        # Replay: capture time = --at + clip position, so a clip played at "23:00" is a real night.
        if self.clock_start is not None:
            return self.clock_start + grabbed.pos_s
        if source.is_live or source.realtime:  # when it was read (live) or due (a paced file)
            return source.wall_ts(grabbed.pos_s)
        return time.time()

    def _nap_if_quiet(self, source: VideoSource) -> None:
        """A quiet camera reads its packets in bursts: waking up for each one (25 a second) costs more
        CPU than the packet itself (~0.24 ms here: cold caches after every sleep). Once it has read
        ``QUIET_BURST_S`` worth of packets and the last one had to be waited for (it is at the live
        edge, nothing is buffered), it naps that long; the packets gather in FFmpeg's and the kernel's
        buffers and the next burst reads them at once. It never naps while packets are buffered, so it
        never falls behind, whatever frame rate the stream declares; the watchdog sees every packet."""
        if not self.realtime or self._mode != "quiet":
            self._burst = 0
            return
        fps = source.fps  # the stream's, or 25 when it declares none
        packets = max(1, round(QUIET_BURST_S * fps))
        if self._burst >= packets and self._waited:
            self._stop.wait(packets / fps)
            self._burst = 0

    def _keep_catch_up(self, source: VideoSource, grabbed: Grabbed) -> None:
        """Pictures skipped while quiet, decoded on waking up (the GOP so far): the evidence ring gets
        them at its own pace; the detector does not (they are older than what it sees next)."""
        if self._evidence is None or not grabbed.decoded or not self._catch_up_sampler.take(grabbed.pos_s):
            return
        self._evidence.keep(self._capture_ts(source, grabbed), source.retrieve())

    def _set_mode(self, source: VideoSource, ts: float) -> None:
        mode = self._vigilance.mode(ts)
        if mode != self._mode:
            self._mode = mode
            self.counters.quiet_periods += mode == "quiet"
            self.log.debug("camera_vigilance", mode=mode, gop_s=self._vigilance.gop_s)
        source.keyframes_only = mode == "quiet"

    def _offer(self, meta: FrameMeta, canvas: npt.NDArray[np.uint8]) -> None:
        if not self.realtime:
            while len(self._in_flight) >= self.max_in_flight:
                with self._link.blocked(time.time):  # waiting for the pipeline, not for the source
                    ray.wait(self._in_flight, num_returns=1)
                self._reap()
        self._slot.offer((meta, canvas))
        self._flush_pending()

    def _flush_pending(self) -> None:
        self._slot.in_flight = len(self._in_flight)
        item = self._slot.take()
        if item is None:
            return
        meta, canvas = item
        if self.realtime and self.clock_start is None and time.time() - meta.capture_ts > STALE_AFTER_S:
            self._slot.drops += 1  # waited too long for a slot: stale, worth nothing
            self._analysis.dropped(time.time())
            return
        self._send(meta, canvas)

    def _send(self, meta: FrameMeta, canvas: npt.NDArray[np.uint8]) -> None:
        frame = CameraFrame(replace(meta, sent_wall_ts=time.time()), ray.put(canvas))
        ref = self.pool.submit.remote(frame)
        self._in_flight.append(ref)
        self._sent_ts[ref] = meta.capture_ts
        self.counters.frames_sent += 1
        self._analysis.sent(time.time())

    def _reap(self) -> None:
        if self._in_flight:
            done, self._in_flight = ray.wait(self._in_flight, num_returns=len(self._in_flight), timeout=0)
            for ref in done:
                capture_ts = self._sent_ts.pop(ref, 0.0)
                try:
                    attention: Attention = ray.get(ref)
                    if attention in ("watch", "follow"):  # the rules want this camera watched closely
                        self._vigilance.wake(capture_ts)
                    if capture_ts >= self._attention_ts:  # done out of order: the latest frame's word
                        self._attention, self._attention_ts = attention, capture_ts
                        # Watched: its site's intrusion may be verified now; a covered lens must escalate
                        # it within seconds, not after the maintenance debounce.
                        self._health.vigilant = attention in ("watch", "follow")
                    self.counters.frames_done += 1
                except Exception as exc:  # the inference actor crashed or hung: this frame is lost
                    self.counters.frames_lost += 1
                    self._analysis.lost(time.time())
                    self.log.warning("frame_lost", error=type(exc).__name__)
                else:
                    if (cleared := self._analysis.answered(time.time())) is not None:
                        self._stall_event(cleared)
        self._flush_pending()

    def _drain(self) -> None:
        while self._in_flight:
            ray.wait(self._in_flight, num_returns=len(self._in_flight), timeout=5.0)
            self._reap()

    def watch_link(self) -> None:
        """The watchdog's look (every ``WATCHDOG_PERIOD_S``, from the host): a dead stream can block a
        read, so silence is noticed from outside the reading thread."""
        if not self.watched:
            return
        now = time.time()
        event = self._link.poll(now)
        if event is not None:
            try:
                self._link_event(event)
            except Exception as exc:  # the rules actor is restarting: the fault stays in the log
                self.log.error("camera_fault_not_sent", fault="video_loss", error=repr(exc))
        stall = self._analysis.poll(now, self._answers_waiting)
        if stall is not None:
            try:
                self._stall_event(stall)
            except Exception as exc:
                self.log.error("camera_fault_not_sent", fault="analysis_stalled", error=repr(exc))

    def _answers_waiting(self) -> bool:
        """Answers back from the pool that the read loop has not collected (it is blocked in a read)."""
        refs = list(self._in_flight)  # the read loop replaces the list, never mutates a copy of it
        return bool(refs) and bool(ray.wait(refs, num_returns=len(refs), timeout=0)[0])

    def _stall_event(self, event: StallEvent) -> None:
        self._fault(CameraFault(self.site, self.config.id, "analysis_stalled", event.active, event.ts,
                                event.since, {"waiting_s": round(event.waiting_s, 2)}))

    def _link_event(self, event: LinkEvent) -> None:
        if event.kind == "video_loss" and self._evidence is not None:
            # An intruder who cuts the camera: the clip gathered so far is the evidence; written now,
            # on the camera's evidence thread: this is the host's one watchdog thread, and a site-wide
            # outage (a router reboot) would delay every other camera's fault behind the encodings.
            self._evidence.source_ended(wait=False)
        self._fault(CameraFault(self.site, self.config.id, "video_loss", event.kind == "video_loss",
                                event.ts, event.since, {"silent_s": round(event.down_s, 2)}))

    def _health_change(self, change: FaultChange, clip_time_s: float) -> None:
        self._fault(CameraFault(self.site, self.config.id, change.fault, change.active, change.ts,
                                change.since, change.details, round(clip_time_s, 3)))

    def _fault(self, fault: CameraFault) -> None:
        self.log.warning("camera_fault", fault=fault.fault, change=fault.event, since=fault.since,
                         **fault.details)
        with self._fault_lock:
            self.counters.faults_raised += fault.active
            if self.faults is not None:
                self._fault_refs = [r for r in self._fault_refs if not _ready(r)]
                self._fault_refs.append(self.faults.camera_fault.remote(fault))


def _ready(ref: ray.ObjectRef) -> bool:
    return bool(ray.wait([ref], timeout=0)[0])


class _Evidence:
    """The camera's evidence recorder, and the recording of what it wrote on the incident's timeline.

    Clips are encoded on one background thread: FFmpeg takes ~0.3 s of CPU for 15 s of 640x360
    video, which the read loop must not wait for.
    """

    def __init__(self, settings: EvidenceSettings, store: StoreConfig | None, camera: CameraConfig,
                 log: Any) -> None:
        self.recorder = EvidenceRecorder(settings, PrivacyMask(camera.privacy_masks))
        self.store_config, self.log = store, log
        self._store: Any = None
        self._store_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence")
        self._clips: list[Future[None]] = []
        self._clips_lock = threading.Lock()  # the read loop and the watchdog both hand clips over

    def keep(self, ts: float, image: npt.NDArray[np.uint8]) -> None:
        ready = self.recorder.push(ts, image)
        with self._clips_lock:
            self._clips = [f for f in self._clips if not f.done()]
            self._clips.extend(self._writer.submit(self._clip, r) for r in ready)

    def request(self, request: EvidenceRequest) -> list[str]:
        snapshot, ready = self.recorder.request(request)
        written: list[str] = []
        if snapshot is not None:
            self._record(snapshot)
            written.append(snapshot.file)
        else:
            self.log.warning("evidence_no_frame", incident=request.incident_id)
        if ready:
            self._clip(request)
            written.append("clip")
        return written

    def source_ended(self, *, wait: bool = True) -> None:
        """Write every pending clip with the frames there are, on the evidence thread; ``wait``: until
        they are written (a camera that ends), else return at once (the watchdog, a reconnection)."""
        ready = self.recorder.source_ended()
        with self._clips_lock:
            self._clips.extend(self._writer.submit(self._clip, r) for r in ready)
            clips = list(self._clips)
        if wait:
            for clip in clips:
                clip.result()  # _clip logs its own errors: this only waits

    def _clip(self, request: EvidenceRequest) -> None:
        try:
            clip = self.recorder.clip(request)
        except Exception as exc:  # a clip that cannot be written must not stop the camera
            self.log.error("evidence_clip_failed", incident=request.incident_id, error=str(exc))
            return
        if clip is not None:
            self._record(clip)

    def _record(self, written: EvidenceFile) -> None:
        self.log.info("evidence_written", incident=written.incident_id, file=written.file,
                      frames=written.frames)
        if self.store_config is None:
            return
        try:
            with self._store_lock:
                if self._store is None:
                    from flux_secu.store import open_store

                    self._store = open_store(self.store_config)
            self._store.record_event(written.incident_id, "evidence", time.time(), written.event_data(),
                                     key=f"evidence:{written.file}")
        except Exception as exc:  # the file is on disk; the store (retried inside) is unreachable
            self.log.error("evidence_not_recorded", incident=written.incident_id, file=written.file,
                           path=str(written.path), error=repr(exc))
    # --- faults -----------------------------------------------------------------------------------
