"""Build the actor graph from a config: cameras -> pool -> rules -> speakers / escalations / store."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import ray

from flux_secu.actors.camera_host import CameraHandle, CameraHost, CameraInit, host_name
from flux_secu.actors.inference import InferencePool
from flux_secu.actors.panic import PanicIngressActor
from flux_secu.actors.rules import RulesActor
from flux_secu.actors.site_alerts import SiteAlerts
from flux_secu.config import CameraConfig, Config
from flux_secu.deployment_record import CameraPlace, DeploymentRecord
from flux_secu.detect.letterbox import LetterboxSpec
from flux_secu.evidence.recorder import EvidenceSettings

WAIT_RUN_S = 30.0
"""A restarted supervisor waits for an adopted camera's run this long per call (``CameraHost.wait_run``)."""
STOP_WAIT_S = 1.0
"""Removing a camera waits this long for its reader to end, then lets it end in the background."""
CLOSING_GIVE_UP_S = 60.0
"""An emptied host whose reader has not ended by then is ended anyway (its clips are lost)."""
NAMESPACE = "flux-secu"
"""Ray namespace of the deployment: the named supervisor is found there from any driver."""

MEMORY_ENV = {
    # Every task and actor call leaves its events in the GCS (up to 100,000 tasks by default) for Ray's
    # dashboard and state API, which a deployment does not use: with a few calls per analysed frame the
    # GCS grows all night. No events are recorded at all (workers keep no buffer either).
    "RAY_task_events_report_interval_ms": "0",
    # Should an operator turn the events back on to debug (RAY_task_events_report_interval_ms=1000),
    # the GCS keeps the last 10,000 tasks, not 100,000.
    "RAY_task_events_max_num_task_in_gcs": "10000",
    # glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB): decoded
    # frames (675 KiB), canvases and a waking camera's catch-up pictures then come from the heap, whose
    # freed pages a process keeps, so a camera host grows to the highest total it ever held at once.
    # A fixed threshold keeps such blocks mmapped: freed, they go back to the system.
    "MALLOC_MMAP_THRESHOLD_": "131072",
}
"""Set by ``init_local_ray`` unless the environment already has them (README, "Ray")."""


def init_local_ray(
    num_cpus: int | None = None, object_store_mib: int = 512, metrics_port: int | None = None
) -> None:
    """Start an embedded single-node Ray that listens on loopback only.

    ``metrics_port``: where Ray's metrics agent serves Prometheus text (Ray picks a port when None).
    """
    # Without this, Ray binds its listeners to the machine's network address.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    for name, value in MEMORY_ENV.items():  # read by every Ray process this one starts
        os.environ.setdefault(name, value)
    extra: dict[str, Any] = {} if metrics_port is None else {"_metrics_export_port": metrics_port}
    ray.init(
        address="local",
        namespace=NAMESPACE,
        num_cpus=num_cpus or os.cpu_count() or 2,
        object_store_memory=object_store_mib * 2**20,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
        **extra,
    )


def actor_name(deployment_id: str, role: str) -> str:
    """The name of one of a supervised deployment's actors (camera hosts: ``host_name``)."""
    return f"flux-secu:{deployment_id}:{role}"


def _find(name: str) -> Any:
    try:
        return ray.get_actor(name)
    except ValueError:
        return None


def connect_ray(address: str) -> None:
    """Join a running Ray cluster (``auto``, ``HOST:PORT`` or ``ray://HOST:10001``) as a driver."""
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)


