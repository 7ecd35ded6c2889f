"""Shared test set-up: loopback-only Ray, paths to the shared assets, a session-wide Ray."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_secu.config import Config, parse_config

# Pinned before Ray is imported anywhere: every Ray listener on 127.0.0.1, predictable auth.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_AUTH_MODE", "token")

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
MODEL = ASSETS / "models" / "yolox_nano.onnx"
LABELS = ASSETS / "models" / "coco80_labels.txt"
LOWLIGHT_CLIP = ASSETS / "videos" / "synthetic_lowlight_one-by-one-person_f0-239.mp4"
ONE_BY_ONE_CLIP = ASSETS / "videos" / "one-by-one-person-detection.mp4"
FLUX_SECU = ROOT / ".venv" / "bin" / "flux-secu"


def pytest_configure(config: pytest.Config) -> None:
    if not MODEL.is_file():
        raise pytest.UsageError(f"shared assets not found at {ASSETS} (../shared beside the repository)")


def site_yaml(*, opening_hours: str = "{}", camera_source: Path = LOWLIGHT_CLIP, var_dir: str = "var",
              extra_site: str = "") -> str:
    """A one-site, one-camera config with file speakers, written for tests."""
    return f"""
timezone: Europe/Paris
var_dir: {var_dir}
model:
  path: {MODEL}
  labels: {LABELS}
  score_threshold: 0.25
store:
  path: {var_dir}/flux-secu.db
rules:
  min_score: 0.25
  recheck_after_s: 4
notifications:
  dry_run: true
sites:
  - id: site-test
    name: Site de test
    opening_hours: {opening_hours}
    cameras:
      - id: cam-test
        source: {camera_source}
        detect_fps: 5
    speakers:
      - id: hp-test
    escalation:
      contacts:
        - name: Astreinte
          channels: ["json://127.0.0.1:9/${{NOTIFY_TOKEN_FOR_TESTS}}"]
{extra_site}"""


@pytest.fixture()
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    path = tmp_path / "flux.yaml"
    path.write_text(site_yaml(opening_hours='{mon: ["08:30-18:00"], tue: ["08:30-18:00"], '
                                            'wed: ["08:30-12:00", "13:30-18:00"]}'))
    return path


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    from flux_secu.actors.graph import init_local_ray

    init_local_ray(num_cpus=2, object_store_mib=300)
    yield
    ray.shutdown()


@pytest.fixture()
def mosquitto_broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A private Mosquitto broker on a free loopback port: ``(host, port)``; stopped after the test."""
    import shutil
    import socket
    import subprocess
    import time

    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).is_file():
        pytest.fail("mosquitto is not installed (make system-deps installs it)")
    for _attempt in range(3):  # the free port may be taken between the probe and the broker's bind
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        conf = tmp_path / f"mosquitto-{port}.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "log_dest stderr\n")
        log_file = (tmp_path / f"mosquitto-{port}.log").open("wb")
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        else:
            proc.kill()
            proc.wait()
            log_file.close()
            continue
        break
    else:
        pytest.fail("mosquitto did not start: " + log_file.name)
    try:
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def build_config(tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Config:
    """The test config as a validated :class:`Config`, after ``edit`` changed its raw YAML data."""
    os.environ.setdefault("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    data = yaml.safe_load(site_yaml())
    if edit is not None:
        edit(data)
    return parse_config(data, tmp_path)
