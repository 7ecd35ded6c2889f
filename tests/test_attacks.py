"""Attacks on a real `flux-secu serve`, over a real socket (httpx, raw sockets where HTTP clients would
not send what an attacker sends): each test is one defect of issue 16 that must stay fixed.

The server runs once for the module on a SQLite store seeded before it starts; every test uses its
own incident and its own client address (``X-Forwarded-For`` from the trusted loopback proxy), so the
tests do not depend on each other's order.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import io
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from flux_secu.alerts.ack import make_token
from flux_secu.alerts.notify import compose
from flux_secu.incidents.lifecycle import Transition
from flux_secu.store import SQLiteStore

from .api_helpers import CHEAP, JPEG, PASSWORDS, ROLES, add_incident
from .conftest import FLUX_SECU, site_yaml

SECRET = "attack-suite-secret-0123456789abcdef"
MAX_FAILURES = 5
NOW = time.time()


@dataclass
class Server:
    base: str
    config: Path
    db: Path
    evidence: Path
    incidents: dict[str, str]
    links: dict[str, str]

    def client(self, address: str, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30,
                            headers={"X-Forwarded-For": address, **kwargs.pop("headers", {})}, **kwargs)

    def login(self, name: str, address: str) -> str:
        with self.client(address) as c:
            answer = c.post("/api/login", json={"name": name, "password": PASSWORDS[name]})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])

    def audit(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        with sqlite3.connect(self.db) as db:
            rows = db.execute("SELECT user, action, target, data FROM audit ORDER BY seq").fetchall()
        return [(u, a, t, json.loads(d)) for u, a, t, d in rows]


def _config(tmp: Path) -> Path:
    os.environ.setdefault("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")  # as conftest.build_config does
    data = yaml.safe_load(site_yaml())
    data["notifications"]["ack_secret"] = SECRET
    data["notifications"]["public_url"] = "https://flux.example.org"
    data["api"] = {"port": 0, "trusted_proxies": ["127.0.0.1"], "login_max_failures": MAX_FAILURES,
                   "users": [{"name": n, "role": ROLES[n], "password_hash": CHEAP.hash(p)}
                             for n, p in PASSWORDS.items()]}
    path = tmp / "flux.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("attacks")
    config = _config(tmp)
    db, evidence = tmp / "var" / "flux-secu.db", tmp / "var" / "evidence"
    store = SQLiteStore(db)
    incidents, links = {}, {}
    for i, name in enumerate(["timeline", "ack", "closed", "revoked", "evidence", "outside", "views", "cli"]):
        files = {"snapshot.jpg": JPEG, "clip.mp4": bytes(range(256)) * 64} if name == "evidence" else None
        inc = add_incident(store, evidence, NOW - 3600 + i, camera=f"cam-{name}", files=files)
        incidents[name] = inc.id
        contact = "Dupont | nuit" if name == "ack" else "Astreinte"
        links[name] = make_token(SECRET.encode(), inc.id, contact, NOW + 3600)
    # A notification as the escalation records it now, and one as it was recorded before (the live
    # link in its body): neither may give a viewer a usable link.
    tl = incidents["timeline"]
    stored = store.get_incident(tl)
    assert stored is not None
    note = compose(stored.incident, "Site de test", "Astreinte", ["json://127.0.0.1:9/tok"],
                   ZoneInfo("Europe/Paris"), ack_link=f"https://flux.example.org/ack/{links['timeline']}")
    assert links["timeline"] in note.message
    store.record_event(tl, "notification", NOW - 3000, note.record(), key="notify:0")
    store.record_event(tl, "notification", NOW - 2999, {
        "contact": "Astreinte", "body": f"Intrusion.\nPrendre en charge : https://flux.example.org/ack/"
                                        f"{links['timeline']}"}, key="notify:legacy")
    store.transition(incidents["closed"], Transition.CLOSED, NOW - 2000, {})
    outside = tmp / "elsewhere" / incidents["outside"] / "snapshot.jpg"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(JPEG)
    store.record_event(incidents["outside"], "evidence", NOW, {"file": "snapshot.jpg", "path": str(outside),
                                                               "sha256": ""}, key="evidence:outside")
    planted = evidence / incidents["outside"] / "clip.mp4"
    planted.parent.mkdir(parents=True)
    planted.symlink_to(outside)
    store.record_event(incidents["outside"], "evidence", NOW, {"file": "clip.mp4", "path": str(planted),
                                                               "sha256": ""}, key="evidence:planted")
    store.append_audit(NOW - 400 * 86400, "old", "login", "", {})  # past the 1-year retention
    store.close()
    proc = subprocess.Popen([str(FLUX_SECU), "serve", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("serving http://127.0.0.1:"), line
        base = line.split()[1].rstrip("/")
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        yield Server(base, config, db, evidence, incidents, links)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- access -------------------------------------------------------------------------------------------


def test_a_viewer_reads_the_timeline_and_export_without_any_usable_link(server: Server) -> None:
    inc, token = server.incidents["timeline"], server.links["timeline"]
    viewer = server.login("zoe", "10.9.0.1")
    with server.client("10.9.0.1", headers={"Authorization": f"Bearer {viewer}"}) as c:
        detail = c.get(f"/api/incidents/{inc}")
        assert detail.status_code == 200
        assert token not in detail.text and "/ack/" not in detail.text
        # Who was notified, and which link (by its id), is what operators see.
        assert [n["contact"] for n in detail.json()["notified"]] == ["Astreinte", "Astreinte"]
        assert detail.json()["notified"][0]["link_id"]
    operator = server.login("marc", "10.9.0.1")
    with server.client("10.9.0.1", headers={"Authorization": f"Bearer {operator}"}) as c:
        archive = c.get(f"/api/incidents/{inc}/export")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as exported:  # deflated: look inside each file
        timeline = exported.read("timeline.json").decode()
        assert "Astreinte" in timeline  # the notifications are there...
        for name in exported.namelist():
            assert token.encode() not in exported.read(name), name  # ...without their link


def _forged(payload: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(payload)}.{b64(hmac.new(b'not-the-secret', payload, hashlib.sha256).digest())}"


def test_ack_links_are_checked_mac_first_and_used_once(server: Server) -> None:
    inc, token = server.incidents["ack"], server.links["ack"]
    with server.client("10.9.1.1") as c:
        # Huge numbers, old formats and garbage are refused (403) before any parsing: never a 500.
        for bad in [_forged(b"x|y|" + b"9" * 600), _forged(b'{"v":2,"i":"x","c":"y","e":1e999}'),
                    _forged(b"i|c|99999999999999999999999999"), "A" * 20 + "." + "B" * 20, "a.b.c" * 5]:
            answer = c.post(f"/ack/{bad}")
            assert answer.status_code == 403, (bad[:40], answer.status_code, answer.text)
        # A contact name with "|" in it: its links work.
        first = c.post(f"/ack/{token}")
        assert first.status_code == 200, first.text
        assert first.json() == {"ok": True, "incident": inc, "by": "Dupont | nuit", "first": True}
        # Single use: the same link (or any other of that incident) is told who acknowledged, when.
        again = c.post(f"/ack/{token}")
        other = c.post(f"/ack/{make_token(SECRET.encode(), inc, 'Astreinte', NOW + 3600)}")
    for answer in (again, other):
        assert answer.status_code == 409
        assert answer.json()["reason"].startswith("already acknowledged by Dupont | nuit at ")
    acks = [a for a in server.audit() if a[2] == inc and a[1].startswith("acknowledge")]
    assert [(u, a) for u, a, _, _ in acks] == [("Dupont | nuit", "acknowledge"),
                                               ("Dupont | nuit", "acknowledge_refused"),
                                               ("Astreinte", "acknowledge_refused")]


def test_ack_links_are_refused_once_the_incident_is_closed_or_its_links_revoked(server: Server) -> None:
    admin = server.login("admin", "10.9.2.1")
    with server.client("10.9.2.1") as c:
        closed = c.post(f"/ack/{server.links['closed']}")
        assert closed.status_code == 403 and "closed" in closed.json()["reason"]
        revoked = server.incidents["revoked"]
        answer = c.post(f"/api/incidents/{revoked}/revoke-links", json={},
                        headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 200
        refused = c.post(f"/ack/{server.links['revoked']}")
        assert refused.status_code == 403 and "revoked" in refused.json()["reason"]
    assert ("admin", "links_revoked", revoked) in [(u, a, t) for u, a, t, _ in server.audit()]


def test_parallel_wrong_logins_never_get_past_the_limit(server: Server) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def attempt() -> None:
        with server.client("10.9.3.1") as c:
            status = c.post("/api/login", json={"name": "marc", "password": "wrong"}).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) == [401, 429], statuses
    assert statuses.count(401) == MAX_FAILURES  # the throttle counts before it checks


def test_an_attacker_elsewhere_cannot_lock_a_user_out_of_their_own_device(server: Server) -> None:
    with server.client("10.9.4.66") as attacker:
        answers = [attacker.post("/api/login", json={"name": "admin", "password": "guess"}).status_code
                   for _ in range(MAX_FAILURES + 3)]
    assert answers[-1] == 429
    assert server.login("admin", "10.9.4.5")  # the right user, from their device, right away


def test_logout_revokes_the_session_on_the_server(server: Server) -> None:
    token = server.login("marc", "10.9.5.1")
    with server.client("10.9.5.1", headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/api/me").status_code == 200
        assert c.post("/api/logout", json={}).status_code == 200
        assert c.get("/api/me").status_code == 401  # a copy of the token is worth nothing now


def test_cross_site_and_non_json_state_changes_are_refused(server: Server) -> None:
    token = server.login("marc", "10.9.6.1")
    body = json.dumps({"armed": False, "for_s": 3600})
    url = "/api/sites/site-test/override"
    with server.client("10.9.6.1", cookies={"flux_session": token}) as c:
        js = {"Content-Type": "application/json"}
        for headers, status in [({"Origin": "https://evil.example.org", **js}, 403),
                                ({"Sec-Fetch-Site": "same-site", **js}, 403),
                                ({"Sec-Fetch-Site": "cross-site", **js}, 403),
                                ({"Content-Type": "text/plain"}, 415),
                                ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
                                ({}, 415)]:
            answer = c.post(url, content=body, headers=headers)
            assert answer.status_code == status, (headers, answer.text)
        assert c.get("/api/sites/site-test").json()["override"] is None  # nothing was disarmed
        same = c.post(url, content=body, headers={"Origin": server.base, "Sec-Fetch-Site": "same-origin",
                                                  "Content-Type": "application/json"})
        assert same.status_code == 200 and same.json()["override"]["armed"] is False


def _raw(server: Server, request: bytes) -> str:
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode("latin-1")


def test_oversized_bodies_are_refused_before_they_are_read(server: Server) -> None:
    # 2 GiB announced, none sent: the answer comes at once, nothing is buffered.
    head = _raw(server, b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 2147483648\r\n\r\n")
    assert head.startswith("HTTP/1.1 413"), head
    chunk = b"x" * 65536
    chunked = (b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + (b"10000\r\n" + chunk + b"\r\n") * 4 + b"0\r\n\r\n")
    assert _raw(server, chunked).startswith("HTTP/1.1 413")


def test_security_headers_on_every_answer(server: Server) -> None:
    with server.client("10.9.7.1") as c:
        for answer in (c.get("/"), c.get("/api/me"), c.get(f"/ack/{server.links['ack']}"), c.get("/health")):
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"


# --- audit --------------------------------------------------------------------------------------------


def test_every_evidence_delivery_is_audited_whatever_its_range(server: Server) -> None:
    inc = server.incidents["evidence"]
    for user, byte_range in [("zoe", "bytes=1-"), ("marc", "bytes=100-200")]:
        token = server.login(user, "10.9.8.1")
        with server.client("10.9.8.1", headers={"Authorization": f"Bearer {token}"}) as c:
            part = c.get(f"/api/incidents/{inc}/evidence/clip.mp4", headers={"Range": byte_range})
        assert part.status_code == 206
    views = [(u, d["range"]) for u, a, t, d in server.audit()
             if a == "evidence_view" and t == f"{inc}/clip.mp4"]
    assert views == [("zoe", "bytes=1-"), ("marc", "bytes=100-200")]


def test_evidence_outside_the_evidence_folder_is_never_served(server: Server) -> None:
    inc = server.incidents["outside"]
    token = server.login("zoe", "10.9.9.1")
    with server.client("10.9.9.1", headers={"Authorization": f"Bearer {token}"}) as c:
        for name in ("snapshot.jpg", "clip.mp4"):  # a record elsewhere; a link planted in the folder
            assert c.get(f"/api/incidents/{inc}/evidence/{name}").status_code == 404


def test_incident_list_and_report_views_are_audited(server: Server) -> None:
    token = server.login("zoe", "10.9.10.1")
    with server.client("10.9.10.1", headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/api/incidents", params={"camera": "cam-views"}).status_code == 200
        assert c.get("/api/sites/site-test/report").status_code == 200
    seen = [(u, a, t) for u, a, t, _ in server.audit() if u == "zoe"]
    assert ("zoe", "incident_list", "") in seen and ("zoe", "report_view", "site-test") in seen


def test_the_audit_log_is_chained_and_purged_only_by_the_audited_operation(server: Server) -> None:
    with sqlite3.connect(server.db) as db, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit WHERE user = 'old'")
    token = server.login("admin", "10.9.11.1")
    with server.client("10.9.11.1", headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/api/audit/verify").json()["ok"] is True
        purged = c.post("/api/audit/purge", json={})
        assert purged.status_code == 200 and purged.json()["removed"] == 1  # only the 400-day-old one
        check = c.get("/api/audit/verify").json()
    assert check["ok"] is True, check
    log = server.audit()
    assert "old" not in [u for u, _, _, _ in log]
    assert [(u, a) for u, a, _, _ in log if a == "audit_purged"] == [("admin", "audit_purged")]


# --- stores and start -----------------------------------------------------------------------------------


def test_a_locked_database_answers_503_not_500(server: Server) -> None:
    token = server.login("zoe", "10.9.12.1")
    holder = sqlite3.connect(server.db, timeout=1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
    try:
        with server.client("10.9.12.1", headers={"Authorization": f"Bearer {token}"}) as c:
            answer = c.get(f"/api/incidents/{server.incidents['views']}")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 503 and "store unavailable" in answer.json()["detail"]


@pytest.mark.slow
def test_a_run_on_a_cluster_of_several_nodes_refuses_a_sqlite_store(server: Server) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)  # a second node: actors could land on either
        cluster.wait_for_nodes()
        done = subprocess.run([str(FLUX_SECU), "run", str(server.config), "--address", cluster.address],
                              capture_output=True, text=True, timeout=120)
    finally:
        cluster.shutdown()
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "flux-secu: store.kind sqlite cannot serve a cluster of 2 nodes: use store.kind redis")


def test_cli_arm_disarm_and_legal_hold_are_audited(server: Server) -> None:
    cfg, inc = str(server.config), server.incidents["cli"]
    for args in (["site", "disarm", cfg, "site-test", "--for", "60", "--by", "alice"],
                 ["site", "arm", cfg, "site-test", "--for", "60", "--by", "alice"],
                 ["evidence", "hold", cfg, inc, "--by", "bob"]):
        done = subprocess.run([str(FLUX_SECU), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    log = [(u, a, t, d.get("via")) for u, a, t, d in server.audit()]
    assert ("alice", "disarm", "site-test", "cli") in log and ("alice", "arm", "site-test", "cli") in log
    assert ("bob", "legal_hold", inc, "cli") in log


# --- pure pieces ----------------------------------------------------------------------------------------


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    import ipaddress

    from flux_secu.api.guard import client_address

    proxy = [ipaddress.ip_network("10.0.0.1/32")]
    assert client_address("198.51.100.7", "1.2.3.4", proxy) == "198.51.100.7"  # not from the proxy
    assert client_address("10.0.0.1", "6.6.6.6, 203.0.113.9", proxy) == "203.0.113.9"  # right-most
    assert client_address("10.0.0.1", "junk", proxy) == "10.0.0.1"
    assert client_address("10.0.0.1", "203.0.113.9", []) == "10.0.0.1"  # no proxy configured


def test_an_unknown_name_is_checked_against_a_hash_of_the_users_own_cost() -> None:
    from argon2 import extract_parameters

    from flux_secu.api.auth import Authenticator
    from flux_secu.config import ApiUserConfig

    user = ApiUserConfig(name="marc", role="operator", password_hash=CHEAP.hash("x" * 12))
    auth = Authenticator([user], b"k" * 32, 60.0)
    assert extract_parameters(auth._dummy) == extract_parameters(user.password_hash.get_secret_value())
    assert auth.check_password("nobody", "x" * 12) is None


def test_the_audit_chain_purge_and_revocations_on_each_store(store_factory: Any) -> None:
    from flux_secu.store.base import verify_audit_chain

    store = store_factory()
    for i in range(6):
        store.append_audit(1000.0 + i, "zoe", "incident_view", f"inc-{i}", {"ip": "10.0.0.1"})
    records = store.audit_log()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6] and verify_audit_chain(records) is None
    # Altered, or one removed: the chain names the first record that no longer fits.
    altered = [*records[:2], dataclasses.replace(records[2], user="marc"), *records[3:]]
    assert verify_audit_chain(altered) == 3
    assert verify_audit_chain([*records[:3], *records[4:]]) == 5
    assert store.purge_audit(1003.0, "admin", 2000.0) == 3
    kept = store_factory().audit_log()  # a second store object on the same data sees the same
    assert [r.target for r in kept] == ["inc-3", "inc-4", "inc-5", "audit"]
    assert kept[-1].action == "audit_purged" and kept[-1].data["removed"] == 3
    assert verify_audit_chain(kept) is None
    store.append_audit(2001.0, "zoe", "login", "", {})
    assert verify_audit_chain(store.audit_log()) is None
    now = time.time()
    store.revoke("session:abc", now + 60)
    assert store.is_revoked("session:abc", now) and not store.is_revoked("session:other", now)


def test_the_generated_secret_file_is_private_from_the_start_and_shared(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from flux_secu.alerts.ack import load_secret

    with ThreadPoolExecutor(8) as pool:
        secrets_seen = set(pool.map(lambda _: load_secret(None, tmp_path / "var"), range(16)))
    assert len(secrets_seen) == 1 and len(secrets_seen.pop()) == 64  # everyone agrees on one
    assert (tmp_path / "var" / "ack.key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "var").iterdir()] == ["ack.key"]  # no temporary file left


def test_a_known_device_gets_the_next_hashing_slot_before_a_flood() -> None:
    from flux_secu.api.auth import HashingBusy, HashingQueue

    hashing = HashingQueue(1, max_waiting=3)
    started, busy = threading.Event(), threading.Event()
    hashing.submit(False, lambda: (started.set(), busy.wait()))  # a guess is being hashed
    assert started.wait(10)
    order: list[str] = []
    flood = hashing.submit(False, lambda: order.append("flood"))
    known = hashing.submit(True, lambda: order.append("known"))
    gave_up = hashing.submit(False, lambda: order.append("gave up"))
    assert gave_up.cancel()  # its login stopped waiting: never hashed
    with pytest.raises(HashingBusy):  # the queue is bounded
        hashing.submit(False, lambda: order.append("one too many"))
    busy.set()
    known.result(10)
    flood.result(10)
    assert order == ["known", "flood"]


def test_session_cookies_are_secure_unless_served_on_loopback() -> None:
    from flux_secu.config import ApiConfig

    assert ApiConfig(host="10.20.0.10").cookies_secure and ApiConfig(host="0.0.0.0").cookies_secure
    assert not ApiConfig(host="127.0.0.1").cookies_secure and not ApiConfig(host="::1").cookies_secure
    assert not ApiConfig(host="10.20.0.10", secure_cookies=False).cookies_secure  # said explicitly


def test_cluster_configs_keep_the_ray_dashboard_on_loopback() -> None:
    from .conftest import ROOT

    for name in ("onprem.yaml", "aws-gpu.yaml"):
        cluster = yaml.safe_load((ROOT / "cluster" / name).read_text())
        head = " ".join(cluster["head_start_ray_commands"])
        assert "--dashboard-host=127.0.0.1" in head, name  # its Jobs API runs any code
        assert "0.0.0.0" not in (ROOT / "cluster" / name).read_text(), name


def test_the_audit_chain_holds_with_writers_racing_on_two_connections(store_factory: Any) -> None:
    from flux_secu.store.base import verify_audit_chain

    stores = [store_factory(), store_factory()]  # two connections (processes) on the same data

    def write(k: int) -> None:
        for i in range(40):
            stores[k].append_audit(1000.0 + i, f"writer-{k}", "incident_view", str(i), {})

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = stores[0].audit_log()
    assert len(records) == 160 and [r.seq for r in records] == list(range(1, 161))
    assert verify_audit_chain(records) is None
