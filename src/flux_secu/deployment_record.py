"""What a running deployment keeps in the store, so that a restarted supervisor carries on: pure, no Ray.

The supervisor's constructor arguments (the config it was started with) come back with it when Ray
restarts it; what changed since (cameras added or removed, the pool's size) and where everything runs
(the deployment id that names its actors, the camera hosts and their cameras) is this record, written
through the store's ``put_setting`` after every change. Secrets are never written: a camera's
password is masked in the record, and a restarted supervisor takes the camera's settings from the
host that still runs it (or the config it was started with) before falling back on the record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flux_secu.config import CameraConfig, Config

DEPLOYMENT_KEY = "supervisor:deployment"


@dataclass(frozen=True)
class CameraPlace:
    site: str
    camera: CameraConfig
    host: str
    """The name of the camera host that runs it."""


@dataclass(frozen=True)
class DeploymentRecord:
    deployment_id: str
    running: bool
    pool_actors: int
    hosts_made: int
    cameras: list[CameraPlace] = field(default_factory=list)

    def to_setting(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id, "state": "running" if self.running else "stopped",
            "pool_actors": self.pool_actors, "hosts_made": self.hosts_made,
            # mode json: a SecretStr is written masked, never in clear. Only the fields set: the
            # config's checks refuse an RTSP-only field given for a file, even at its default.
            "cameras": [{"site": p.site, "host": p.host, "config": _dump(p.camera)} for p in self.cameras],
        }

    @classmethod
    def from_setting(cls, data: dict[str, Any]) -> DeploymentRecord:
        cameras = [CameraPlace(str(c["site"]), _camera(c["config"]), str(c["host"])) for c in data["cameras"]]
        return cls(str(data["deployment_id"]), data.get("state") == "running", int(data["pool_actors"]),
                   int(data["hosts_made"]), cameras)


def _dump(camera: CameraConfig) -> dict[str, Any]:
    return camera.model_dump(mode="json", exclude_unset=True)


def _camera(data: dict[str, Any]) -> CameraConfig:
    data = dict(data)
    data.pop("password", None)  # masked in the record: the camera's host or the config has the real one
    return CameraConfig.model_validate(data)


def restored_config(started_with: Config, cameras: list[tuple[str, CameraConfig]]) -> Config:
    """The running config: what the supervisor was started with, with the cameras it runs now
    (``cameras``: (site, camera) in order). A site with none left keeps its cameras of the config."""
    by_site: dict[str, list[CameraConfig]] = {}
    for site_id, camera in cameras:
        by_site.setdefault(site_id, []).append(camera)
    sites = [s.model_copy(update={"cameras": by_site[s.id]}) if by_site.get(s.id) else s
             for s in started_with.sites]
    return started_with.model_copy(update={"sites": sites})
