"""Faults against the incident lifecycle's effects: N intrusions escalated through the real site alerts
process while it is killed and the store refuses writes, at random (seeded). Every notification due is
counted at a real loopback HTTP receiver (apprise ``json://``).

Method
------
- A Redis store (a private ``redis-server`` on loopback, append-only, fsync always) and the real
  ``SiteAlerts`` Ray actor with one site whose chain has two contacts (one channel each), an
  acknowledgement timeout of ``--step`` seconds and one round: each intrusion is due exactly two
  notifications, nobody acknowledges.
- Intrusions are requested as the rules request them: the incident opened in the store, the
  escalation recorded as an intent, then the call (``request_escalation``), one every ``--every`` s.
- Meanwhile, every ``--fault-every`` s, a seeded random fault: the site alerts process killed (Ray
  restarts it: the calls in flight are lost, the chains resume from the store, lost calls are swept
  from the outbox), or Redis refusing every write for a moment (``CONFIG SET maxmemory 1``: each write
  fails at once with an out-of-memory error, as a full disk would).
- Then the chains are left to finish, and the receipts are compared with what was due:
  ``received`` (distinct incident and contact pairs), ``duplicated`` (receipts beyond the first),
  ``lost`` (due, never received).

There is no bare model in this benchmark: it measures what is delivered, not speed, so the usual
ratio to the model does not apply; ``machine`` says where it ran.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/notify_receiver.py

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

from machine import describe, publish

from tests.notify_receiver import Receiver

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--intrusions", type=int, default=20)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between two intrusions")
    parser.add_argument("--step", type=float, default=3.0, help="acknowledgement timeout of each contact")
    parser.add_argument("--fault-every", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()

    import ray
    import redis
    import yaml

    from flux_secu.actors.alerting import request_escalation
    from flux_secu.actors.graph import init_local_ray
    from flux_secu.actors.site_alerts import SiteAlerts
    from flux_secu.config import parse_config
    from flux_secu.rules.incident import Incident, IncidentKind
    from flux_secu.store import open_store

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="flux-secu-faults-"))
    server, port = start_redis(work)
    admin = redis.Redis(port=port)
    receiver = Receiver()
    contacts = ["Alice", "Bea"]
    config = parse_config(yaml.safe_load(f"""
timezone: Europe/Paris
var_dir: {work}/var
model: {{path: {ASSETS}/models/yolox_nano.onnx, labels: {ASSETS}/models/coco80_labels.txt}}
store: {{kind: redis, url: "redis://127.0.0.1:{port}/0"}}
notifications: {{dry_run: false, public_url: "https://flux.example.org"}}
sites:
  - id: site-bench
    name: Site du banc d'essai
    opening_hours: {{}}
    cameras: [{{id: cam-1, source: {ASSETS}/videos/one-by-one-person-detection.mp4}}]
    speakers: [{{id: hp-1}}]
    escalation:
      ack_timeout_s: {args.step}
      rounds: 1
      report_at: null
      contacts:
""" + "".join(f"        - {{name: {c}, channels: [\"json://127.0.0.1:{receiver.port}/{c}\"]}}\n"
              for c in contacts)), work)
    init_local_ray(num_cpus=2)
    store = open_store(config.store)
    host = SiteAlerts.remote(config.sites, config)
    _, escalations = ray.get(host.roles.remote())
    role = escalations["site-bench"]
    faults: Counter[str] = Counter()
    incidents: list[str] = []
    started = time.time()
    next_fault = started + args.fault_every
    try:
        for n in range(args.intrusions):
            incident = Incident(f"intrusion-cam-1-{n}", IncidentKind.INTRUSION, "site-bench", "cam-1",
                                "person", time.time())
            for attempt in range(100):  # the rules retry a refused write too (their next frame)
                try:
                    store.open_incident(incident)
                    request_escalation(store, role, incident, "Toujours présent.")
                    break
                except redis.ResponseError:
                    faults["rules_write_refused"] += 1
                    time.sleep(0.1 * (attempt + 1))
            incidents.append(incident.id)
            time.sleep(args.every)
            if time.time() >= next_fault:
                next_fault = time.time() + args.fault_every
                if rng.random() < 0.5:
                    ray.kill(host, no_restart=False)
                    faults["site_alerts_killed"] += 1
                else:
                    admin.config_set("maxmemory", 1)
                    admin.config_set("maxmemory-policy", "noeviction")
                    time.sleep(rng.uniform(0.2, 1.0))
                    admin.config_set("maxmemory", 0)
                    faults["store_writes_refused"] += 1
        # Every chain ends args.step seconds after it started; retries and sweeps take a few more.
        due = {(i, c) for i in incidents for c in contacts}
        deadline = time.time() + args.step * 2 + 90
        while time.time() < deadline:
            got = {(i, c) for i in incidents for c in contacts for p, b, _ in receiver.posts
                   if p == f"/{c}" and i in b["message"]}
            if got >= due:
                break
            time.sleep(0.5)
        time.sleep(args.step + 3)  # anything sent twice would arrive by now
    finally:
        ray.kill(host, no_restart=True)
        receiver.close()
        server.terminate()
    receipts: Counter[tuple[str, str]] = Counter()
    for path, body, _ in receiver.posts:
        for i in incidents:
            if f"Incident {i}." in body["message"]:
                receipts[(i, path.strip("/"))] += 1
    received = {k for k in receipts if k in due}
    result: dict[str, Any] = {
        "benchmark": "escalation_faults", "machine": describe(), "seed": args.seed,
        "intrusions": len(incidents), "faults": dict(faults),
        "escalated_as_due": sum(all((i, c) in received for c in contacts) for i in incidents),
        "notifications_expected": len(due), "notifications_received": len(received),
        "notifications_duplicated": sum(n - 1 for n in receipts.values() if n > 1),
        "notifications_lost": len(due - received),
        "wall_s": round(time.time() - started, 1),
    }
    shutil.rmtree(work, ignore_errors=True)
    publish("escalation_faults", result)


if __name__ == "__main__":
    main()
