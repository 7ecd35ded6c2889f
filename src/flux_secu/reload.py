"""What a running deployment must do to match a new config: pure, no Ray.

A running deployment can add, remove and restart cameras and resize its inference pool without
touching anything else. Every other difference (the model, the store, a site's calendar, speakers or
on-call chain, a new site) needs actors rebuilt that every camera depends on: such a reload is
refused, naming what differs, and the deployment keeps running as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flux_secu.config import CameraConfig, Config


class ReloadError(Exception):
    """The new config differs in ways a running deployment cannot take; ``str()`` names them."""


@dataclass(frozen=True)
class ReloadPlan:
    add: list[tuple[str, CameraConfig]] = field(default_factory=list)
    """(site id, camera) of cameras the new config adds."""
    remove: list[str] = field(default_factory=list)
    restart: list[tuple[str, CameraConfig]] = field(default_factory=list)
    """Cameras whose settings (source, zones, site, ...) changed: stopped and started again."""
    unchanged: list[str] = field(default_factory=list)
    pool_actors: int | None = None
    """New size of the inference pool, when ``inference.actors`` changed."""
    not_applicable: list[str] = field(default_factory=list)
    """Settings that differ and that only a restart of the deployment applies."""

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove or self.restart or self.pool_actors is not None)

    def summary(self) -> dict[str, Any]:
        return {
            "added": [c.id for _, c in self.add], "removed": list(self.remove),
            "restarted": [c.id for _, c in self.restart], "unchanged": list(self.unchanged),
            "pool_actors": self.pool_actors,
        }


# Settings of the inference section that a running pool follows without being rebuilt.
LIVE_INFERENCE_FIELDS = frozenset({"actors", "autoscale"})


def cameras_by_id(config: Config) -> dict[str, tuple[str, CameraConfig]]:
    return {camera.id: (site.id, camera) for site in config.sites for camera in site.cameras}


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """The changes that turn the deployment of ``old`` into that of ``new``; cameras keep their order."""
    not_applicable = _other_differences(old, new)
    before, after = cameras_by_id(old), cameras_by_id(new)
    plan = ReloadPlan(not_applicable=not_applicable)
    for camera_id, (site_id, camera) in after.items():
        if camera_id not in before:
            plan.add.append((site_id, camera))
        elif before[camera_id] != (site_id, camera):
            plan.restart.append((site_id, camera))
        else:
            plan.unchanged.append(camera_id)
    plan.remove.extend(camera_id for camera_id in before if camera_id not in after)
    if new.inference.actors != old.inference.actors:
        object.__setattr__(plan, "pool_actors", new.inference.actors)
    return plan


def check_applicable(plan: ReloadPlan) -> None:
    if plan.not_applicable:
        raise ReloadError(
            "these settings changed and only a restart of the deployment applies them (nothing was "
            f"changed): {', '.join(plan.not_applicable)}"
        )


def _other_differences(old: Config, new: Config) -> list[str]:
    """Dotted names of the differing settings other than cameras and the live pool settings."""
    differing: list[str] = []
    old_data = old.model_dump(exclude={"sites", "inference"})
    new_data = new.model_dump(exclude={"sites", "inference"})
    differing.extend(key for key in old_data if old_data[key] != new_data[key])
    old_inf = old.inference.model_dump(exclude=set(LIVE_INFERENCE_FIELDS))
    new_inf = new.inference.model_dump(exclude=set(LIVE_INFERENCE_FIELDS))
    differing.extend(f"inference.{key}" for key in old_inf if old_inf[key] != new_inf[key])
    old_sites = {s.id: s.model_dump(exclude={"cameras"}) for s in old.sites}
    new_sites = {s.id: s.model_dump(exclude={"cameras"}) for s in new.sites}
    for site_id in old_sites.keys() | new_sites.keys():
        if site_id not in old_sites:
            differing.append(f"sites[{site_id}] (new site)")
        elif site_id not in new_sites:
            differing.append(f"sites[{site_id}] (site removed)")
        else:
            differing.extend(
                f"sites[{site_id}].{key}" for key in old_sites[site_id]
                if old_sites[site_id][key] != new_sites[site_id][key]
            )
    return sorted(differing)


def with_camera(config: Config, site_id: str, camera: CameraConfig) -> Config:
    """``config`` with ``camera`` added to site ``site_id`` (ValueError naming the problem otherwise)."""
    if camera.id in cameras_by_id(config):
        raise ValueError(f"camera {camera.id!r} already exists")
    if site_id not in {s.id for s in config.sites}:
        known = ", ".join(s.id for s in config.sites)
        raise ValueError(f"unknown site {site_id!r} (known: {known})")
    sites = [s.model_copy(update={"cameras": [*s.cameras, camera]}) if s.id == site_id else s
             for s in config.sites]
    return config.model_copy(update={"sites": sites})


def without_camera(config: Config, camera_id: str) -> Config:
    """``config`` without camera ``camera_id``; a site keeps at least one camera (the schema says so)."""
    if camera_id not in cameras_by_id(config):
        known = ", ".join(cameras_by_id(config))
        raise ValueError(f"unknown camera {camera_id!r} (known: {known})")
    sites = []
    for site in config.sites:
        cameras = [c for c in site.cameras if c.id != camera_id]
        if not cameras:
            raise ValueError(f"camera {camera_id!r} is the last one of site {site.id!r}: a site needs one")
        sites.append(site.model_copy(update={"cameras": cameras}))
    return config.model_copy(update={"sites": sites})
