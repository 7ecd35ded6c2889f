"""Pure: the deployment record a restarted supervisor adopts (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flux_secu.deployment_record import CameraPlace, DeploymentRecord, restored_config

from .conftest import build_config


def test_the_record_round_trips_through_json_without_the_camera_password(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        base = d["sites"][0]["cameras"][0]
        d["sites"][0]["cameras"].append(dict(base, id="cam-ip", source="rtsp://10.0.0.9/stream",
                                             username="viewer", password="hunter2-secret"))

    config = build_config(tmp_path, edit)
    site = config.sites[0]
    record = DeploymentRecord("dep123", True, 3, 2, [CameraPlace(site.id, c, f"host-{i}")
                                                    for i, c in enumerate(site.cameras)])
    text = json.dumps(record.to_setting())
    assert "hunter2-secret" not in text
    back = DeploymentRecord.from_setting(json.loads(text))
    assert (back.deployment_id, back.running, back.pool_actors, back.hosts_made) == ("dep123", True, 3, 2)
    assert [(p.site, p.camera.id, p.host) for p in back.cameras] == [
        ("site-test", "cam-test", "host-0"), ("site-test", "cam-ip", "host-1")]
    assert back.cameras[0].camera == site.cameras[0]
    assert back.cameras[1].camera.password is None and back.cameras[1].camera.username == "viewer"


def test_the_running_config_is_the_started_one_with_the_cameras_of_now(tmp_path: Path) -> None:
    config = build_config(tmp_path)
    base = config.sites[0].cameras[0]
    added = base.model_copy(update={"id": "cam-added"})
    running = restored_config(config, [("site-test", base), ("site-test", added)])
    assert [c.id for c in running.sites[0].cameras] == ["cam-test", "cam-added"]
    assert running.model_copy(update={"sites": config.sites}) == config  # nothing else changed
