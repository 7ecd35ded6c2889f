"""Metrics through ``ray.util.metrics``: Ray's metrics agent serves them to Prometheus.

Ray exports every series with a ``ray_`` prefix (a counter also gets ``_total``) on each node's
metrics port (``ray start --metrics-export-port``, ``flux-secu run --metrics-port``).

Cameras and the pool keep their own cumulative counters (``stats()``); the supervisor polls them every
few seconds and turns the increments into Prometheus counters here, so the per-frame code paths carry
no metrics code. Only what a poll cannot see exactly (the size and duration of every batch) is recorded
where it happens, by the pool (``record_batch``). Incidents and alerts come from the store's timeline,
the one place every actor writes them to.

The bookkeeping (increments between polls, a restarted actor's counters starting again from zero,
camera health) is plain Python, tested without Ray; the ``ray.util.metrics`` objects are created
lazily, in the process that records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flux_secu.rules.incident import IncidentKind

PREFIX = "flux_secu"
BATCH_SIZE_BOUNDARIES = [1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 64.5]
LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
CAMERA_COUNTERS = {
    # stats() key -> (metric name, description)
    "frames_read": ("camera_frames_read", "Frames decoded from the camera"),
    "frames_done": ("camera_frames_analysed", "Frames the detector analysed"),
    "frames_gated": ("camera_frames_gated", "Sampled frames the motion gate skipped"),
    "frames_skipped_following": ("camera_frames_skipped_following",
                                 "Frames with motion left out while following a confirmed presence"),
    "frames_skipped_resting": ("camera_frames_skipped_resting",
                               "Frames with motion left out while nothing in view has any action"),
    "drops": ("camera_drops", "Frames dropped because a newer one replaced them (overload)"),
    "frames_lost": ("camera_frames_lost", "Frames lost in a crashed or hung inference actor"),
    "reconnects": ("camera_reconnects", "Times the camera's source was reopened"),
}
GAUGES = {
    "camera_fps_in": "Frames per second read from the camera",
    "camera_healthy": "1 while the camera delivers frames, else 0",
    "pool_queue_depth": "Frames waiting in the inference pool",
    "pool_actors": "Inference actors in the pool",
    "pool_actors_serving": "Inference actors taking frames (not restarting after a crash or a hung call)",
    "pool_batch_fill": "Mean batch size over max_batch since the last poll",
}
INCIDENTS = ("incidents", "Incidents opened")
POOL_COUNTERS = {
    # pool stats() key -> (metric name, description)
    "hung_calls": ("pool_hung_calls", "Inference calls failed for passing their deadline (actor restarted)"),
    "failed_frames": ("pool_failed_frames", "Frames of failed inference calls (crashed or hung actor)"),
}
INCIDENT_KINDS = tuple(kind.value for kind in IncidentKind)
HISTOGRAMS = {
    "pool_batch_size": ("Frames per inference batch", BATCH_SIZE_BOUNDARIES),
    "pool_inference_latency_seconds": ("From a batch's dispatch to its detections", LATENCY_BOUNDARIES_S),
}
ALERT_EVENTS = {
    # store event kind -> (metric name, description)
    "warning": ("alert_warnings", "Voice warnings played"),
    "notification": ("alert_notifications", "Notifications sent to on-call contacts"),
    "acknowledged": ("alert_acknowledgements", "Incidents acknowledged"),
}


def exported_names() -> set[str]:
    """Every series name as Ray's endpoint shows it (``ray_`` prefix; ``_total``, ``_bucket``...)."""
    counters = [name for name, _ in (*CAMERA_COUNTERS.values(), *ALERT_EVENTS.values(),
                                     *POOL_COUNTERS.values(), INCIDENTS)]
    names = {f"ray_{PREFIX}_{name}_total" for name in counters} | {f"ray_{PREFIX}_{name}" for name in GAUGES}
    for name in HISTOGRAMS:
        names |= {f"ray_{PREFIX}_{name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return names


class Increments:
    """Increments of cumulative counters between polls, per key.

    A value below the previous one means the counter's owner restarted from zero: the whole value is new.
    """

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}

    def delta(self, key: Any, value: float) -> float:
        last = self._last.get(key)
        self._last[key] = value
        if last is None:
            return value
        return value if value < last else value - last

    def __contains__(self, key: Any) -> bool:
        return key in self._last

    def forget(self, key_prefix: tuple[Any, ...]) -> None:
        for key in [k for k in self._last if isinstance(k, tuple) and k[: len(key_prefix)] == key_prefix]:
            del self._last[key]


@dataclass
class CameraPoint:
    """One camera at one poll, as the metrics need it."""

    site: str
    camera: str
    counters: dict[str, float]
    fps_in: float
    healthy: bool


