"""The attacks of issue 16 against a real `flux-secu serve`, and what a login flood costs.

The server runs as in production (argon2 with the library's defaults, ``login_concurrency`` 2) on a
SQLite store with a few incidents, behind a "proxy" on loopback (``trusted_proxies``), so that the
flood comes from many client addresses. Each kind of attack is tried a number of times; an attack is
*accepted* when the server did what the attacker wanted (target: 0), and every 5xx is counted
(target: 0). During the login flood two legitimate users log in again and again from their own
addresses: their login latency (median, p95) and the server's peak resident memory are measured.
Last line: one JSON object.

    python benchmarks/attacks.py [--flood 300] [--addresses 30] [--threads 40]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from argon2 import PasswordHasher

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, publish  # noqa: E402

from flux_secu.alerts.ack import make_token  # noqa: E402
from flux_secu.incidents.lifecycle import Transition  # noqa: E402
from flux_secu.rules.incident import Incident, IncidentKind, incident_id  # noqa: E402
from flux_secu.store import SQLiteStore  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"
SECRET = "bench-attacks-secret-0123456789abcdef"
USERS = {"zoe": ("viewer", "zoe-password-1"), "marc": ("operator", "marc-password-2"),
         "admin": ("admin", "admin-password-3")}
FLUX_SECU = ROOT / ".venv" / "bin" / "flux-secu"


class Tally:
    def __init__(self) -> None:
        self.tried: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.server_errors: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, kind: str, status: int, accepted: bool) -> None:
        with self.lock:
            self.tried[kind] += 1
            self.accepted[kind] += int(accepted)
            self.server_errors[kind] += int(status >= 500)

    def result(self) -> dict[str, Any]:
        return {kind: {"tried": self.tried[kind], "accepted": self.accepted[kind],
                       "http_5xx": self.server_errors[kind]} for kind in sorted(self.tried)}


def setup(tmp: Path) -> tuple[Path, dict[str, str]]:
    hasher = PasswordHasher()  # production cost: what a flood makes the server compute
    data = {
        "var_dir": str(tmp / "var"),
        "store": {"path": str(tmp / "var" / "flux-secu.db")},
        "model": {"path": str(ASSETS / "models" / "yolox_nano.onnx"),
                  "labels": str(ASSETS / "models" / "coco80_labels.txt")},
        "notifications": {"dry_run": True, "ack_secret": SECRET},
        "api": {"port": 0, "trusted_proxies": ["127.0.0.1"],
                "users": [{"name": n, "role": r, "password_hash": hasher.hash(p)}
                          for n, (r, p) in USERS.items()]},
        "sites": [{"id": "site-a", "name": "Site A",
                   "cameras": [{"id": "cam-1", "source": "rtsp://127.0.0.1/1"}],
                   "escalation": {"contacts": [{"name": "Astreinte", "channels": ["json://127.0.0.1:9/x"]}]}}],
    }
    config = tmp / "flux.yaml"
    config.write_text(yaml.safe_dump(data))
    store = SQLiteStore(tmp / "var" / "flux-secu.db")
    ids = {}
    now = time.time()
    for i, name in enumerate(("used", "closed", "viewer", "outside")):
        ts = now - 100 + i
        inc = Incident(id=incident_id(IncidentKind.INTRUSION, "cam-1", ts), kind=IncidentKind.INTRUSION,
                       site="site-a", camera="cam-1", label="person", opened_at=ts, score=0.8)
        store.open_incident(inc)
        ids[name] = inc.id
    store.transition(ids["closed"], Transition.CLOSED, now - 50, {})
    outside = tmp / "elsewhere" / ids["outside"] / "snapshot.jpg"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"\xff\xd8secret\xff\xd9")
    store.record_event(ids["outside"], "evidence", now, {"file": "snapshot.jpg", "path": str(outside)},
                       key="evidence:snapshot.jpg")
    store.close()
    return config, ids


def forged(payload: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(payload)}.{b64(hmac.new(os.urandom(16), payload, hashlib.sha256).digest())}"


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def raw_status(base: str, request: bytes) -> int:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        head = sock.recv(64)
    return int(head.split()[1]) if head.startswith(b"HTTP/") else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", type=int, default=300, help="wrong logins in the flood")
    parser.add_argument("--addresses", type=int, default=30, help="client addresses they come from")
    parser.add_argument("--threads", type=int, default=40, help="attacker connections at once")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flux-secu-bench-attacks-"))
    config, ids = setup(tmp)
    proc = subprocess.Popen([str(FLUX_SECU), "serve", str(config)], stderr=subprocess.PIPE, text=True)
    tally = Tally()
    try:
        assert proc.stderr is not None
        base = proc.stderr.readline().split()[1].rstrip("/")
        while True:
            try:
                httpx.get(base + "/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)

        def client(address: str, **kw: Any) -> httpx.Client:
            headers = {"X-Forwarded-For": address, **kw.pop("headers", {})}
            return httpx.Client(base_url=base, timeout=60, headers=headers, **kw)

        def login(name: str, address: str) -> str:
            with client(address) as c:
                answer = c.post("/api/login", json={"name": name, "password": USERS[name][1]})
                return str(answer.json()["token"])

        # Acknowledgement links: forged (huge numbers, old formats), reused, of a closed incident.
        with client("10.1.0.1") as c:
            for i in range(50):
                payload = b"x|y|" + b"9" * (10 + i * 10) if i % 2 else b'{"v":2,"i":"x","c":"y","e":1}'
                bad = forged(payload)
                answer = c.post(f"/ack/{bad}")
                tally.add("ack_forged", answer.status_code, answer.status_code == 200)
            link = make_token(SECRET.encode(), ids["used"], "Astreinte", time.time() + 600)
            first = c.post(f"/ack/{link}")
            assert first.status_code == 200, first.text  # the legitimate first use
            for _ in range(20):
                answer = c.post(f"/ack/{link}")
                tally.add("ack_reuse", answer.status_code, answer.status_code == 200)
            closed = make_token(SECRET.encode(), ids["closed"], "Astreinte", time.time() + 600)
            for _ in range(10):
                answer = c.post(f"/ack/{closed}")
                tally.add("ack_closed_incident", answer.status_code, answer.status_code == 200)
        viewer = login("zoe", "10.1.0.2")
        as_viewer = {"Authorization": f"Bearer {viewer}", "Content-Type": "application/json"}
        with client("10.1.0.2", headers=as_viewer) as c:
            for _ in range(10):
                answer = c.post(f"/api/incidents/{ids['viewer']}/acknowledge", json={})
                tally.add("viewer_acknowledges", answer.status_code, answer.status_code == 200)
            for _ in range(10):
                answer = c.get(f"/api/incidents/{ids['outside']}/evidence/snapshot.jpg")
                tally.add("evidence_outside_dir", answer.status_code, answer.status_code == 200)
        operator = login("marc", "10.1.0.3")
        with client("10.1.0.3", cookies={"flux_session": operator}) as c:
            for i in range(30):
                headers = [{"Origin": "https://evil.example.org", "Content-Type": "application/json"},
                           {"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"},
                           {"Content-Type": "text/plain"}][i % 3]
                answer = c.post("/api/sites/site-a/override", content=b'{"armed": false, "for_s": 600}',
                                headers=headers)
                tally.add("csrf_disarm", answer.status_code, answer.is_success)
            c.post("/api/logout", headers={"Content-Type": "application/json"})
        with client("10.1.0.3", headers={"Authorization": f"Bearer {operator}"}) as c:
            for _ in range(10):
                answer = c.get("/api/me")
                tally.add("session_after_logout", answer.status_code, answer.status_code == 200)
        for _ in range(10):
            status = raw_status(base, b"POST /api/login HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n")
            tally.add("oversized_body", status, status != 413)

        # The login flood, with two legitimate users logging in from their own addresses meanwhile.
        rss_before, _ = rss_kib(proc.pid)
        peak = [rss_before]
        flooding = threading.Event()
        flooding.set()
        legit_ms: list[float] = []
        legit_status: Counter[int] = Counter()

        def sample() -> None:
            while flooding.is_set():
                peak.append(rss_kib(proc.pid)[0])
                time.sleep(0.05)

        def legitimate(name: str, address: str) -> None:
            with client(address) as c:
                while flooding.is_set():
                    t0 = time.perf_counter()
                    body = {"name": name, "password": USERS[name][1]}
                    status = c.post("/api/login", json=body).status_code
                    legit_ms.append((time.perf_counter() - t0) * 1e3)
                    legit_status[status] += 1
                    time.sleep(0.5)

        todo = list(range(args.flood))
        todo_lock = threading.Lock()

        def attacker() -> None:
            with client("0.0.0.0") as c:
                while True:
                    with todo_lock:
                        if not todo:
                            return
                        i = todo.pop()
                    address = f"10.2.{i % args.addresses // 250}.{i % args.addresses % 250 + 1}"
                    name = ("marc", "admin", "zoe", f"nobody{i}")[i % 4]
                    answer = c.post("/api/login", json={"name": name, "password": f"guess-{i}"},
                                    headers={"X-Forwarded-For": address})
                    tally.add("login_flood", answer.status_code, answer.status_code == 200)

        helpers = [threading.Thread(target=sample),
                   threading.Thread(target=legitimate, args=("marc", "10.3.0.1")),
                   threading.Thread(target=legitimate, args=("admin", "10.3.0.2"))]
        for t in helpers:
            t.start()
        t0 = time.monotonic()
        attackers = [threading.Thread(target=attacker) for _ in range(args.threads)]
        for t in attackers:
            t.start()
        for t in attackers:
            t.join()
        flood_s = time.monotonic() - t0
        flooding.clear()
        for t in helpers:
            t.join()
        _, hwm = rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    attacks = tally.result()
    legit_ms.sort()
    result = {
        "attacks": attacks,
        "tried": sum(a["tried"] for a in attacks.values()),
        "accepted": sum(a["accepted"] for a in attacks.values()),
        "http_5xx": sum(a["http_5xx"] for a in attacks.values()),
        "flood": {"wrong_logins": args.flood, "addresses": args.addresses, "threads": args.threads,
                  "seconds": round(flood_s, 1)},
        "server_rss_mib": {"before_flood": round(rss_before / 1024, 1),
                           "peak_in_flood": round(max(peak) / 1024, 1),
                           "high_water_mark": round(hwm / 1024, 1)},
        "legitimate_login": {"attempts": len(legit_ms), "statuses": dict(legit_status),
                             "median_ms": round(statistics.median(legit_ms), 1) if legit_ms else None,
                             "p95_ms": round(legit_ms[min(len(legit_ms) - 1, int(0.95 * len(legit_ms)))], 1)
                             if legit_ms else None},
        "machine": describe(),
    }
    publish("attacks", result)


if __name__ == "__main__":
    main()
