"""How fast the operator API answers on a store that has seen a busy month, over a real socket.

A SQLite store with ``--incidents`` incidents (10 events each, one snapshot each), the API served by
uvicorn as ``flux-secu serve`` does, one client: milliseconds per request (median and p95) for what the
web interface polls (feed, cameras, snapshot) and what the on-call person opens (incident, evidence),
and the login (argon2 with the library's defaults). Last line: one JSON object.

    python benchmarks/api.py [--incidents 2000] [--requests 50]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, publish  # noqa: E402

from flux_secu.api.actor import ApiServer  # noqa: E402
from flux_secu.api.app import create_app  # noqa: E402
from flux_secu.api.auth import hash_password  # noqa: E402
from flux_secu.api.backend import StoreBackend  # noqa: E402
from flux_secu.config import parse_config  # noqa: E402
from flux_secu.rules.incident import Incident, IncidentKind, incident_id  # noqa: E402
from flux_secu.store import SQLiteStore  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"
PASSWORD = "bench-password-1"


def config(tmp: Path) -> Any:
    return parse_config(yaml.safe_load(f"""
var_dir: {tmp / "var"}
model: {{path: {ASSETS / "models" / "yolox_nano.onnx"}, labels: {ASSETS / "models" / "coco80_labels.txt"}}}
store: {{path: {tmp / "bench.db"}}}
notifications: {{dry_run: true, ack_secret: bench-secret-of-some-length-32-characters}}
api: {{port: 0, users: [{{name: bench, role: admin, password_hash: "{hash_password(PASSWORD)}"}}]}}
sites:
  - id: site-a
    name: Site A
    cameras: [{{id: cam-1, source: rtsp://127.0.0.1/1}}, {{id: cam-2, source: rtsp://127.0.0.1/2}}]
    escalation: {{contacts: [{{name: Astreinte, channels: ["json://127.0.0.1:9/x"]}}]}}
"""), tmp)


def fill(store: SQLiteStore, tmp: Path, incidents: int) -> str:
    jpeg = (ASSETS / "images" / "bus.jpg").read_bytes() if (ASSETS / "images" / "bus.jpg").is_file() \
        else b"\xff\xd8" + bytes(50_000) + b"\xff\xd9"
    start = time.time() - 30 * 86400
    last = ""
    for i in range(incidents):
        ts = start + i * 30 * 86400 / incidents
        camera = f"cam-{1 + i % 2}"
        inc = Incident(id=incident_id(IncidentKind.INTRUSION, camera, ts), kind=IncidentKind.INTRUSION,
                       site="site-a", camera=camera, label="person", opened_at=ts, score=0.8)
        store.open_incident(inc)
        for k in ("confirmed", "warning", "recheck", "escalated", "notification", "notification:2",
                  "notification:3", "acknowledged"):
            store.record_event(inc.id, k.split(":")[0], ts + 1, {"by": "x", "contact": "Astreinte"}, key=k)
        path = tmp / "var" / "evidence" / inc.id / "snapshot.jpg"  # the config's evidence dir
        path.parent.mkdir(parents=True)
        path.write_bytes(jpeg)
        store.record_event(inc.id, "evidence", ts + 2, {"file": "snapshot.jpg", "path": str(path),
                                                        "sha256": hashlib.sha256(jpeg).hexdigest()},
                           key="evidence:snapshot.jpg")
        last = inc.id
    return last


def timed(client: httpx.Client, method: str, url: str, n: int, **kwargs: Any) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        answer = client.request(method, url, **kwargs)
        samples.append((time.perf_counter() - t0) * 1e3)
        answer.raise_for_status()
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2)}


def write_cost(store: SQLiteStore, mode: str, n: int) -> dict[str, float]:
    store._db.execute(f"PRAGMA synchronous={mode}")
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        store.append_audit(time.time(), "bench", "bench_write", str(i), {})
        samples.append((time.perf_counter() - t0) * 1e3)
    store._db.execute("PRAGMA synchronous=FULL")
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3),
            "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flux-secu-bench-api-"))
    cfg = config(tmp)
    store = SQLiteStore(cfg.store.path)
    t0 = time.perf_counter()
    last = fill(store, tmp, args.incidents)
    print(f"store filled: {args.incidents} incidents in {time.perf_counter() - t0:.1f} s", flush=True)
    secret = b"bench-secret-of-some-length-32-characters"
    server = ApiServer(create_app(cfg, store, StoreBackend(store), secret), "127.0.0.1", 0)
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            login = timed(client, "POST", "/api/login", 5, json={"name": "bench", "password": PASSWORD})
            token = client.post("/api/login", json={"name": "bench", "password": PASSWORD}).json()["token"]
            client.cookies.clear()
            h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            n = args.requests
            result = {
                "incidents": args.incidents,
                "login": login,
                "feed_50": timed(client, "GET", "/api/incidents?limit=50", n, headers=h),
                "feed_filtered_site_kind": timed(client, "GET", "/api/incidents?site=site-a&kind=intrusion"
                                                 "&state=open&limit=50", n, headers=h),
                "incident_detail": timed(client, "GET", f"/api/incidents/{last}", n, headers=h),
                "evidence_snapshot": timed(client, "GET", f"/api/incidents/{last}/evidence/snapshot.jpg", n,
                                           headers=h),
                "cameras": timed(client, "GET", "/api/cameras", n, headers=h),
                "camera_snapshot": timed(client, "GET", "/api/cameras/cam-2/snapshot.jpg", n, headers=h),
                "acknowledge": timed(client, "POST", f"/api/incidents/{last}/acknowledge", n, headers=h),
                "export_zip": timed(client, "GET", f"/api/incidents/{last}/export", 10, headers=h),
                # The incident log's durability: one audit write (a transaction) per mode.
                "audit_write_synchronous": {mode: write_cost(store, mode, n) for mode in ("FULL", "NORMAL")},
                "requests_each": n,
                "machine": describe(),
            }
    finally:
        server.stop()
        store.close()
    publish("api", result)


if __name__ == "__main__":
    main()