@dataclass
class CameraTracker:
    """Turns successive camera ``stats()`` polls into per-camera points.

    A camera is healthy when it read frames since the previous poll; one that read nothing for
    ``stale_after_s`` (a dead source, a crashed actor) is not.
    """

    stale_after_s: float = 5.0
    _last: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """camera -> (poll time, frames_read, time frames_read last moved)"""

    def point(self, stats: dict[str, Any], now: float) -> CameraPoint:
        camera = str(stats["camera"])
        read = float(stats["frames_read"])
        previous = self._last.get(camera)
        if previous is None or read < previous[1]:
            fps, moved = 0.0, now
        else:
            fps = (read - previous[1]) / max(now - previous[0], 1e-9)
            moved = now if read > previous[1] else previous[2]
        self._last[camera] = (now, read, moved)
        return CameraPoint(
            site=str(stats["site"]), camera=camera,
            counters={key: float(stats.get(key, 0)) for key in CAMERA_COUNTERS},
            fps_in=fps, healthy=now - moved < self.stale_after_s,
        )

    def forget(self, camera: str) -> None:
        self._last.pop(camera, None)


class Metrics:
    """The deployment's series; one instance per recording process."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge

        self.increments = Increments()
        self._sites: set[str] = set()
        camera_tags = ("site", "camera")
        self.camera_counters = {
            key: Counter(f"{PREFIX}_{name}", description, tag_keys=camera_tags)
            for key, (name, description) in CAMERA_COUNTERS.items()
        }
        def gauge(name: str, tags: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", GAUGES[name], tag_keys=tags)

        self.fps_in = gauge("camera_fps_in", camera_tags)
        self.healthy = gauge("camera_healthy", camera_tags)
        self.queue = gauge("pool_queue_depth")
        self.actors = gauge("pool_actors")
        self.serving = gauge("pool_actors_serving")
        self.pool_increments = Increments()  # a restarted pool's counters start again from zero
        self.pool_counters = {key: Counter(f"{PREFIX}_{name}", description)
                              for key, (name, description) in POOL_COUNTERS.items()}
        self.fill = gauge("pool_batch_fill")
        self.incidents = Counter(f"{PREFIX}_{INCIDENTS[0]}", INCIDENTS[1], tag_keys=("site", "kind"))
        self.alerts = {
            kind: Counter(f"{PREFIX}_{name}", description, tag_keys=("site",))
            for kind, (name, description) in ALERT_EVENTS.items()
        }

    def cameras(self, points: Iterable[CameraPoint]) -> None:
        for p in points:
            if p.site not in self._sites:
                self.site_seen(p.site)
            tags = {"site": p.site, "camera": p.camera}
            for key, value in p.counters.items():
                first = (p.camera, key) not in self.increments
                delta = self.increments.delta((p.camera, key), value)
                if delta > 0:
                    self.camera_counters[key].inc(delta, tags=tags)
                elif first:
                    # A series exists from the camera's first poll, at 0: a dashboard shows "no drops"
                    # rather than "no data". Counter.inc refuses 0; _record is what it calls.
                    self.camera_counters[key]._record(0.0, tags=tags)
            self.fps_in.set(p.fps_in, tags=tags)
            self.healthy.set(1.0 if p.healthy else 0.0, tags=tags)

    def site_seen(self, site: str) -> None:
        """A site's incident and alert counters exist from its first camera poll, at 0, as its cameras'
        do: a dashboard panel then says "0 acknowledgements" instead of "No data" until the first one."""
        self._sites.add(site)
        for kind in INCIDENT_KINDS:
            self.incidents._record(0.0, tags={"site": site, "kind": kind})
        for counter in self.alerts.values():
            counter._record(0.0, tags={"site": site})

    def camera_gone(self, site: str, camera: str) -> None:
        """A removed camera: its gauges say so, and a camera added again with its id starts afresh."""
        tags = {"site": site, "camera": camera}
        self.fps_in.set(0.0, tags=tags)
        self.healthy.set(0.0, tags=tags)
        self.increments.forget((camera,))

    def pool(self, queued: int, actors: int, fill: float) -> None:
        self.queue.set(float(queued))
        self.actors.set(float(actors))
        self.fill.set(fill)

    def pool_faults(self, stats: dict[str, Any]) -> None:
        """The pool's fault counters and how many of its actors serve (from its ``stats()``)."""
        self.serving.set(float(stats.get("serving", stats.get("actors", 0))))
        for key, counter in self.pool_counters.items():
            first = key not in self.pool_increments
            delta = self.pool_increments.delta(key, float(stats.get(key, 0)))
            if delta > 0:
                counter.inc(delta)
            elif first:
                counter._record(0.0)  # a series from the first poll, at 0 (see cameras())

    def events(self, events: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Store events as (kind, site, data)."""
        for kind, site, data in events:
            if kind == "opened":
                self.incidents.inc(1.0, tags={"site": site, "kind": str(data.get("kind", "unknown"))})
            elif kind in self.alerts:
                self.alerts[kind].inc(1.0, tags={"site": site})


class BatchMetrics:
    """Recorded by the inference pool for every batch: its size and how long the model took."""

    def __init__(self) -> None:
        from ray.util.metrics import Histogram

        def histogram(name: str) -> Histogram:
            description, boundaries = HISTOGRAMS[name]
            return Histogram(f"{PREFIX}_{name}", description, boundaries=boundaries)

        self.sizes = histogram("pool_batch_size")
        self.latency = histogram("pool_inference_latency_seconds")

    def record_batch(self, size: int, seconds: float) -> None:
        self.sizes.observe(float(size))
        self.latency.observe(seconds)
