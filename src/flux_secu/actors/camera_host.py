"""CameraHost: one process that reads many cameras, each on a thread of its own.

A Ray actor is a whole process: an idle one costs ~1 % of a core and ~76 MiB here, so one actor per
camera spent ~4.6 GiB and 0.6 core on 60 cameras before decoding anything. A host runs up to
``cameras_per_host`` cameras (``actors/camera.py``) side by side; what a camera does is the same. The
GIL is not the limit: FFmpeg's decoding and OpenCV release it, the Python left is a few microseconds a
packet.

A camera is reached through a ``CameraHandle`` (the host and the camera's id), which has the methods
a camera actor had (``run``, ``stop``, ``stats``, ``latest_jpeg``, ``record_evidence``), each with
``.remote()``. ``run`` carries the camera's settings: when Ray restarts a crashed host, the
supervisor's next ``run`` call builds the camera again in the new process.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import ray
import structlog

from flux_secu.actors.camera import CAMERA_NICE, MAX_IN_FLIGHT, WATCHDOG_PERIOD_S, Camera
from flux_secu.config import CameraConfig, StoreConfig
from flux_secu.detect.letterbox import LetterboxSpec
from flux_secu.evidence.recorder import EvidenceRequest, EvidenceSettings
from flux_secu.logs import configure_from_env

log = structlog.get_logger("flux_secu.camera_host")

MAX_CAMERAS_PER_HOST = 64
"""The most a host takes (its thread count is sized on it); ``camera_hosts.cameras_per_host`` <= this."""
_CONTROL_THREADS = 16  # stats, stop, snapshots and evidence calls beside the cameras' reading loops


@dataclass(frozen=True)
class CameraInit:
    """Everything a host needs to (re)build a camera."""

    site: str
    camera: CameraConfig
    spec: LetterboxSpec
    pool: Any
    realtime: bool = True
    clock_start: datetime | None = None
    max_in_flight: int = MAX_IN_FLIGHT
    evidence: EvidenceSettings | None = None
    store: StoreConfig | None = None
    faults: Any = None

    def build(self) -> Camera:
        return Camera(self.site, self.camera, self.spec, self.pool, realtime=self.realtime,
                      clock_start=self.clock_start, max_in_flight=self.max_in_flight,
                      evidence=self.evidence, store=self.store, faults=self.faults)


class NotRunning(RuntimeError):
    """The camera is not running on this host (the host restarted since, or never ran it)."""


# A thread per camera reading, one per camera waited for by a supervisor that restarted
# (``wait_run``), and the control calls.
@ray.remote(num_cpus=0, max_concurrency=2 * MAX_CAMERAS_PER_HOST + _CONTROL_THREADS, max_restarts=-1,
            max_task_retries=0)
class CameraHost:
    def __init__(self, live: bool = True) -> None:
        configure_from_env()
        import cv2

        # The per-frame OpenCV work (colour conversion, motion-gate resize and blur, letterbox) is on
        # small images: OpenCV's thread pool would cost more in thread wake-ups than it saves.
        cv2.setNumThreads(1)
        if live:  # a replay has no real-time budget: it keeps the default priority
            os.nice(CAMERA_NICE)
        self.cameras: dict[str, Camera] = {}
        self.running: set[str] = set()
        self.inits: dict[str, CameraInit] = {}
        self._ended: dict[str, threading.Event] = {}
        self._outcome: dict[str, tuple[dict[str, Any] | None, BaseException | None]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._watchdog, name="camera-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        """One thread watches every camera's link (``Camera.watch_link``)."""
        while True:
            time.sleep(WATCHDOG_PERIOD_S)
            with self.lock:
                cameras = list(self.cameras.values())
            for camera in cameras:
                try:
                    camera.watch_link()
                except Exception as exc:  # one camera's failure must not blind the others
                    log.error("camera_watchdog_failed", camera=camera.config.id, error=repr(exc))

    def ready(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def add(self, camera_id: str, init: CameraInit) -> None:
        """Build the camera (its counters answer at once); ``run`` starts reading."""
        with self.lock:
            if camera_id not in self.cameras:
                self.cameras[camera_id] = init.build()

    def run(self, camera_id: str, init: CameraInit) -> dict[str, Any]:
        """Read the camera until it is stopped or its file ends; returns its last counters.

        A camera whose previous run ended (crashed, or a restarted host that never saw it) is built
        afresh: a new reader with new counters, as a restarted actor had.
        """
        with self.lock:
            if camera_id in self.running:
                raise RuntimeError(f"camera {camera_id} is already running")
            camera = self.cameras.get(camera_id)
            if camera is None or camera.started:
                camera = self.cameras[camera_id] = init.build()
            camera.started = True
            self.running.add(camera_id)
            self.inits[camera_id] = init
            ended = self._ended[camera_id] = threading.Event()
        stats: dict[str, Any] | None = None
        error: BaseException | None = None
        try:
            stats = camera.run()
            return stats
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self.lock:
                self.running.discard(camera_id)
                self._outcome[camera_id] = (stats, error)
            ended.set()

    def wait_run(self, camera_id: str, timeout_s: float) -> dict[str, Any] | None:
        """What the camera's current ``run`` returns (or raises), for a supervisor that restarted and
        cannot see the call its predecessor made; None when it still runs after ``timeout_s`` (ask
        again: a dead caller's wait must not hold a thread for ever). NotRunning when no run of it
        began in this process (the host restarted since)."""
        ended = self._ended.get(camera_id)
        if ended is None:
            raise NotRunning(f"camera {camera_id} is not running on this host")
        if not ended.wait(timeout_s):
            return None
        stats, error = self._outcome[camera_id]
        if error is not None:
            raise error
        return stats

    def init_of(self, camera_id: str) -> CameraInit | None:
        """The settings the camera was started with (its secrets included: they stay in the cluster)."""
        return self.inits.get(camera_id)

    def camera_ids(self) -> list[str]:
        with self.lock:
            return list(self.cameras)

    def stop(self, camera_id: str) -> None:
        camera = self.cameras.get(camera_id)
        if camera is not None:
            camera.stop()

    def forget(self, camera_id: str) -> int:
        """Drop a removed camera (stopping it if it still runs); returns how many cameras are left."""
        with self.lock:
            camera = self.cameras.pop(camera_id, None)
            self.inits.pop(camera_id, None)
            if camera is not None:
                camera.stop()
            return len(self.cameras)

    def stats(self, camera_id: str) -> dict[str, Any]:
        return self._camera(camera_id).stats()

    def latest_jpeg(self, camera_id: str) -> bytes | None:
        return self._camera(camera_id).latest_jpeg()

    def record_evidence(self, camera_id: str, request: EvidenceRequest) -> list[str]:
        return self._camera(camera_id).record_evidence(request)

    def has(self, camera_id: str) -> bool:
        return camera_id in self.cameras

    def _camera(self, camera_id: str) -> Camera:
        camera = self.cameras.get(camera_id)
        if camera is None:
            raise KeyError(f"camera {camera_id} is not on this host")
        return camera


@dataclass(frozen=True)
class _Method:
    method: Any
    args: tuple[Any, ...]

    def remote(self, *args: Any) -> ray.ObjectRef:
        return self.method.remote(*self.args, *args)


def _camera_call(name: str) -> Any:
    """A handle attribute ``name`` with ``.remote(*args)`` that calls ``host.name(camera_id, *args)``."""

    def call(handle: CameraHandle) -> _Method:
        return _Method(getattr(handle.host, name), (handle.camera_id,))

    return property(call)


@dataclass(frozen=True)
class CameraHandle:
    """One camera on its host, called like an actor: ``handle.stats.remote()``."""

    host: Any
    camera_id: str
    init: CameraInit | None = field(default=None, repr=False)

    stop = _camera_call("stop")
    stats = _camera_call("stats")
    latest_jpeg = _camera_call("latest_jpeg")
    record_evidence = _camera_call("record_evidence")

    @property
    def run(self) -> _Method:
        if self.init is None:
            raise RuntimeError(f"camera {self.camera_id}: a handle found by name cannot start the camera")
        return _Method(self.host.run, (self.camera_id, self.init))

    @property
    def host_id(self) -> str:
        return str(self.host._actor_id.hex())


def host_name(deployment_id: str, index: int) -> str:
    """Hosts are named, so that the rules find a camera again after either one restarts."""
    return f"flux-secu:{deployment_id}:camera-host:{index}"


def find_camera(deployment_id: str, camera_id: str, timeout_s: float = 5.0) -> CameraHandle | None:
    """The camera's handle, looked up among the deployment's named hosts (None: on none of them)."""
    prefix = host_name(deployment_id, 0)[:-1]
    for name in ray.util.list_named_actors():
        if not isinstance(name, str) or not name.startswith(prefix):
            continue
        try:
            host = ray.get_actor(name)
            if ray.get(host.has.remote(camera_id), timeout=timeout_s):
                return CameraHandle(host, camera_id)
        except (ValueError, ray.exceptions.RayError, TimeoutError):
            continue  # a host being removed or restarted: the next one may have it
    return None