@dataclass
class Deployment:
    config: Config
    alerts: Any = None
    """The ``SiteAlerts`` process: every site's speakers and escalation (``actors/site_alerts.py``)."""
    speakers: dict[str, Any] = field(default_factory=dict)
    escalations: dict[str, Any] = field(default_factory=dict)
    rules: Any = None
    pool: Any = None
    cameras: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, ray.ObjectRef] = field(default_factory=dict)
    spec: LetterboxSpec | None = None
    ingress: Any = None
    deployment_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    api: Any = None
    detached: bool = False
    """Its actors are named and detached (a supervisor's deployment: ``build``)."""
    hosts: list[_Host] = field(default_factory=list)
    """The camera host processes, each with the cameras it runs (``actors/camera_host.py``)."""
    closing: list[_Host] = field(default_factory=list)
    """Hosts whose last camera was removed, kept until its reader ends (``end_closed_hosts``)."""
    hosts_made: int = 0

    @classmethod
    def build(
        cls, config: Config, *, dry_run: bool = False, inference_worker: type | None = None,
        detached: bool = False,
    ) -> Deployment:
        """Create every actor except the cameras, and wait until they are ready.

        ``dry_run`` records notifications instead of sending them (replays must never notify anyone).
        ``inference_worker``: the class the inference actors run (``InferenceWorker`` or a subclass).
        ``detached``: the actors are named and outlive the process that creates them (the supervisor):
        a supervisor restarted after a crash finds them again (``adopt``) instead of losing them.
        """
        config.var_dir.mkdir(parents=True, exist_ok=True)
        dep = cls(config, detached=detached)
        dep.alerts = SiteAlerts.options(**dep._named("alerts")).remote(  # type: ignore[attr-defined]
            config.sites, config, dry_run
        )
        dep.speakers, dep.escalations = ray.get(dep.alerts.roles.remote())
        dep.rules = RulesActor.options(**dep._named("rules")).remote(  # type: ignore[attr-defined]
            config, dep.speakers, dep.escalations, dep.deployment_id
        )
        dep.pool = InferencePool.options(**dep._named("pool")).remote(  # type: ignore[attr-defined]
            config.model, config.inference, dep.rules, inference_worker
        )
        # The HTTP ingress serves panic webhooks and acknowledgement links; MQTT only with panic devices.
        # Never in a replay (dry run): it would take the production ingress's MQTT client id and port.
        serve_api = not dry_run and config.api is not None and config.api.enabled
        has_panic = any(site.panic for site in config.sites)
        if serve_api and has_panic:
            # The API is the HTTP front door (webhook and links): the ingress keeps MQTT and the verifier.
            no_http = config.panic.model_copy(update={"http": config.panic.http.model_copy(
                update={"enabled": False})})
            dep.ingress = PanicIngressActor.options(**dep._named("ingress")).remote(  # type: ignore[attr-defined]
                config.model_copy(update={"panic": no_http}), dep.escalations, mqtt=True
            )
        elif not serve_api and not dry_run and (has_panic or not config.notifications.dry_run):
            dep.ingress = PanicIngressActor.options(**dep._named("ingress")).remote(  # type: ignore[attr-defined]
                config, dep.escalations, mqtt=has_panic
            )
        model, _ = ray.get([dep.pool.ready.remote(), dep.rules.stats.remote()])
        dep.spec = model["spec"]
        # Speech is synthesised in the speaker actors' constructors; surface its errors now.
        ray.get([s.ready.remote() for s in [*dep.speakers.values(), *dep.escalations.values()]])
        if dep.ingress is not None:
            ray.get(dep.ingress.ready.remote())
        if serve_api:
            from flux_secu.api.actor import ApiActor  # the API's dependencies only where it runs

            dep.api = ApiActor.options(**dep._named("api")).remote(  # type: ignore[attr-defined]
                config, dep.escalations, dep.ingress
            )
            ray.get(dep.api.ready.remote())
        return dep

    def _named(self, role: str) -> dict[str, Any]:
        """Ray options of one of the deployment's actors: named and detached when the deployment is."""
        if not self.detached:
            return {}
        return {"name": actor_name(self.deployment_id, role), "lifetime": "detached"}

    @classmethod
    def adopt(cls, config: Config, record: DeploymentRecord,
              timeout_s: float = 10.0) -> tuple[Deployment, list[CameraPlace]]:
        """The deployment of ``record`` from its named actors, still running (a supervisor restarted
        after a crash); returns it and the cameras whose host is gone (to start again). LookupError
        when one of the actors every camera needs (site alerts, rules, pool) is gone for good."""
        dep = cls(config, deployment_id=record.deployment_id, detached=True, hosts_made=record.hosts_made)
        dep.alerts, dep.rules, dep.pool = (_find(actor_name(dep.deployment_id, r))
                                           for r in ("alerts", "rules", "pool"))
        if dep.alerts is None or dep.rules is None or dep.pool is None:
            raise LookupError("the deployment's site alerts, rules or pool actor is gone")
        dep.ingress = _find(actor_name(dep.deployment_id, "ingress"))
        dep.api = _find(actor_name(dep.deployment_id, "api"))
        dep.speakers, dep.escalations = ray.get(dep.alerts.roles.remote(), timeout=timeout_s)
        dep.spec = ray.get(dep.pool.canvas.remote(), timeout=timeout_s)
        hosts: dict[str, _Host | None] = {}
        lost: list[CameraPlace] = []
        for place in record.cameras:
            if place.host not in hosts:
                actor = _find(place.host)
                hosts[place.host] = None if actor is None else _Host(actor, place.host, True)
                if actor is not None:
                    dep.hosts.append(hosts[place.host])  # type: ignore[arg-type]
            host = hosts[place.host]
            if host is None:
                lost.append(place)
                continue
            init = dep._init(place.site, place.camera)
            with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
                # The host's own copy has the camera's secrets, which the record never holds.
                init = ray.get(host.actor.init_of.remote(place.camera.id), timeout=timeout_s) or init
            host.cameras.add(place.camera.id)
            dep.cameras[place.camera.id] = CameraHandle(host.actor, place.camera.id, init)
            dep.runs[place.camera.id] = host.actor.wait_run.remote(place.camera.id, WAIT_RUN_S)
        return dep, lost

    def _init(self, site_id: str, camera: CameraConfig, *, realtime: bool = True,
              clock_start: datetime | None = None) -> CameraInit:
        evidence = self.config.evidence
        settings = EvidenceSettings(
            self.config.evidence_dir, evidence.before_s, evidence.after_s, evidence.width,
            evidence.jpeg_quality, camera.detect_fps,
        ) if evidence.enabled else None
        return CameraInit(site_id, camera, self.spec, self.pool, realtime=realtime, clock_start=clock_start,
                          evidence=settings, store=self.config.store, faults=self.rules)

    def add_camera(
        self,
        site_id: str,
        camera: CameraConfig,
        *,
        realtime: bool = True,
        clock_start: datetime | None = None,
        options: dict[str, Any] | None = None,
    ) -> CameraHandle:
        """Start a camera on a host with room (a new host when none has); ``options``: Ray actor options
        of a new host (placement: resources, scheduling strategy). A replay (``realtime=False``) gets a
        host of its own: it reads as fast as it can and must not slow live cameras down."""
        init = self._init(site_id, camera, realtime=realtime, clock_start=clock_start)
        host = self._host_with_room(realtime, options)
        ray.get(host.actor.add.remote(camera.id, init))
        host.cameras.add(camera.id)
        handle = CameraHandle(host.actor, camera.id, init)
        self.cameras[camera.id] = handle
        self.runs[camera.id] = handle.run.remote()
        if self.api is not None:
            self.api.add_camera.remote(camera.id, handle)
        return handle

    def _host_with_room(self, live: bool, options: dict[str, Any] | None) -> _Host:
        per_host = self.config.camera_hosts.cameras_per_host
        for host in self.hosts:
            if host.live and live and len(host.cameras) < per_host:
                return host
        name = host_name(self.deployment_id, self.hosts_made)
        self.hosts_made += 1
        if self.detached:
            options = {**(options or {}), "lifetime": "detached"}
        actor = CameraHost.options(name=name, **(options or {})).remote(live)  # type: ignore[attr-defined]
        host = _Host(actor, name, live)
        self.hosts.append(host)
        return host

    def host_of(self, camera_id: str) -> _Host | None:
        return next((h for h in self.hosts if camera_id in h.cameras), None)

    def start_all_cameras(self) -> None:
        for site in self.config.sites:
            for camera in site.cameras:
                self.add_camera(site.id, camera)

    def remove_camera(self, camera_id: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """Stop one camera and drop it from its host (the host ends with its last camera); returns its
        last stats (None when it had crashed, or its host does not answer).

        Returns within ``STOP_WAIT_S`` (plus a stats call) even when the camera's source hangs (a read
        blocks up to ``video_loss_after_s``): a camera not ended by then finishes in the background
        (its frames in flight, its clips), and an emptied host is ended once its readers are."""
        handle = self.cameras.pop(camera_id)
        run = self.runs.pop(camera_id)
        handle.stop.remote()
        ready, _ = ray.wait([run], timeout=STOP_WAIT_S)
        stats: dict[str, Any] | None = None
        if ready:
            with contextlib.suppress(ray.exceptions.RayError):  # the camera had crashed: nothing to report
                stats = ray.get(run)
        if ready and stats is None:  # an adopted camera's wait that had just timed out
            with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
                stats = ray.get(handle.stats.remote(), timeout=timeout_s)
        elif not ready:
            with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
                stats = {**ray.get(handle.stats.remote(), timeout=timeout_s), "stopping": True}
        host = self.host_of(camera_id)
        if host is not None:
            host.cameras.discard(camera_id)
            if not ready:
                host.ending.append(run)
            # A dead or stuck host: it is ended below when empty, or starts afresh at its next restart.
            with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
                ray.get(host.actor.forget.remote(camera_id), timeout=timeout_s)
            if not host.cameras:
                self.hosts.remove(host)
                self.closing.append(host)
        self.end_closed_hosts()
        return stats

    def end_closed_hosts(self, give_up_s: float = CLOSING_GIVE_UP_S) -> None:
        """End the emptied hosts whose last readers ended (or that have had ``give_up_s`` to end them)."""
        now = time.monotonic()
        for host in list(self.closing):
            host.closed_at = host.closed_at or now
            host.ending = [r for r in host.ending if not ray.wait([r], timeout=0)[0]]
            if not host.ending or now - host.closed_at >= give_up_s:
                ray.kill(host.actor, no_restart=True)
                self.closing.remove(host)

    def actors(self, *, inference: bool = True) -> list[Any]:
        """Every actor of the deployment (camera hosts, inference actors, pool, rules, ingress, API,
        site alerts): what a command that ends it kills."""
        members = list(ray.get(self.pool.actor_handles.remote())) if inference and self.pool else []
        hosts = [h.actor for h in [*self.hosts, *self.closing]]
        actors = [*hosts, *members, self.pool, self.rules, self.ingress, self.api, self.alerts]
        return [a for a in actors if a is not None]

    def camera_stats(self) -> list[dict[str, Any]]:
        return ray.get([c.stats.remote() for c in self.cameras.values()])

    def stop(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Stop the cameras, let in-flight frames finish, and wait for alerts already handed out."""
        for camera in self.cameras.values():
            camera.stop.remote()
        ready, _ = ray.wait(list(self.runs.values()), num_returns=len(self.runs), timeout=timeout_s)
        # None: an adopted camera's wait that timed out (CameraHost.wait_run) just as it was stopped.
        stats = [s for s in ray.get(ready) if s is not None]
        if self.rules is not None:
            ray.get(self.rules.flush.remote(), timeout=timeout_s)
        if self.ingress is not None:
            ray.get(self.ingress.stop.remote(), timeout=timeout_s)
        if self.api is not None:
            ray.get(self.api.stop.remote(), timeout=timeout_s)
        return stats


@dataclass
class _Host:
    actor: Any
    name: str
    live: bool
    cameras: set[str] = field(default_factory=set)
    ending: list[ray.ObjectRef] = field(default_factory=list)
    """The runs of removed cameras still finishing (a hung source's read, clips being written)."""
    closed_at: float = 0.0
