"""Shared test set-up: loopback-only Ray, paths to the shared assets, a session-wide Ray."""

from __future__ import annotations

import os
import subprocess
import sys
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
    _ensure_ray_token()


def _ensure_ray_token() -> None:
    """Token auth needs a token before the first Ray starts. ``ray.init`` makes one, but a cluster
    started node by node (``ray.cluster_utils.Cluster``) does not: on a fresh machine whose first Ray of
    the run is such a cluster, its GCS would exit at once."""
    if os.environ.get("RAY_AUTH_MODE") != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return
    if Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")).is_file():
        return
    ray_cli = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray_cli), "get-auth-token", "--generate"], check=True, capture_output=True,
                   timeout=120)


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


class RedisServer:
    """A private redis-server on a free loopback port that persists every write before answering
    (append-only file, fsync always), so a test can stop or kill it and start it again on the same
    port and directory, as an operator's restart or a crash would."""

    def __init__(self, directory: Path) -> None:
        import shutil

        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(exe).is_file():
            pytest.fail("redis-server is not installed (make system-deps installs it)")
        self.exe = exe
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it; the first start picks a free port (again if another process took it meanwhile)."""
        import socket
        import subprocess
        import time

        import redis

        for _attempt in range(3):
            if not self.port:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
            else:
                port = self.port
            log_file = (self.dir / "redis.log").open("ab")
            self.proc = subprocess.Popen(
                [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"],
                stdout=log_file, stderr=subprocess.STDOUT,
            )
            log_file.close()
            client = redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=1)
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:  # answers LOADING (a ConnectionError) while it reads its append-only file back
                    client.ping()
                    client.close()
                    self.port = port
                    return
                except redis.ConnectionError:
                    time.sleep(0.02)
            client.close()
            self.stop(kill=True)
            if self.port:  # a restart on a port that must stay the same: no other port will do
                break
        pytest.fail(f"redis-server did not start: see {self.dir / 'redis.log'}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash); waits until the process is gone."""
        import subprocess

        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop or kill it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Opens a store of each kind (the test runs once per kind); every call opens a new store object
    on the same data: a fresh SQLite file, or a prefix of the session's Redis unique to the test."""
    import uuid

    from flux_secu.store import SQLiteStore
    from flux_secu.store.redis import RedisStore

    opened: list[Any] = []
    if request.param == "sqlite":
        path = tmp_path / "store.db"

        def open_store() -> Any:
            opened.append(SQLiteStore(path))
            return opened[-1]
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"test-{uuid.uuid4().hex[:12]}"

        def open_store() -> Any:
            opened.append(RedisStore(server.url, prefix))
            return opened[-1]

    yield open_store
    for store in opened:
        store.close()
