"""ApiActor: hosts the API (uvicorn) inside the deployment, with handles to the pipeline's actors.

An acknowledgement goes to the incident site's ``Escalation.acknowledge``, so the chain stops at
once; the panic webhook goes to ``PanicIngressActor.submit`` (one verifier, one replay memory for
MQTT and HTTP); camera snapshots and stats come from the camera actors.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import ray
import structlog
import uvicorn
from ray.exceptions import RayError

from flux_secu.alerts.ack import load_secret
from flux_secu.api.app import create_app
from flux_secu.api.backend import StoreBackend
from flux_secu.config import Config
from flux_secu.logs import configure_from_env
from flux_secu.rules.incident import Incident
from flux_secu.store import open_store
from flux_secu.store.base import Store

log = structlog.get_logger("flux_secu.api")

CALL_TIMEOUT_S = 5.0
SNAPSHOT_TIMEOUT_S = 2.0


class RayBackend:
    def __init__(self, store: Store, escalations: Mapping[str, Any], ingress: Any = None) -> None:
        self.store = store
        self.escalations = dict(escalations)
        self.ingress = ingress
        self.cameras: dict[str, Any] = {}

    def acknowledge(self, incident: Incident, by: str, via: str) -> bool:
        actor = self.escalations.get(incident.site)
        if actor is not None:
            try:
                return bool(ray.get(actor.acknowledge.remote(incident.id, by, via), timeout=CALL_TIMEOUT_S))
            except RayError as exc:
                log.error("api_acknowledge_via_store", incident=incident.id, error=type(exc).__name__)
        # A site no longer configured, or its escalation actor down or restarting: the acknowledgement is
        # written to the store all the same, where the (restarted) actor finds it and stops the chain.
        return StoreBackend(self.store).acknowledge(incident, by, via)

    def camera_stats(self, camera_id: str) -> dict[str, Any] | None:
        actor = self.cameras.get(camera_id)
        if actor is None:
            return None
        try:
            return dict(ray.get(actor.stats.remote(), timeout=SNAPSHOT_TIMEOUT_S))
        except RayError:
            return None

    def latest_jpeg(self, camera_id: str) -> bytes | None:
        actor = self.cameras.get(camera_id)
        if actor is None:
            return None
        try:
            method = actor.latest_jpeg
        except AttributeError:  # a camera actor without live snapshots
            return None
        try:
            jpeg = ray.get(method.remote(), timeout=SNAPSHOT_TIMEOUT_S)
        except RayError:
            return None
        return bytes(jpeg) if jpeg else None

    def panic(self, site: str, raw: bytes, origin: str) -> tuple[int, dict[str, Any]] | None:
        if self.ingress is None:
            return None
        try:
            status, answer = ray.get(self.ingress.submit.remote(site, raw, "http", origin),
                                     timeout=CALL_TIMEOUT_S * 3)
        except RayError:
            return 503, {"status": "error", "reason": "ingress_unavailable"}
        return int(status), dict(answer)

    def ready(self) -> dict[str, bool]:
        checks = {}
        for site, actor in self.escalations.items():
            try:
                ray.get(actor.ready.remote(), timeout=CALL_TIMEOUT_S)
                checks[f"escalation:{site}"] = True
            except RayError:
                checks[f"escalation:{site}"] = False
        return checks


class ApiServer:
    """uvicorn on a socket bound here (port 0 picks a free one), served on a thread."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="api-http", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {self.host}:{self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=4)
class ApiActor:
    def __init__(self, config: Config, escalations: dict[str, Any], ingress: Any = None) -> None:
        configure_from_env()
        assert config.api is not None
        self.store = open_store(config.store)
        self.backend = RayBackend(self.store, escalations, ingress)
        secret = load_secret(config.notifications.ack_secret, config.var_dir)
        app = create_app(config, self.store, self.backend, secret, panic_webhook=ingress is not None)
        self.server = ApiServer(app, config.api.host, config.api.port)
        self.server.start()
        log.info("api_listening", host=self.server.host, port=self.server.port)

    def ready(self) -> dict[str, Any]:
        return {"host": self.server.host, "port": self.server.port}

    def add_camera(self, camera_id: str, actor: Any) -> None:
        self.backend.cameras[camera_id] = actor

    def stop(self) -> None:
        self.server.stop()
