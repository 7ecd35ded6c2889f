"""The operator API against a real store (SQLite; Redis where the store matters), in process through
Starlette's test client: authentication, roles, audit, acknowledgement, arm/disarm, evidence, export."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flux_secu.alerts.ack import make_token
from flux_secu.api.app import create_app
from flux_secu.api.auth import LoginThrottle, derive_key
from flux_secu.api.backend import StoreBackend
from flux_secu.api.export import ExportInvalid, verify_export
from flux_secu.api.views import CameraHealth
from flux_secu.config import Config
from flux_secu.incidents.lifecycle import Transition
from flux_secu.rules.incident import IncidentKind, IncidentState
from flux_secu.store import SQLiteStore
from flux_secu.store.base import Store

from .api_helpers import JPEG, PASSWORDS, add_incident, api_config

SECRET = b"test-ack-secret-of-some-length-32+chars"
NIGHT = 1_795_989_600.0  # 2026-11-29 23:00 Europe/Paris


class Clock:
    def __init__(self, now: float = NIGHT + 3600) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Api:
    def __init__(self, config: Config, store: Store, clock: Clock) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.app = create_app(config, store, StoreBackend(store), SECRET, clock=clock)
        self.client = TestClient(self.app, headers={"Content-Type": "application/json"})

    def login(self, name: str) -> dict[str, str]:
        answer = self.client.post("/api/login", json={"name": name, "password": PASSWORDS[name]})
        assert answer.status_code == 200, answer.text
        self.client.cookies.clear()  # the tests authenticate each request explicitly, by its header
        return {"Authorization": f"Bearer {answer.json()['token']}"}


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    store = SQLiteStore(tmp_path / "api.db")
    yield Api(api_config(tmp_path), store, Clock())
    store.close()


def actions(store: Store) -> list[tuple[str, str, str]]:
    return [(r.user, r.action, r.target) for r in store.audit_log()]


# --- authentication -------------------------------------------------------------------------------

OPEN_ROUTES = {"/health", "/ready", "/api/login", "/ack/{token}"}


def test_no_route_answers_without_a_valid_session_except_health_login_and_signed_links(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyCookie"}
    forged = api.login("admin")["Authorization"][:-4] + "AAAA"
    checked = 0
    for path, methods in spec["paths"].items():
        if path in OPEN_ROUTES:
            continue
        url = path.replace("{site_id}", "site-test").replace("{camera_id}", "cam-test") \
                  .replace("{incident_id}", "x").replace("{file}", "snapshot.jpg")
        for method in methods:
            for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": forged},
                            {"Cookie": "flux_session=nonsense"}):
                answer = api.client.request(method, url, headers=headers, json={"armed": True, "for_s": 5})
                assert answer.status_code == 401, (method, url, headers, answer.text)
                assert answer.json()["detail"]
                checked += 1
    assert checked >= 4 * 14
    assert api.client.get("/health").json() == {"status": "ok"}
    assert api.client.get("/ready").json() == {"ready": True, "checks": {"store": True}}


def test_login_sets_a_cookie_session_and_logout_ends_it(api: Api) -> None:
    client = api.client
    assert client.get("/api/me").status_code == 401
    answer = client.post("/api/login", json={"name": "marc", "password": PASSWORDS["marc"]})
    assert answer.json()["role"] == "operator"
    cookie = answer.headers["set-cookie"]
    assert "flux_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert client.get("/api/me").json() == {"user": "marc", "role": "operator",  # by the cookie
                                            "timezone": "Europe/Paris"}
    token = answer.json()["token"]
    client.post("/api/logout")
    assert client.get("/api/me").status_code == 401
    # Revoked on the server: the same token, kept by whoever copied it, no longer works.
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert actions(api.store) == [("marc", "login", ""), ("marc", "logout", "")]


def test_wrong_passwords_are_refused_audited_and_rate_limited(api: Api) -> None:
    client = api.client
    for name, password in [("marc", "wrong"), ("nobody", "whatever"), ("marc", "")]:
        answer = client.post("/api/login", json={"name": name, "password": password})
        assert answer.status_code in (401, 422)
    max_failures = api.config.api.login_max_failures  # type: ignore[union-attr]
    for _ in range(max_failures - 1):
        assert client.post("/api/login", json={"name": "marc", "password": "wrong"}).status_code == 401
    # Past the limit even the right password is refused, with a delay to wait.
    answer = client.post("/api/login", json={"name": "marc", "password": PASSWORDS["marc"]})
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert "too many failed logins" in answer.json()["detail"]
    api.clock.now += api.config.api.login_window_s + 1  # type: ignore[union-attr]
    assert client.post("/api/login", json={"name": "marc", "password": PASSWORDS["marc"]}).status_code == 200
    failed = [a for a in actions(api.store) if a[1] == "login_failed"]
    assert ("nobody", "login_failed", "") in failed and len(failed) == max_failures + 1


def test_an_expired_session_or_a_changed_password_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    short = Api(api_config(tmp_path, session_ttl_s=1), store, Clock())
    headers = short.login("zoe")
    assert short.client.get("/api/me", headers=headers).status_code == 200
    time.sleep(2.1)  # the session serializer's timestamps have whole seconds
    answer = short.client.get("/api/me", headers=headers)
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]
    # Same secret, but zoe's password hash changed in the config: her old sessions end.
    other = Api(api_config(tmp_path), store, Clock())
    headers = other.login("zoe")
    again = Api(api_config(tmp_path), store, Clock())  # api_config hashes again: a new salt
    answer = again.client.get("/api/me", headers=headers)
    assert answer.status_code == 401 and "no longer valid" in answer.json()["detail"]
    store.close()


def test_roles(api: Api, tmp_path: Path) -> None:
    inc = add_incident(api.store, api.config.evidence_dir, NIGHT)
    viewer, operator, admin = api.login("zoe"), api.login("marc"), api.login("admin")
    c = api.client
    assert c.get(f"/api/incidents/{inc.id}", headers=viewer).status_code == 200
    for method, url in [("POST", f"/api/incidents/{inc.id}/acknowledge"),
                        ("GET", f"/api/incidents/{inc.id}/export"),
                        ("DELETE", "/api/sites/site-test/override")]:
        answer = c.request(method, url, headers=viewer)
        assert answer.status_code == 403 and "needs the operator role" in answer.json()["detail"]
    assert c.get("/api/audit", headers=operator).status_code == 403
    hold = c.post(f"/api/incidents/{inc.id}/legal-hold", json={"hold": True}, headers=operator)
    assert hold.status_code == 403
    assert api.store.events(inc.id)[-1].kind == "opened"  # nothing refused was done
    assert c.get("/api/audit", headers=admin).status_code == 200
    assert c.post(f"/api/incidents/{inc.id}/legal-hold", json={"hold": True}, headers=admin).json()["hold"]
    detail = c.get(f"/api/incidents/{inc.id}", headers=viewer).json()
    assert detail["legal_hold"] is True and detail["legal_hold_detail"]["by"] == "admin"
    assert ("admin", "legal_hold", inc.id) in actions(api.store)


# --- incidents, evidence, acknowledgement ----------------------------------------------------------


def test_incident_filters_and_clear_errors(api: Api, tmp_path: Path) -> None:
    ev = api.config.evidence_dir
    first = add_incident(api.store, ev, NIGHT)
    panic = add_incident(api.store, ev, NIGHT + 60, kind=IncidentKind.PANIC, camera="")
    other = add_incident(api.store, ev, NIGHT + 120, camera="cam-two")
    api.store.transition(other.id, Transition.ESCALATED, NIGHT + 130, {})
    h = api.login("zoe")

    def ids(**query: Any) -> list[str]:
        answer = api.client.get("/api/incidents", params=query, headers=h)
        assert answer.status_code == 200, answer.text
        return [i["id"] for i in answer.json()]

    assert ids() == [other.id, panic.id, first.id]  # newest first
    assert ids(kind="panic") == [panic.id]
    assert ids(state="escalated") == [other.id]
    assert ids(camera="cam-two") == [other.id]
    assert ids(site="elsewhere") == []
    assert ids(since="2026-11-29T23:01:00+01:00") == [other.id, panic.id]
    assert ids(until="2026-11-29T23:01:00") == [first.id]  # naive: the config's timezone
    assert ids(since=NIGHT + 60, until=NIGHT + 61) == [panic.id]  # epoch seconds too
    assert ids(limit=1) == [other.id]
    for query, field in [({"since": "yesterday"}, "since"), ({"kind": "burglary"}, "kind"),
                         ({"limit": 0}, "limit"), ({"limit": "many"}, "limit"), ({"state": ""}, "state")]:
        answer = api.client.get("/api/incidents", params=query, headers=h)
        assert answer.status_code == 422, query
        assert answer.json()["detail"].startswith(f"query.{field}:"), answer.json()
    assert api.client.get("/api/incidents/nope", headers=h).status_code == 404


def test_detail_timeline_and_evidence_views_are_audited(api: Api, tmp_path: Path) -> None:
    clip = b"\x00\x00\x00\x18ftypmp42" + bytes(200)
    inc = add_incident(api.store, api.config.evidence_dir, NIGHT,
                       files={"snapshot.jpg": JPEG, "clip.mp4": clip})
    # A record pointing outside the contract's layout is never served.
    api.store.record_event(inc.id, "evidence", NIGHT, {"file": "snapshot.jpg", "path": "/etc/passwd",
                                                       "sha256": ""}, key="evidence:bogus")
    h = api.login("zoe")
    detail = api.client.get(f"/api/incidents/{inc.id}", headers=h).json()
    assert [e["kind"] for e in detail["timeline"]] == ["opened", "evidence", "evidence", "evidence"]
    assert detail["evidence"] == {"snapshot.jpg": f"/api/incidents/{inc.id}/evidence/snapshot.jpg",
                                  "clip.mp4": f"/api/incidents/{inc.id}/evidence/clip.mp4"}
    snap = api.client.get(detail["evidence"]["snapshot.jpg"], headers=h)
    assert snap.status_code == 200 and snap.content == JPEG and snap.headers["content-type"] == "image/jpeg"
    video = api.client.get(detail["evidence"]["clip.mp4"], headers=h)
    assert video.content == clip and video.headers["content-type"] == "video/mp4"
    part = api.client.get(detail["evidence"]["clip.mp4"], headers={**h, "Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == clip[100:]
    assert api.client.get(f"/api/incidents/{inc.id}/evidence/other.txt", headers=h).status_code == 422
    assert actions(api.store)[1:] == [("zoe", "incident_view", inc.id),
                                      ("zoe", "evidence_view", f"{inc.id}/snapshot.jpg"),
                                      ("zoe", "evidence_view", f"{inc.id}/clip.mp4")]


def test_acknowledge_stops_the_chain_once_and_is_audited(api: Api, tmp_path: Path) -> None:
    inc = add_incident(api.store, api.config.evidence_dir, NIGHT)
    api.store.transition(inc.id, Transition.ESCALATED, NIGHT + 10, {})
    h = api.login("marc")
    answer = api.client.post(f"/api/incidents/{inc.id}/acknowledge", headers=h)
    assert answer.json() == {"ok": True, "first": True, "incident": inc.id}
    again = api.client.post(f"/api/incidents/{inc.id}/acknowledge", headers=api.login("admin"))
    assert again.json()["first"] is False
    (stored,) = api.store.incidents()
    assert stored.state is IncidentState.ACKNOWLEDGED
    (ack,) = [e for e in api.store.events(inc.id) if e.kind == "acknowledged"]
    assert ack.data == {"by": "marc", "via": "api"}  # the first one stands
    acks = [r for r in api.store.audit_log() if r.action == "acknowledge"]
    assert [(r.user, r.data["first"], r.data["ip"]) for r in acks] == [("marc", True, "testclient"),
                                                                      ("admin", False, "testclient")]
    assert api.client.post("/api/incidents/unknown/acknowledge", headers=h).status_code == 404


def test_acknowledgement_links(api: Api, tmp_path: Path) -> None:
    inc = add_incident(api.store, api.config.evidence_dir, NIGHT)
    token = make_token(SECRET, inc.id, "Astreinte", api.clock.now + 600)
    page = api.client.get(f"/ack/{token}")
    assert page.status_code == 200 and "<form method=\"post\">" in page.text
    assert api.store.events(inc.id)[-1].kind == "opened"  # looking is not acknowledging
    for bad, reason in [(make_token(SECRET, inc.id, "Astreinte", api.clock.now - 1), "expired"),
                        (make_token(b"other-secret", inc.id, "Astreinte", api.clock.now + 600), "signature"),
                        ("not-a-token-at-all", "malformed")]:
        answer = api.client.post(f"/ack/{bad}")
        assert answer.status_code == 403 and reason in answer.json()["reason"]
    answer = api.client.post(f"/ack/{token}", headers={"Accept": "text/html"})
    assert answer.status_code == 200 and "pris en charge par Astreinte" in answer.text
    assert api.store.incidents()[0].state is IncidentState.ACKNOWLEDGED
    assert ("Astreinte", "acknowledge", inc.id) in actions(api.store)
    assert api.client.post(f"/ack/{make_token(SECRET, 'ghost', 'A', api.clock.now + 9)}").status_code == 404


def test_arm_and_disarm_with_expiry(api: Api) -> None:
    from flux_secu.actors.rules import override_key

    h = api.login("marc")
    sites = api.client.get("/api/sites", headers=h).json()
    assert [s["id"] for s in sites] == ["site-test"]
    # The test site has no opening hours: closed, so armed, by the calendar.
    assert sites[0]["armed"] is True and sites[0]["override"] is None
    assert sites[0]["open_by_calendar"] is False
    answer = api.client.post("/api/sites/site-test/override", json={"armed": False, "for_s": 3600}, headers=h)
    assert answer.status_code == 200 and answer.json()["armed"] is False
    assert answer.json()["override"] == {"armed": False, "until": api.clock.now + 3600, "by": "marc"}
    setting = api.store.get_setting(override_key("site-test"))
    assert setting is not None and setting["until"] == api.clock.now + 3600 and setting["armed"] is False
    api.clock.now += 3601  # expired: the calendar rules again
    assert api.client.get("/api/sites/site-test", headers=h).json()["armed"] is True
    api.client.post("/api/sites/site-test/override", json={"armed": False, "for_s": 60}, headers=h)
    cleared = api.client.delete("/api/sites/site-test/override", headers=h).json()
    assert cleared["armed"] is True and cleared["override"] is None
    for body in [{"armed": True}, {"armed": "yes", "for_s": 5}, {"armed": True, "for_s": -1},
                 {"armed": True, "for_s": 8 * 86400}, {"armed": True, "for_s": 5, "extra": 1}]:
        answer = api.client.post("/api/sites/site-test/override", json=body, headers=h)
        assert answer.status_code == 422 and answer.json()["detail"], body
    bad_json = api.client.post("/api/sites/site-test/override", content=b"{not json", headers={
        **h, "Content-Type": "application/json"})
    assert bad_json.status_code == 422
    assert api.client.post("/api/sites/nowhere/override", json={"armed": True, "for_s": 5},
                           headers=h).status_code == 404
    marc = [a[1] for a in actions(api.store) if a[0] == "marc"]
    assert marc[1:] == ["disarm", "disarm", "override_cleared"]


def test_signed_export_verifies_and_detects_tampering(api: Api, tmp_path: Path) -> None:
    inc = add_incident(api.store, api.config.evidence_dir, NIGHT, files={"snapshot.jpg": JPEG})
    answer = api.client.get(f"/api/incidents/{inc.id}/export", headers=api.login("marc"))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    key = derive_key(SECRET, "export")
    manifest = verify_export(key, answer.content)
    assert manifest["incident"] == inc.id and manifest["exported_by"] == "marc"
    assert set(manifest["files"]) == {"incident.json", "timeline.json", "evidence/snapshot.jpg"}
    snap = manifest["files"]["evidence/snapshot.jpg"]
    assert snap["sha256"] == snap["recorded_sha256"]
    with pytest.raises(ExportInvalid, match="another key"):
        verify_export(derive_key(b"other", "export"), answer.content)
    with pytest.raises(ExportInvalid, match="altered"):
        verify_export(key, _rewrite(answer.content, "evidence/snapshot.jpg", JPEG + b"x"))
    with pytest.raises(ExportInvalid, match="not a zip"):
        verify_export(key, b"PK nonsense")
    (record,) = [r for r in api.store.audit_log() if r.action == "export"]
    assert (record.user, record.target, record.data["intact"]) == ("marc", inc.id, {"snapshot.jpg": True})


def _rewrite(archive: bytes, name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.namelist():
            dst.writestr(item, data if item == name else src.read(item))
    return out.getvalue()


def test_cameras_snapshots_and_night_report(api: Api, tmp_path: Path) -> None:
    h = api.login("zoe")
    cams = api.client.get("/api/cameras", headers=h).json()
    assert [(c["id"], c["health"]) for c in cams] == [("cam-test", "unknown"), ("cam-two", "unknown")]
    assert api.client.get("/api/cameras/cam-test/snapshot.jpg", headers=h).status_code == 404
    inc = add_incident(api.store, api.config.evidence_dir, NIGHT, files={"snapshot.jpg": JPEG})
    for _ in range(3):
        snap = api.client.get("/api/cameras/cam-test/snapshot.jpg", headers=h)
        assert snap.content == JPEG and snap.headers["x-snapshot"] == f"incident {inc.id}"
    assert [a for a in actions(api.store) if a[1] == "live_view"] == [("zoe", "live_view", "cam-test")]
    assert api.client.get("/api/cameras/nope/snapshot.jpg", headers=h).status_code == 404
    add_incident(api.store, api.config.evidence_dir, NIGHT + 5, kind=IncidentKind.CAMERA_FAULT,
                 camera="cam-two")
    health = {c["id"]: c["health"] for c in api.client.get("/api/cameras", headers=h).json()}
    assert health == {"cam-test": "unknown", "cam-two": "fault"}
    report = api.client.get("/api/sites/site-test/report", params={"night": "2026-11-29"}, headers=h).json()
    assert report["counts"]["intrusions"] == 1 and report["counts"]["camera_faults"] == 1
    assert report["title"].startswith("[flux-secu] Rapport de la nuit du 29/11/2026")
    bad = api.client.get("/api/sites/site-test/report", params={"night": "29/11"}, headers=h)
    assert bad.status_code == 422 and "night" in bad.json()["detail"]


def test_camera_stats_never_show_a_url_secret_to_a_viewer(tmp_path: Path) -> None:
    class Backend(StoreBackend):
        def camera_stats(self, camera_id: str) -> dict[str, Any] | None:
            # What a decoder error quotes: the camera's URL, credentials and all.
            return {"frames_read": 3, "last_error": "cannot open rtsp://admin:hunter2@10.0.0.5/live?passwd=s3cret"
                                                    "&channel=1: timeout"}

    store = SQLiteStore(tmp_path / "api.db")
    api = Api(api_config(tmp_path), store, Clock())
    api.app = create_app(api.config, store, Backend(store), SECRET, clock=api.clock)
    api.client = TestClient(api.app, headers={"Content-Type": "application/json"})
    cams = api.client.get("/api/cameras", headers=api.login("zoe")).json()
    errors = [c["stats"]["last_error"] for c in cams]
    assert errors == ["cannot open rtsp://***@10.0.0.5/live?passwd=***&channel=1: timeout"] * 2
    store.close()


def test_the_web_interface_shell_is_served_in_french(api: Api) -> None:
    for path in ("/", "/incidents/intrusion-cam-test-1"):
        page = api.client.get(path)
        assert page.status_code == 200 and '<html lang="fr">' in page.text and "Connexion" in page.text
    assert "Je prends en charge" in api.client.get("/static/app.js").text


# --- the same flow on Redis -------------------------------------------------------------------------


def test_acknowledge_and_audit_on_each_store(store_factory: Callable[[], Store], tmp_path: Path) -> None:
    store = store_factory()
    api = Api(api_config(tmp_path), store, Clock())
    inc = add_incident(store, api.config.evidence_dir, NIGHT)
    h = api.login("marc")
    assert api.client.post(f"/api/incidents/{inc.id}/acknowledge", headers=h).json()["first"] is True
    reopened = store_factory()
    assert reopened.incidents()[0].state is IncidentState.ACKNOWLEDGED
    assert [(r.user, r.action) for r in reopened.audit_log()] == [("marc", "login"), ("marc", "acknowledge")]
    audit = api.client.get("/api/audit", params={"action": "acknowledge"}, headers=api.login("admin")).json()
    assert [(a["user"], a["target"]) for a in audit] == [("marc", inc.id)]


# --- pure pieces ----------------------------------------------------------------------------------


def test_login_throttle_counts_per_address_and_name_with_back_off() -> None:
    clock = Clock(0.0)
    throttle = LoginThrottle(3, 60.0, clock)
    for t in (0.0, 1.0, 2.0):
        clock.now = t
        assert throttle.begin("a", "u") == 0  # counted as it begins
    clock.now = 2.0
    assert throttle.begin("a", "u") == pytest.approx(1.0)  # 1 s after the 3rd failure
    assert throttle.begin("b", "u") == 0  # another address never locks the name out
    throttle.succeeded("b", "u")
    clock.now = 3.0
    assert throttle.begin("a", "u") == 0  # the 4th try, then 2 s, then 4 s...
    assert throttle.begin("a", "u") == pytest.approx(2.0)
    clock.now = 5.0
    assert throttle.begin("a", "u") == 0
    assert throttle.begin("a", "u") == pytest.approx(4.0)
    clock.now = 200.0  # the window forgot them all
    assert throttle.begin("a", "u") == 0
    throttle.succeeded("a", "u")
    assert throttle.begin("a", "u") == 0


def test_login_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(3, 60.0, Clock(0.0), max_keys=100)
    for i in range(1000):
        throttle.begin(f"10.0.{i // 256}.{i % 256}", "u")
    assert throttle.keys() <= 100


def test_camera_health_follows_the_frame_counter() -> None:
    clock = Clock(0.0)
    health = CameraHealth(stalled_after_s=10, clock=clock)
    assert health.status("c", None) == "unknown"
    assert health.status("c", {"frames_read": 0}) == "starting"
    clock.now = 5
    assert health.status("c", {"frames_read": 0}) == "starting"
    clock.now = 16
    assert health.status("c", {"frames_read": 0}) == "stalled"
    assert health.status("c", {"frames_read": 7}) == "ok"
    assert health.status("d", {"frames_read": 7}) == "ok"


# --- flux-secu serve: the same app over a real socket, on a store alone ------------------------------


def test_serve_answers_on_a_real_socket_and_acknowledges_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import subprocess
    import urllib.request

    from .api_helpers import CHEAP
    from .conftest import FLUX_SECU, site_yaml

    monkeypatch.setenv("NOTIFY_TOKEN_FOR_TESTS", "t")
    monkeypatch.setenv("FLUX_HASH_MARC", CHEAP.hash(PASSWORDS["marc"]))
    config = tmp_path / "flux.yaml"
    config.write_text(site_yaml() + "api:\n  port: 0\n  users:\n"
                      "    - {name: marc, role: operator, password_hash: '${FLUX_HASH_MARC}'}\n")
    db = tmp_path / "evaluate.db"
    store = SQLiteStore(db)
    inc = add_incident(store, tmp_path / "var" / "evidence", NIGHT)
    proc = subprocess.Popen([str(FLUX_SECU), "serve", str(config), "--store", str(db)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("serving http://127.0.0.1:"), line
        base = line.split()[1].rstrip("/")

        def call(path: str, body: dict[str, Any] | None = None, token: str = "") -> Any:
            request = urllib.request.Request(
                base + path, data=None if body is None else json.dumps(body).encode(),
                method="GET" if body is None else "POST",
                headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"}
                                                                  if token else {})})
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.loads(answer.read())

        deadline = time.monotonic() + 20
        while True:  # the socket is bound before uvicorn serves on it
            try:
                assert call("/health") == {"status": "ok"}
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        token = call("/api/login", {"name": "marc", "password": PASSWORDS["marc"]})["token"]
        assert [i["id"] for i in call("/api/incidents", token=token)] == [inc.id]
        assert call(f"/api/incidents/{inc.id}/acknowledge", {}, token)["first"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert store.incidents()[0].state is IncidentState.ACKNOWLEDGED
    assert [(r.user, r.action) for r in store.audit_log()] == [
        ("marc", "login"), ("marc", "incident_list"), ("marc", "acknowledge")]
    store.close()
