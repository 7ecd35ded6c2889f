"""The web interface end to end, in a real headless Chromium (Playwright) against the real pipeline.

The deployment (real Ray actors, real model) replays the low-light clip at 23:00 as `evaluate` does,
with the API actor serving the web interface. The operator logs in, sees the incident appear in the
live feed, opens it, acknowledges it; the test then checks the audit log and that the on-call chain,
which was still notifying, stopped. A screenshot of the camera wall is kept in test-artifacts/.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flux_secu.alerts.panic import press_payload
from flux_secu.rules.incident import IncidentKind, IncidentState
from flux_secu.store import SQLiteStore

from .api_helpers import PASSWORDS, api_config
from .conftest import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
ACK_TIMEOUT_S = 2.0
PANIC_SECRET = "0123456789abcdef-e2e-secret"


def wait_evidence(store: SQLiteStore, incident_id: str, deadline: float) -> dict[str, str]:
    """The snapshot and clip the camera actor writes for the incident (flux_secu.evidence)."""
    while True:
        files = {e.data["file"]: e.data["path"] for e in store.events(incident_id) if e.kind == "evidence"}
        if len(files) == 2:
            return files
        assert time.monotonic() < deadline, f"no evidence for {incident_id}: {files}"
        time.sleep(0.1)


def notifications(store: SQLiteStore, incident_id: str) -> int:
    return sum(1 for e in store.events(incident_id) if e.kind == "notification")


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_operator_sees_opens_and_acknowledges_an_incident(
    tmp_path: Path, ray_session: None, mosquitto_broker: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from playwright.sync_api import expect, sync_playwright

    from flux_secu.actors.graph import Deployment

    if not CHROMIUM.is_file():
        pytest.fail("chromium is not installed (make system-deps installs it)")
    monkeypatch.setenv("PANIC_SECRET_FOR_TESTS", PANIC_SECRET)
    host, mqtt_port = mosquitto_broker

    def with_panic(d: dict[str, Any]) -> None:
        d["panic"] = {"mqtt": {"host": host, "port": mqtt_port, "client_id": f"e2e-{mqtt_port}"}}
        d["sites"][0]["panic"] = {"devices": [
            {"id": "btn-1", "agent": "Agent Dupont", "secret": "${PANIC_SECRET_FOR_TESTS}"}]}

    config = api_config(tmp_path, with_panic)
    site = config.sites[0]
    camera = site.cameras[0].model_copy(update={"loop": False})
    second = site.escalation.contacts[0].model_copy(update={"name": "Relève"})
    escalation = site.escalation.model_copy(update={
        "contacts": [*site.escalation.contacts, second], "ack_timeout_s": ACK_TIMEOUT_S, "rounds": 20})
    config = config.model_copy(update={"sites": [site.model_copy(update={
        "cameras": [camera, site.cameras[1]], "escalation": escalation})]})
    store = SQLiteStore(config.store.path)
    dep = Deployment.build(config)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        port = ray.get(dep.api.ready.remote())["port"]
        base = f"http://127.0.0.1:{port}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"])
            page = browser.new_page(viewport={"width": 390, "height": 844}, locale="fr-FR")  # a phone
            page.goto(base + "/#incidents")
            expect(page.get_by_role("heading", name="Connexion")).to_be_visible()
            page.get_by_label("Identifiant").fill("marc")
            page.get_by_label("Mot de passe").fill(PASSWORDS["marc"])
            page.get_by_role("button", name="Se connecter").click()
            expect(page.get_by_role("heading", name="Incidents")).to_be_visible()
            expect(page.get_by_text("Aucun incident.")).to_be_visible()

            # The replay starts only now: the incident must arrive in the feed already open.
            night = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)  # 23:00 in Paris: closed
            dep.add_camera(site.id, camera, realtime=False, clock_start=night)
            feed_card = page.locator("[data-testid=incident]").first
            expect(feed_card).to_be_visible(timeout=120_000)
            deadline = time.monotonic() + 120
            while not (escalated := [s for s in store.incidents() if s.state is IncidentState.ESCALATED]):
                assert time.monotonic() < deadline, "no incident was escalated"
                time.sleep(0.1)
            incident = escalated[0].incident
            evidence = wait_evidence(store, incident.id, deadline)
            assert Path(evidence["snapshot.jpg"]).is_file() and Path(evidence["clip.mp4"]).is_file()
            while notifications(store, incident.id) < 2:  # the chain goes on while nobody answers
                assert time.monotonic() < deadline, "the chain did not go on"
                time.sleep(0.1)

            page.goto(base + "/#cameras")
            wall = page.locator("[data-testid=camera-wall]")
            expect(wall.locator("[data-testid=camera]")).to_have_count(2)
            expect(wall.locator(f"img[data-camera={camera.id}]")).to_be_visible()
            # Decoded (not a broken image). An expect, not wait_for_function: the page's CSP forbids
            # the eval that wait_for_function needs, and the test runs the interface under its CSP.
            expect(wall.locator(f"img[data-camera={camera.id}]")).not_to_have_js_property("naturalWidth", 0)
            page.screenshot(path=str(ARTIFACTS / "camera-wall.png"), full_page=True)

            # The notification's evidence link opens the incident (already logged in: the cookie).
            page.goto(f"{base}/incidents/{incident.id}")
            detail = page.locator("[data-testid=incident-detail]")
            expect(detail.locator("[data-testid=state]")).to_have_text("Escaladé")
            expect(detail.locator("[data-testid=snapshot]")).to_be_visible()
            expect(detail.locator("[data-testid=clip]")).to_be_attached()
            expect(detail.locator("[data-testid=timeline]")).to_contain_text("Notification envoyée")
            assert ray.get(dep.escalations[site.id].ready.remote()) >= 1  # escalation in progress
            page.get_by_role("button", name="Je prends en charge").click()
            expect(detail.locator("[data-testid=state]")).to_have_text("Pris en charge", timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "incident-acknowledged.png"), full_page=True)

            # Disarm the site for 2 h from the phone, then back to the calendar; the night's report.
            page.goto(base + "/#sites")
            card = page.locator(f"[data-testid=site][data-id={site.id}]")
            expect(card.locator("[data-testid=armed]")).to_have_text("Armé")
            card.get_by_label("Durée").select_option(str(2 * 3600))
            card.get_by_role("button", name="Désarmer").click()
            expect(card.locator("[data-testid=armed]")).to_have_text("Désarmé")
            expect(card).to_contain_text("désarmé à la main par marc")
            override = store.get_setting(f"override:{site.id}")
            assert override is not None and override["armed"] is False and override["by"] == "marc"
            assert 2 * 3600 - 60 < override["until"] - time.time() <= 2 * 3600
            card.get_by_role("button", name="Revenir au calendrier").click()
            expect(card.locator("[data-testid=armed]")).to_have_text("Armé")
            page.goto(base + "/#report")
            page.get_by_label("Nuit du").fill("2026-11-25")
            report = page.locator("[data-testid=report]")
            expect(report).to_contain_text("Rapport de la nuit du 25/11/2026")
            expect(report).to_contain_text("prises en charge : 1")
            browser.close()
        acknowledged_at = time.time()
        sent = notifications(store, incident.id)
        # The chain stopped: nothing more after two more acknowledgement timeouts.
        time.sleep(2 * ACK_TIMEOUT_S + 1)
        assert notifications(store, incident.id) == sent
        assert ray.get(dep.escalations[site.id].ready.remote()) == 0
        (stored,) = [s for s in store.incidents() if s.incident.id == incident.id]
        assert stored.state is IncidentState.ACKNOWLEDGED
        ack = next(e for e in store.events(incident.id) if e.kind == "acknowledged")
        assert ack.data == {"by": "marc", "via": "api"} and ack.ts <= acknowledged_at
        audit = [(r.user, r.action, r.target) for r in store.audit_log()]
        assert ("marc", "login", "") in audit
        assert ("marc", "incident_view", incident.id) in audit
        assert ("marc", "evidence_view", f"{incident.id}/snapshot.jpg") in audit
        assert ("marc", "acknowledge", incident.id) in audit
        assert [a for a in audit if a[1] in ("disarm", "override_cleared")] == [
            ("marc", "disarm", site.id), ("marc", "override_cleared", site.id)]
        assert (ARTIFACTS / "camera-wall.png").stat().st_size > 10_000

        # The API is also the webhook's front door: a signed press goes to the ingress, then escalation.
        press = press_payload(site.id, "btn-1", PANIC_SECRET, int(time.time()), "e2e-nonce-1")
        status, answer = post(f"{base}/panic/{site.id}", press)
        assert status == 202 and answer["status"] == "accepted", answer
        assert post(f"{base}/panic/{site.id}", press)[0] == 409  # the same press again: a replay
        (panic,) = [s for s in store.incidents() if s.incident.kind == IncidentKind.PANIC]
        assert panic.incident.id == answer["incident"] and panic.incident.label == "Agent Dupont"
    finally:
        for actor in dep.actors():
            ray.kill(actor, no_restart=True)
        store.close()


def test_an_acknowledgement_is_kept_when_the_escalation_actor_fails(tmp_path: Path,
                                                                    ray_session: None) -> None:
    import ray

    from flux_secu.api.actor import RayBackend

    from .api_helpers import add_incident

    @ray.remote(num_cpus=0)
    class Broken:
        def acknowledge(self, incident_id: str, by: str, via: str) -> bool:
            raise RuntimeError("escalation actor crashed")

    store = SQLiteStore(tmp_path / "s.db")
    inc = add_incident(store, tmp_path / "evidence", 1_795_989_600.0)
    backend = RayBackend(store, {"site-test": Broken.remote()})  # type: ignore[attr-defined]
    assert backend.acknowledge(inc, "marc", "api") is True
    assert store.get_incident(inc.id).state is IncidentState.ACKNOWLEDGED  # type: ignore[union-attr]
    assert backend.acknowledge(inc, "zoe", "api") is False
    store.close()
