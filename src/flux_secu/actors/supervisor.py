"""Supervisor: the named, detached actor that owns a running deployment.

``flux-secu run`` creates it; ``flux-secu cameras|pool|reload|stop`` find it by name from any driver
that reaches the cluster (``--address``) and change the deployment while it runs. A background
thread polls the cameras and the pool every few seconds for the metrics, the pool's autoscaling,
and to restart a camera whose actor crashed.

It survives its own crash: the actors it creates are named and detached (they outlive it), the
deployment (its id, its cameras and their hosts, the pool's size) is kept in the store after every
change (``flux_secu.deployment_record``), and when Ray restarts it, it adopts the actors still alive
instead of starting anew; the cameras that were reading never stop. ``stop`` ends them all.

What a reload changes is decided in flux_secu.reload (pure); the bounds and thresholds of the
autoscaling in flux_secu.autoscale (pure); this module only carries the decisions out.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import ray
import structlog

from flux_secu.actors.graph import NAMESPACE, WAIT_RUN_S, Deployment, actor_name
from flux_secu.autoscale import PoolAutoscaler, PoolSample, batch_window, request_gpu_nodes
from flux_secu.config import CameraConfig, Config
from flux_secu.deployment_record import DEPLOYMENT_KEY, CameraPlace, DeploymentRecord, restored_config
from flux_secu.logs import configure_from_env
from flux_secu.metrics import CameraTracker, Metrics
from flux_secu.redact import redact_url
from flux_secu.reload import check_applicable, plan_reload, with_camera, without_camera

log = structlog.get_logger("flux_secu.supervisor")

SUPERVISOR_NAME = "supervisor"
POLL_S = 2.0
PURGE_EVERY_S = 3600.0
"""Evidence past its retention period is deleted at start and every hour (see flux_secu.evidence)."""
CALL_TIMEOUT_S = 10.0
CAMERA_START_TIMEOUT_S = 120.0
CAMERA_RESOURCE = "flux_secu_cameras"
"""Custom resource of the nodes that take cameras (cluster/*.yaml): one unit per camera."""


class NoDeployment(RuntimeError):
    """No supervisor runs on the cluster this driver joined."""


def get_supervisor() -> Any:
    """The running deployment's supervisor (on the Ray this process joined)."""
    try:
        return ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
    except ValueError:
        raise NoDeployment("no flux-secu deployment runs on this Ray cluster "
                           "(start one with flux-secu run CONFIG --address ...)") from None


def create_supervisor(
    config: Config, *, dry_run: bool = False, runtime_env: dict[str, Any] | None = None
) -> Any:
    """Create the supervisor (detached: it outlives this driver); refuses when one is already running."""
    try:
        ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
    except ValueError:
        pass
    else:
        raise RuntimeError("a flux-secu deployment already runs on this Ray cluster: change it with "
                           "flux-secu reload, or end it with flux-secu stop")
    options: dict[str, Any] = {"name": SUPERVISOR_NAME, "namespace": NAMESPACE, "lifetime": "detached"}
    if runtime_env:
        options["runtime_env"] = runtime_env
    return Supervisor.options(**options).remote(config, dry_run=dry_run)  # type: ignore[attr-defined]


def error_text(exc: BaseException) -> str:
    """The message of an exception raised inside an actor, without Ray's traceback around it."""
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, BaseException) else exc)


@ray.remote(num_cpus=0, max_concurrency=16, max_restarts=-1, max_task_retries=0)
class Supervisor:
    def __init__(self, config: Config, *, dry_run: bool = False, poll_s: float = POLL_S) -> None:
        configure_from_env()
        self.config = config
        self.dry_run = dry_run
        self.poll_s = poll_s
        self.dep: Deployment | None = None
        # Changes to the deployment one at a time; reads (list, stats) never wait for them.
        self.lock = threading.RLock()
        self.sites: dict[str, str] = {}
        self.tracker = CameraTracker()
        self.metrics: Metrics | None = None
        self.autoscaler = self._autoscaler(config)
        self._resizing: ray.ObjectRef | None = None
        self._previous_hist: dict[int, int] = {}
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._events_after = 0
        self._incident_sites: dict[str, str] = {}
        self.restarts: dict[str, int] = {}
        self.pool_actors = config.inference.actors
        self.started_with = config
        if ray.get_runtime_context().was_current_actor_reconstructed:
            self._resume()

    # --- commands ---------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Build the deployment and start every camera; returns once every actor is up."""
        with self.lock:
            if self.dep is not None:
                raise RuntimeError("the deployment is already started")
            self._end_leftovers()
            self.dep = Deployment.build(self.config, dry_run=self.dry_run, detached=True)
            try:
                for site in self.config.sites:
                    for camera in site.cameras:
                        self._add(site.id, camera)
                # All created at once: the box's CPUs start them in parallel; no camera runs yet to disturb.
                ray.get([c.stats.remote() for c in self.dep.cameras.values()], timeout=CAMERA_START_TIMEOUT_S)
            except BaseException:
                # Detached, its actors would outlive a start that failed: end them with it.
                self._end_named(self.dep.deployment_id)
                self.dep = None
                raise
            self._save()
            self._start_polling()
        log.info("deployment_started", sites=len(self.config.sites), cameras=len(self.dep.cameras))
        started: dict[str, Any] = {"sites": len(self.config.sites), "cameras": len(self.dep.cameras)}
        if self.dep.api is not None:
            api = ray.get(self.dep.api.ready.remote())
            started["api"] = f"http://{api['host']}:{api['port']}/"
        return started

    def cameras(self) -> list[dict[str, Any]]:
        """Every camera of the deployment with its counters (``state``: running, stopped, unreachable)."""
        dep = self._deployment()
        actors = dict(dep.cameras)
        refs = {cid: actor.stats.remote() for cid, actor in actors.items()}
        out = []
        for site in self.config.sites:
            for camera in site.cameras:
                row: dict[str, Any] = {"camera": camera.id, "site": site.id,
                                       "source": redact_url(camera.source),
                                       "restarts": self.restarts.get(camera.id, 0)}
                ref = refs.get(camera.id)
                if camera.id in actors:
                    row["host"] = actors[camera.id].host_id
                if ref is None:
                    row["state"] = "stopped"
                else:
                    try:
                        row.update(ray.get(ref, timeout=CALL_TIMEOUT_S))
                        row["state"] = "running"
                    except (ray.exceptions.RayError, TimeoutError):
                        row["state"] = "unreachable"
                out.append(row)
        return out

    def add_camera(self, site_id: str, camera: CameraConfig) -> dict[str, Any]:
        """Start one more camera on site ``site_id``; returns once its actor is up."""
        with self.lock:
            dep = self._deployment()
            config = with_camera(self.config, site_id, camera)
            self._use(config, [camera.id])
            actor = self._add(site_id, camera)
            ray.get(actor.stats.remote(), timeout=CAMERA_START_TIMEOUT_S)
            self._save()
        log.info("camera_added", site=site_id, camera=camera.id, cameras=len(dep.cameras))
        return {"camera": camera.id, "site": site_id}

    def remove_camera(self, camera_id: str) -> dict[str, Any] | None:
        """Stop one camera (its frames in flight finish first); returns its last counters."""
        with self.lock:
            dep = self._deployment()
            config = without_camera(self.config, camera_id)
            stats = self._remove(camera_id)
            self._use(config, [camera_id])
            self._save()
        log.info("camera_removed", site=self.sites.get(camera_id), camera=camera_id, cameras=len(dep.cameras))
        return stats

    def scale_pool(self, actors: int) -> int:
        """Set the number of inference actors (within the autoscaling bounds when autoscaling is on)."""
        auto = self.config.inference.autoscale
        if auto is not None and not auto.min_actors <= actors <= auto.max_actors:
            raise ValueError(f"{actors} inference actors is outside the autoscaling bounds "
                             f"[{auto.min_actors}, {auto.max_actors}] (inference.autoscale)")
        with self.lock:
            dep = self._deployment()
            self._request_gpus(actors)
            size: int = ray.get(dep.pool.resize.remote(actors))
            self.pool_actors = size
            self._save()
        log.info("pool_scaled", actors=size)
        return size

    def reload(self, config: Config) -> dict[str, Any]:
        """Apply the difference between the running config and ``config``; untouched cameras keep running.

        Raises ReloadError (nothing changed) when the configs differ in more than cameras and pool size.
        """
        with self.lock:
            dep = self._deployment()
            plan = plan_reload(self.config, config)
            check_applicable(plan)
            for camera_id in [*plan.remove, *(c.id for _, c in plan.restart)]:
                self._remove(camera_id)
            self._use(config, [*plan.remove, *(c.id for _, c in [*plan.restart, *plan.add])])
            self.autoscaler = self._autoscaler(config)
            started = [self._add(site_id, camera) for site_id, camera in [*plan.restart, *plan.add]]
            ray.get([a.stats.remote() for a in started], timeout=CAMERA_START_TIMEOUT_S)
            if plan.pool_actors is not None:
                self._request_gpus(plan.pool_actors)
                ray.get(dep.pool.resize.remote(plan.pool_actors))
                self.pool_actors = plan.pool_actors
            self._save()
        summary = plan.summary()
        log.info("reload_applied", **{k: v for k, v in summary.items() if k != "unchanged"})
        return summary

    def pool_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = ray.get(self._deployment().pool.stats.remote(), timeout=CALL_TIMEOUT_S)
        auto = self.config.inference.autoscale
        stats["autoscale"] = None if auto is None else {"min_actors": auto.min_actors,
                                                        "max_actors": auto.max_actors}
        return stats

    def camera_actor(self, camera_id: str) -> Any:
        """The actor of the host process that runs a camera (for diagnosis, or to kill it in a test)."""
        return self._deployment().cameras[camera_id].host

    def running_config(self) -> Config:
        return self.config

    def stop(self) -> list[dict[str, Any]]:
        """Stop every camera, let frames and alerts in flight finish, end every actor of the deployment."""
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=CALL_TIMEOUT_S)
        with self.lock:
            dep = self._deployment()
            self._save(running=False)  # a supervisor restarted from now on has nothing to adopt
            stats = dep.stop()
            for actor in dep.actors():
                ray.kill(actor, no_restart=True)
            dep.cameras.clear()
            dep.runs.clear()
            dep.hosts.clear()
        log.info("deployment_stopped")
        return stats

    # --- inside -----------------------------------------------------------------------------------

    def _start_polling(self) -> None:
        self.metrics = Metrics()
        self._poller = threading.Thread(target=self._poll_loop, name="supervisor-poll", daemon=True)
        self._poller.start()

    def _record(self, running: bool) -> DeploymentRecord:
        dep = self._deployment()
        places = []
        for site in self.config.sites:
            for camera in site.cameras:
                host = dep.host_of(camera.id)
                if host is not None:
                    places.append(CameraPlace(site.id, camera, host.name))
        return DeploymentRecord(dep.deployment_id, running, self.pool_actors, dep.hosts_made, places)

    def _save(self, *, running: bool = True) -> None:
        """The deployment as it runs now, in the store: what a restarted supervisor adopts."""
        from flux_secu.store import open_store

        record = self._record(running).to_setting()
        try:
            store = open_store(self.config.store)  # its own: a SQLite connection stays in its thread
            try:
                store.put_setting(DEPLOYMENT_KEY, record)
            finally:
                store.close()
        except Exception as exc:  # the deployment runs on; a restart would adopt the previous record
            log.error("deployment_not_saved", error=repr(exc))

    def _resume(self) -> None:
        """Ray restarted this supervisor after a crash: adopt the deployment that still runs."""
        from flux_secu.store import open_store

        store = open_store(self.config.store)
        try:
            data = store.get_setting(DEPLOYMENT_KEY)
        finally:
            store.close()
        if data is None or data.get("state") != "running":
            log.warning("supervisor_restarted_without_deployment")
            return
        record = DeploymentRecord.from_setting(data)
        self.config = restored_config(self.started_with, [(p.site, p.camera) for p in record.cameras])
        started = time.monotonic()
        try:
            dep, lost = Deployment.adopt(self.config, record)
        except (LookupError, ray.exceptions.RayError, TimeoutError) as exc:
            # What every camera needs is gone for good: end what is left, and start the deployment anew.
            log.error("supervisor_cannot_adopt", error=repr(exc))
            self._end_named(record.deployment_id)
            self.start()
            return
        self.dep = dep
        self.sites = {p.camera.id: p.site for p in record.cameras}
        # The cameras' own settings (with their secrets) from the hosts that run them, where they answered.
        cameras = [(p.site, h.init.camera if (h := dep.cameras.get(p.camera.id)) and h.init else p.camera)
                   for p in record.cameras]
        self.config = dep.config = restored_config(self.started_with, cameras)
        self.pool_actors = record.pool_actors
        adopted = len(dep.cameras)
        for place in lost:  # their host is gone: they start again on a new one
            self.restarts[place.camera.id] = self.restarts.get(place.camera.id, 0) + 1
            self._add(place.site, place.camera)
        self._save()
        self._start_polling()
        log.warning("supervisor_resumed", deployment=record.deployment_id, adopted=adopted,
                    restarted=len(lost), took_s=round(time.monotonic() - started, 3))

    def _end_leftovers(self) -> None:
        """The actors of a deployment that was never stopped (its supervisor ended without ``stop``, on
        a cluster that kept running): a new deployment replaces it."""
        from flux_secu.store import open_store

        try:
            store = open_store(self.config.store)
            try:
                data = store.get_setting(DEPLOYMENT_KEY)
            finally:
                store.close()
        except Exception as exc:  # the store answers later: nothing to clean up that we could know of
            log.warning("deployment_record_unreadable", error=repr(exc))
            return
        if data is not None and data.get("state") == "running":
            log.warning("previous_deployment_ended", deployment=data.get("deployment_id"))
            self._end_named(str(data.get("deployment_id")))

    @staticmethod
    def _end_named(deployment_id: str) -> None:
        prefix = actor_name(deployment_id, "")
        for name in ray.util.list_named_actors():
            if isinstance(name, str) and name.startswith(prefix):
                with contextlib.suppress(ValueError, ray.exceptions.RayError):
                    ray.kill(ray.get_actor(name), no_restart=True)

    def _deployment(self) -> Deployment:
        if self.dep is None:
            raise RuntimeError("the deployment is not started")
        return self.dep

    def _add(self, site_id: str, camera: CameraConfig) -> Any:
        self.sites[camera.id] = site_id
        return self._deployment().add_camera(site_id, camera, options=self._placement())

    def _remove(self, camera_id: str) -> dict[str, Any] | None:
        stats = self._deployment().remove_camera(camera_id)
        self.tracker.forget(camera_id)
        if self.metrics is not None:
            self.metrics.camera_gone(self.sites.get(camera_id, ""), camera_id)
        return stats

    def _use(self, config: Config, changed: list[str]) -> None:
        """Make ``config`` the running one, and tell the rules which cameras changed."""
        ray.get(self._deployment().rules.use_cameras.remote(config, changed), timeout=CALL_TIMEOUT_S)
        self.config = config

    def _placement(self) -> dict[str, Any]:
        """Ray options of a new camera host: on a cluster whose nodes declare camera slots, one slot per
        camera it can take (a node declaring 48 takes three hosts of 16)."""
        if any(CAMERA_RESOURCE in node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")):
            return {"resources": {CAMERA_RESOURCE: self.config.camera_hosts.cameras_per_host}}
        return {}

    @staticmethod
    def _autoscaler(config: Config) -> PoolAutoscaler | None:
        auto = config.inference.autoscale
        return None if auto is None else PoolAutoscaler(auto)

    def _request_gpus(self, actors: int) -> None:
        """Ask Ray's autoscaler for the nodes the pool needs (a no-op on a cluster without one)."""
        request_gpu_nodes(self.config.inference, actors)

    # --- background -------------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        self._open_event_feed()  # in this thread: a SQLite connection stays in the thread that opened it
        next_scale = time.monotonic()
        next_purge = time.monotonic()
        while not self._stopping.wait(self.poll_s):
            if time.monotonic() >= next_purge:
                next_purge += PURGE_EVERY_S
                self._purge()
            try:
                self._poll_cameras()
                pool = ray.get(self._deployment().pool.stats.remote(), timeout=CALL_TIMEOUT_S)
                self._poll_pool(pool, autoscale=time.monotonic() >= next_scale)
                if self.autoscaler is not None and time.monotonic() >= next_scale:
                    next_scale = time.monotonic() + self.autoscaler.config.interval_s
                self._poll_events()
            except Exception as exc:  # one failed poll must not end the polling
                log.warning("supervisor_poll_failed", error=repr(exc))
        self.store.close()

    def _purge(self) -> None:
        """Here, not in the command that started the deployment: a detached one must purge too."""
        from flux_secu.evidence.retention import purge_expired

        evidence = self.config.evidence
        try:
            report = purge_expired(self.store, self.config.evidence_dir, time.time(), evidence.retention_days)
        except Exception as exc:  # the next hour tries again; nothing else stops for this
            log.error("evidence_purge_failed", error=repr(exc))
            return
        if report.purged or report.held:
            log.info("evidence_purged", purged=len(report.purged), kept_on_legal_hold=len(report.held),
                     retention_days=evidence.retention_days)

    def _poll_cameras(self) -> None:
        dep = self._deployment()
        actors = dict(dep.cameras)
        refs = {cid: actor.stats.remote() for cid, actor in actors.items()}
        now = time.time()
        points = []
        for camera_id, ref in refs.items():
            try:
                points.append(self.tracker.point(ray.get(ref, timeout=CALL_TIMEOUT_S), now))
            except (ray.exceptions.RayError, TimeoutError) as exc:
                log.warning("camera_unreachable", site=self.sites.get(camera_id), camera=camera_id,
                            error=type(exc).__name__)
        if self.metrics is not None:
            self.metrics.cameras(points)
        self._restart_crashed()

    def _restart_crashed(self) -> None:
        """A camera host that crashed is brought back by Ray, but its cameras' reading must be started again
        (as must a camera whose reading loop itself failed)."""
        if not self.lock.acquire(blocking=False):
            return  # a change is under way; look again at the next poll
        try:
            dep = self._deployment()
            for camera_id, run in list(dep.runs.items()):
                if not ray.wait([run], timeout=0)[0]:
                    continue
                try:
                    if ray.get(run) is None:  # an adopted camera still running: wait on
                        host = dep.cameras[camera_id].host
                        dep.runs[camera_id] = host.wait_run.remote(camera_id, WAIT_RUN_S)
                    continue  # else it ended on its own: the end of a file that does not loop
                except ray.exceptions.RayError as exc:
                    self.restarts[camera_id] = self.restarts.get(camera_id, 0) + 1
                    log.warning("camera_restarted", site=self.sites.get(camera_id), camera=camera_id,
                                error=type(exc).__name__, restarts=self.restarts[camera_id])
                    dep.runs[camera_id] = dep.cameras[camera_id].run.remote()
            dep.end_closed_hosts()  # hosts emptied while a removed camera's reader was still blocked
        finally:
            self.lock.release()

    def _poll_pool(self, pool: dict[str, Any], *, autoscale: bool) -> None:
        batches, frames = batch_window(self._previous_hist, pool["batch_hist"])
        self._previous_hist = pool["batch_hist"]
        sample = PoolSample(actors=pool["actors"], queued=pool["queued"], batches=batches, frames=frames,
                            max_batch=self.config.inference.max_batch)
        if self.metrics is not None:
            self.metrics.pool(sample.queued, sample.actors, sample.fill)
            self.metrics.pool_faults(pool)
        if not autoscale or self.autoscaler is None:
            return
        if self._resizing is not None and not ray.wait([self._resizing], timeout=0)[0]:
            return  # the last resize still waits for its actors (a GPU node on its way)
        target = self.autoscaler.decide(sample)
        if target != sample.actors:
            log.info("pool_autoscaled", actors=target, previous=sample.actors, queued=sample.queued,
                     fill=round(sample.fill, 2))
            self._request_gpus(target)
            self._resizing = self._deployment().pool.resize.remote(target)

    def _open_event_feed(self) -> None:
        from flux_secu.store import open_store

        self.store = open_store(self.config.store)
        for stored in self.store.incidents():
            self._incident_sites[stored.incident.id] = stored.incident.site
        self._events_after = max((e.seq for e in self.store.events()), default=0)

    def _poll_events(self) -> None:
        rows = []
        for event in self.store.events(after_seq=self._events_after):
            self._events_after = event.seq
            if event.kind == "opened":
                self._incident_sites[event.incident_id] = str(event.data.get("site", ""))
            rows.append((event.kind, self._incident_sites.get(event.incident_id, ""), event.data))
        if self.metrics is not None:
            self.metrics.events(rows)
