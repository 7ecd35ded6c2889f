"""The Grafana dashboard against the real Prometheus (Debian's ``prometheus``) scraping ``flux-secu run``.

Every query of ``cluster/grafana-dashboard.json`` must return a series while a short demo runs, even for
what has not happened yet (no acknowledgement): an operator's panel shows 0, never "No data".
Prometheus runs as a process of the test's own, on a free loopback port with a temporary config and data
directory; the system's prometheus service (if any) is neither used nor started.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import FLUX_SECU, ROOT, site_yaml
from .test_cluster_up import free_ports

pytestmark = pytest.mark.slow

SCRAPE_S = 2


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query) of every target, with the ``$site`` variable set to "All" as Grafana does."""
    dashboard = json.loads((ROOT / "cluster" / "grafana-dashboard.json").read_text())
    all_sites = next(v["allValue"] for v in dashboard["templating"]["list"] if v["name"] == "site")
    return [(p["title"], t["expr"].replace("$site", all_sites))
            for p in dashboard["panels"] for t in p.get("targets", [])]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            return json.loads(response.read()) if path.startswith("/api/") else response.read()

    def series(self, query: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=query)
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])


@pytest.fixture()
def prometheus_and_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Prometheus]:
    exe = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(exe).is_file():
        pytest.fail("prometheus is not installed (make system-deps installs Debian's package)")
    metrics_port, web_port = free_ports(2)
    monkeypatch.setenv("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    config = tmp_path / "demo.yaml"
    # A closed site whose camera loops a clip with a person: incidents, warnings and notifications
    # happen; acknowledgements do not (nobody acknowledges), which is the case the dashboard must show as 0.
    config.write_text(site_yaml(var_dir=str(tmp_path / "var")).replace(
        "detect_fps: 5", "detect_fps: 5\n        loop: true"))
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        f"global: {{scrape_interval: {SCRAPE_S}s, evaluation_interval: {SCRAPE_S}s}}\n"
        "scrape_configs:\n"
        f"  - job_name: flux-secu\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
    with (tmp_path / "prometheus.log").open("wb") as prom_log, (tmp_path / "run.log").open("wb") as run_log:
        prom = subprocess.Popen(
            [exe, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{web_port}"], stdout=prom_log, stderr=subprocess.STDOUT)
        run = subprocess.Popen(
            [str(FLUX_SECU), "run", str(config), "--json-logs", "--metrics-port", str(metrics_port)],
            stdout=run_log, stderr=subprocess.STDOUT)
        try:
            yield Prometheus(web_port)
        finally:
            assert stop(run, signal.SIGINT, timeout=60) == 0, (tmp_path / "run.log").read_text()[-3000:]
            stop(prom)


def test_every_dashboard_query_returns_a_series(prometheus_and_demo: Prometheus) -> None:
    prom = prometheus_and_demo
    queries = dashboard_queries()
    assert len(queries) >= 20
    # Ray starts, the actors start, Ray's agent exports what they recorded a few seconds later, and a
    # rate() needs two scrapes of it: wait for all of that, not for a fixed time.
    deadline = time.monotonic() + 180
    while True:
        try:
            missing = [(title, q) for title, q in queries if not prom.series(q)]
        except OSError:  # Prometheus still starting
            missing = queries
        if not missing:
            break
        assert time.monotonic() < deadline, missing
        time.sleep(SCRAPE_S)
    # The target really is flux-secu's endpoint, scraped healthy, and the zeros are zeros, not leftovers.
    (target,) = prom.get("/api/v1/targets")["data"]["activeTargets"]
    assert target["health"] == "up", target
    acks = prom.series("ray_flux_secu_alert_acknowledgements_total")
    assert {s["metric"]["site"] for s in acks} == {"site-test"}
    assert all(float(s["value"][1]) == 0 for s in acks), acks
    kinds = {s["metric"]["kind"] for s in prom.series("ray_flux_secu_incidents_total")}
    assert {"intrusion", "panic", "camera_fault"} <= kinds, kinds
