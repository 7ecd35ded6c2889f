"""The operator API and web interface (FastAPI): sites, cameras, incidents, evidence, acknowledgement.

Every route needs a session (cookie set by ``POST /api/login``, or ``Authorization: Bearer <token>``)
except: ``/health`` and ``/ready`` (probes), ``/api/login``, the web interface's static shell (no data
in it), the acknowledgement links ``/ack/{token}`` and the panic webhook ``/panic/{site}``, which carry
their own HMAC signatures. Every view of evidence, every export and every acknowledgement is written
to the audit log in the store.

Handlers are plain ``def``: FastAPI runs them on its thread pool, where blocking on the store or on a
Ray actor is fine.

Hardening (see README, "Security"): every response carries security headers; every request body is
limited (``api.max_body_bytes``); a state-changing ``/api`` request must be JSON and come from this
origin (``Origin`` / ``Sec-Fetch-Site``), so no other page, even a same-site one, can post for a
logged-in operator; logout revokes the session in the store; store errors answer 503.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations at runtime, and
# they name aliases local to create_app (Viewer, Operator...).
import asyncio
import html
import ipaddress
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from flux_secu.actors.panic import _ACK_FORM
from flux_secu.actors.rules import override_key
from flux_secu.alerts.ack import redeem, revocation_key
from flux_secu.alerts.panic import MAX_MESSAGE_BYTES
from flux_secu.alerts.report import build_report
from flux_secu.api.auth import (
    Authenticator,
    HashingBusy,
    LoginThrottle,
    TokenRejected,
    User,
    derive_key,
    role_allows,
)
from flux_secu.api.backend import Backend
from flux_secu.api.export import build_export, evidence_intact
from flux_secu.api.guard import BodyLimit, RequestGuard, client_address
from flux_secu.api.views import (
    MEDIA_TYPES,
    CameraHealth,
    SnapshotIndex,
    evidence_of,
    incident_detail,
    incident_summary,
    matches,
    site_view,
)
from flux_secu.config import Config
from flux_secu.redact import redact_text
from flux_secu.rules.incident import IncidentKind, IncidentState
from flux_secu.store.base import Store, StoredIncident, StoreUnavailable, verify_audit_chain

log = structlog.get_logger("flux_secu.api")

STATIC = Path(__file__).parent / "static"
COOKIE = "flux_session"
LIVE_VIEW_AUDIT_S = 300.0
"""A user watching a camera's live snapshots is audited once per this many seconds, not per refresh."""
EVIDENCE_VIEW_AUDIT_S = 60.0
"""A video seeking fetches its clip in many Range parts: one view, audited once per this many seconds
(whatever the range; a fetch after a pause is a new view)."""
MAX_VIEW_KEYS = 10_000
MAX_OVERRIDE_S = 7 * 86400.0
IncidentId = Annotated[str, PathParam(min_length=1, max_length=200)]
Ident = Annotated[str, PathParam(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LoginRequest(_Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class OverrideRequest(_Body):
    armed: bool
    for_s: float = Field(gt=0, le=MAX_OVERRIDE_S, description="Seconds until the calendar rules again.")


class HoldRequest(_Body):
    hold: bool


def _message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(config: Config, store: Store, backend: Backend, secret: bytes, *,
               clock: Callable[[], float] = time.time, panic_webhook: bool = False) -> FastAPI:
    """The app; ``secret`` is the deployment's secret (the acknowledgement-link one), from which the
    session and export keys are derived."""
    api_cfg = config.api
    if api_cfg is None:
        raise ValueError("the config has no api section")
    auth = Authenticator(list(api_cfg.users), secret, api_cfg.session_ttl_s,
                         concurrency=api_cfg.login_concurrency)
    throttle = LoginThrottle(api_cfg.login_max_failures, api_cfg.login_window_s, clock)
    export_key = derive_key(secret, "export")
    health = CameraHealth()
    evidence_dir = config.evidence_dir
    snapshots = SnapshotIndex(store, evidence_dir)
    live_views: dict[tuple[str, str], float] = {}
    views_lock = threading.Lock()
    proxies = [ipaddress.ip_network(p, strict=False) for p in api_cfg.trusted_proxies]
    sites = {s.id: s for s in config.sites}
    cameras = {c.id: (s, c) for s in config.sites for c in s.cameras}

    # No Swagger page: it loads its scripts from a CDN, which an isolated site network cannot reach.
    app = FastAPI(title="flux-secu", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Sites, caméras, incidents et prise en charge (flux-secu).")
    bearer = HTTPBearer(auto_error=False, description="Session token from POST /api/login")
    cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="Session cookie set by POST /api/login")

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _message(exc)}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    def _store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("api_store_unavailable", error=str(exc))
        return JSONResponse({"detail": "store unavailable, try again"}, status_code=503)

    @app.exception_handler(sqlite3.Error)
    def _sqlite_error(request: Request, exc: sqlite3.Error) -> JSONResponse:
        # A locked, full or read-only database file: the request may work later, it is not a bug.
        log.error("api_store_error", error=f"{type(exc).__name__}: {exc}")
        return JSONResponse({"detail": "store unavailable (database error), try again"}, status_code=503)

    def client(request: Request) -> str:
        peer = request.client.host if request.client else ""
        return client_address(peer, request.headers.get("x-forwarded-for"), proxies)

    def once_per(key: tuple[str, str], period_s: float, views: dict[tuple[str, str], float]) -> bool:
        """True when ``key`` was not seen within ``period_s`` (and note it now); bounded memory."""
        now = clock()
        with views_lock:
            if now - views.get(key, -1e18) < period_s:
                return False
            views[key] = now
            if len(views) > MAX_VIEW_KEYS:
                for old in [k for k, t in views.items() if now - t >= period_s]:
                    del views[old]
                while len(views) > MAX_VIEW_KEYS:
                    del views[next(iter(views))]
            return True

    evidence_views: dict[tuple[str, str], float] = {}

    def audit(user: str, action: str, target: str, request: Request, **data: Any) -> None:
        store.append_audit(clock(), user, action, target, {"ip": client(request), **data})

    def current_user(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        session: Annotated[str | None, Depends(cookie)],
    ) -> User:
        token = creds.credentials if creds is not None else session
        if not token:
            raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
        try:
            user = auth.verify(token)
        except TokenRejected as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        if store.is_revoked(f"session:{user.session}", clock()):
            raise HTTPException(401, "logged out: log in again", headers={"WWW-Authenticate": "Bearer"})
        return user

    def role(needed: str) -> Callable[[User], User]:
        def check(user: Annotated[User, Depends(current_user)]) -> User:
            if not role_allows(user.role, needed):
                raise HTTPException(403, f"needs the {needed} role (you are {user.role})")
            return user
        return check

    Viewer = Annotated[User, Depends(role("viewer"))]
    Operator = Annotated[User, Depends(role("operator"))]
    Admin = Annotated[User, Depends(role("admin"))]

    def find(incident_id: str) -> StoredIncident:
        stored = store.get_incident(incident_id)
        if stored is None:
            raise HTTPException(404, f"unknown incident {incident_id!r}")
        return stored

    def site_or_404(site_id: str) -> Any:
        if site_id not in sites:
            raise HTTPException(404, f"unknown site {site_id!r}")
        return sites[site_id]

    # --- probes ---------------------------------------------------------------------------------

    @app.get("/health", tags=["probes"])
    def health_probe() -> dict[str, str]:
        """Liveness: the process answers. No authentication."""
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"], responses={503: {"description": "not ready"}})
    def ready_probe() -> JSONResponse:
        """Readiness: the store answers, and the pipeline parts this instance relies on."""
        checks: dict[str, bool] = {}
        try:
            store.get_setting("ready-probe")
            checks["store"] = True
        except Exception:
            checks["store"] = False
        checks.update(backend.ready())
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    # --- sessions -------------------------------------------------------------------------------

    @app.post("/api/login", tags=["session"], responses={401: {}, 429: {}})
    async def login(body: LoginRequest, request: Request, response: Response) -> dict[str, Any]:
        # async: a login waits for its password check as a future, holding no request thread, so a
        # flood of guesses cannot take the threads every other request needs.
        address = client(request)
        wait = throttle.begin(address, body.name)  # counted before the check: parallel tries too
        if wait > 0:
            raise HTTPException(429, f"too many failed logins, try again in {int(wait) + 1} s",
                                headers={"Retry-After": str(int(wait) + 1)})
        try:
            future = auth.submit_check(body.name, body.password, known=throttle.known(address, body.name))
            user = await asyncio.wait_for(asyncio.wrap_future(future), auth.wait_s)
        except (HashingBusy, TimeoutError):
            # Not a wrong password: not counted. 429, not 503: the server is fine, there are too many
            # logins at once (a flood), and the client should retry later.
            throttle.succeeded(address, body.name)
            raise HTTPException(429, "too many logins at once, try again",
                                headers={"Retry-After": "2"}) from None
        if user is None:
            await run_in_threadpool(audit, body.name, "login_failed", "", request)
            raise HTTPException(401, "wrong user name or password")
        throttle.succeeded(address, body.name)
        throttle.remember(address, body.name)
        token = auth.issue(user)
        response.set_cookie(COOKIE, token, max_age=int(auth.ttl_s), httponly=True, samesite="lax",
                            secure=api_cfg.cookies_secure, path="/")
        await run_in_threadpool(audit, user.name, "login", "", request)
        return {"token": token, "user": user.name, "role": user.role, "expires_in_s": auth.ttl_s}

    @app.post("/api/logout", tags=["session"])
    def logout(user: Viewer, request: Request, response: Response) -> dict[str, bool]:
        """End the session everywhere: its token is revoked in the store until it would expire."""
        store.revoke(f"session:{user.session}", user.expires_at)
        response.delete_cookie(COOKIE, path="/", secure=api_cfg.cookies_secure, httponly=True,
                               samesite="lax")
        audit(user.name, "logout", "", request)
        return {"ok": True}

    @app.get("/api/me", tags=["session"])
    def me(user: Viewer) -> dict[str, str]:
        return {"user": user.name, "role": user.role, "timezone": config.timezone}

    # --- sites ----------------------------------------------------------------------------------

    @app.get("/api/sites", tags=["sites"])
    def list_sites(user: Viewer) -> list[dict[str, Any]]:
        now = clock()
        return [site_view(config, s, store.get_setting(override_key(s.id)), now) for s in config.sites]

    @app.get("/api/sites/{site_id}", tags=["sites"], responses={404: {}})
    def get_site(site_id: Ident, user: Viewer) -> dict[str, Any]:
        site = site_or_404(site_id)
        return site_view(config, site, store.get_setting(override_key(site_id)), clock())

    @app.post("/api/sites/{site_id}/override", tags=["sites"], responses={404: {}})
    def set_override(site_id: Ident, body: OverrideRequest, user: Operator,
                     request: Request) -> dict[str, Any]:
        """Arm (``armed: true``) or disarm the site by hand for ``for_s`` seconds."""
        site = site_or_404(site_id)
        now = clock()
        setting = {"armed": body.armed, "until": now + body.for_s, "by": user.name, "set_at": now}
        store.put_setting(override_key(site_id), setting)
        audit(user.name, "arm" if body.armed else "disarm", site_id, request, until=setting["until"])
        return site_view(config, site, setting, now)

    @app.delete("/api/sites/{site_id}/override", tags=["sites"], responses={404: {}})
    def clear_override(site_id: Ident, user: Operator, request: Request) -> dict[str, Any]:
        """Back to the calendar now."""
        site = site_or_404(site_id)
        now = clock()
        setting = {"armed": False, "until": 0.0, "by": user.name, "set_at": now}
        store.put_setting(override_key(site_id), setting)
        audit(user.name, "override_cleared", site_id, request)
        return site_view(config, site, setting, now)

    @app.get("/api/sites/{site_id}/report", tags=["sites"], responses={404: {}})
    def night_report(site_id: Ident, user: Viewer, request: Request,
                     night: Annotated[date | None, Query(description="default: last night")] = None,
                     ) -> dict[str, Any]:
        site = site_or_404(site_id)
        tz = config.site_timezone(site)
        night = night or (datetime.fromtimestamp(clock(), tz) - timedelta(days=1)).date()
        incidents = [s for s in store.incidents() if s.incident.site == site_id]
        events = {s.incident.id: [e.kind for e in store.events(s.incident.id)] for s in incidents}
        try:
            report = build_report(site_id, site.name, night, incidents, events, tz,
                                  site.escalation.report_at or dtime(7, 30))
        except OverflowError:
            raise HTTPException(422, f"night: {night} is out of range") from None
        audit(user.name, "report_view", site_id, request, night=night.isoformat())
        return {"site": site_id, "night": night.isoformat(), "title": report.title, "body": report.body,
                "counts": report.counts, "lines": report.lines}

    # --- cameras --------------------------------------------------------------------------------

    @app.get("/api/cameras", tags=["cameras"])
    def list_cameras(user: Viewer, site: Annotated[str | None, Query(max_length=64)] = None,
                     ) -> list[dict[str, Any]]:
        faults = {s.incident.camera for s in store.incidents()
                  if s.incident.kind == IncidentKind.CAMERA_FAULT
                  and s.state not in (IncidentState.ACKNOWLEDGED, IncidentState.CLOSED)}
        out = []
        for cam_id, (s, cam) in cameras.items():
            if site is not None and s.id != site:
                continue
            stats = backend.camera_stats(cam_id)
            if stats is not None:  # an error text may quote the camera's URL, credentials and all
                stats = {k: redact_text(v) if isinstance(v, str) else v for k, v in stats.items()}
            status = "fault" if cam_id in faults else health.status(cam_id, stats)
            out.append({"id": cam_id, "site": s.id, "site_name": s.name, "health": status,
                        "detect_fps": cam.detect_fps, "stats": stats,
                        "snapshot": f"/api/cameras/{cam_id}/snapshot.jpg"})
        return out

    @app.get("/api/cameras/{camera_id}/snapshot.jpg", tags=["cameras"],
             responses={200: {"content": {"image/jpeg": {}}}, 404: {}}, response_class=Response)
    def camera_snapshot(camera_id: Ident, user: Viewer, request: Request) -> Response:
        """The camera's latest frame, else the snapshot of its latest incident with evidence."""
        if camera_id not in cameras:
            raise HTTPException(404, f"unknown camera {camera_id!r}")
        if once_per((user.name, camera_id), LIVE_VIEW_AUDIT_S, live_views):
            audit(user.name, "live_view", camera_id, request)
        headers = {"Cache-Control": "no-store"}
        jpeg = backend.latest_jpeg(camera_id)
        if jpeg:
            return Response(jpeg, media_type="image/jpeg", headers={**headers, "X-Snapshot": "live"})
        latest = snapshots.latest(camera_id)
        if latest is None:
            raise HTTPException(404, f"no image yet for camera {camera_id!r}")
        return FileResponse(latest[1], media_type="image/jpeg",
                            headers={**headers, "X-Snapshot": f"incident {latest[0]}"})

    # --- incidents ------------------------------------------------------------------------------

    def epoch(value: datetime | None) -> float | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=ZoneInfo(config.timezone))
        try:
            return value.timestamp()
        except (OverflowError, ValueError, OSError):
            raise HTTPException(422, f"time out of range: {value}") from None

    @app.get("/api/incidents", tags=["incidents"])
    def list_incidents(
        user: Viewer,
        request: Request,
        site: Annotated[str | None, Query(max_length=64)] = None,
        camera: Annotated[str | None, Query(max_length=64)] = None,
        kind: IncidentKind | None = None,
        state: IncidentState | None = None,
        since: Annotated[datetime | None, Query(description="Opened at or after (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="Opened before (ISO 8601)")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """Newest first."""
        t0, t1 = epoch(since), epoch(until)
        chosen = [s for s in reversed(store.incidents())
                  if matches(s, site=site, camera=camera, kind=kind, state=state, since=t0, until=t1)][:limit]
        asked = {"site": site, "camera": camera, "kind": kind, "state": state, "since": since,
                 "until": until}
        audit(user.name, "incident_list", "", request, count=len(chosen),
              query={k: str(v) for k, v in asked.items() if v is not None})
        return [incident_summary(s, store.events(s.incident.id)) for s in chosen]

    @app.get("/api/incidents/{incident_id}", tags=["incidents"], responses={404: {}})
    def get_incident(incident_id: IncidentId, user: Viewer, request: Request) -> dict[str, Any]:
        stored = find(incident_id)
        audit(user.name, "incident_view", incident_id, request)
        return incident_detail(stored, store.events(incident_id))

    @app.get("/api/incidents/{incident_id}/evidence/{file}", tags=["incidents"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}, "video/mp4": {}}}, 404: {}})
    def get_evidence(incident_id: IncidentId, file: Literal["snapshot.jpg", "clip.mp4"], user: Viewer,
                     request: Request) -> Response:
        find(incident_id)
        ev = evidence_of(incident_id, store.events(incident_id), evidence_dir).get(file)
        if ev is None or not ev.path.is_file():
            raise HTTPException(404, f"no {file} for incident {incident_id!r}")
        # Every delivery is audited, whatever its range; the parts of one view (a video seeking)
        # once per EVIDENCE_VIEW_AUDIT_S.
        if once_per((user.name, f"{incident_id}/{file}"), EVIDENCE_VIEW_AUDIT_S, evidence_views):
            audit(user.name, "evidence_view", f"{incident_id}/{file}", request, sha256=ev.sha256,
                  range=request.headers.get("range", "")[:100])
        return FileResponse(ev.path, media_type=MEDIA_TYPES[file], headers={"Cache-Control": "private"})

    @app.post("/api/incidents/{incident_id}/acknowledge", tags=["incidents"], responses={404: {}})
    def acknowledge(incident_id: IncidentId, user: Operator, request: Request) -> dict[str, Any]:
        """Take the incident in charge: the on-call chain stops."""
        stored = find(incident_id)
        first = backend.acknowledge(stored.incident, user.name, "api")
        audit(user.name, "acknowledge", incident_id, request, via="api", first=first)
        return {"ok": True, "first": first, "incident": incident_id}

    @app.post("/api/incidents/{incident_id}/legal-hold", tags=["incidents"], responses={404: {}})
    def set_legal_hold(incident_id: IncidentId, body: HoldRequest, user: Admin,
                       request: Request) -> dict[str, Any]:
        """Keep (or release) the incident's evidence beyond the retention period."""
        find(incident_id)
        now = clock()
        store.record_event(incident_id, "legal_hold", now, {"hold": body.hold, "by": user.name},
                           key=f"legal_hold:{time.time_ns()}")
        audit(user.name, "legal_hold", incident_id, request, hold=body.hold)
        return {"ok": True, "hold": body.hold}

    @app.get("/api/incidents/{incident_id}/export", tags=["incidents"], response_class=Response,
             responses={200: {"content": {"application/zip": {}}}, 404: {}})
    def export(incident_id: IncidentId, user: Operator, request: Request) -> Response:
        """The incident, its timeline and its evidence as a signed zip (see README, "Evidence export")."""
        stored = find(incident_id)
        events = store.events(incident_id)
        detail = incident_detail(stored, events)
        evidence = evidence_of(incident_id, events, evidence_dir)
        intact = {name: evidence_intact(ev) for name, ev in evidence.items()}
        archive = build_export(export_key, {**detail["incident"], "state": detail["state"],
                                            "legal_hold": detail["legal_hold_detail"], "intact": intact},
                               detail["timeline"], evidence, user.name, clock())
        audit(user.name, "export", incident_id, request, files=sorted(evidence), intact=intact)
        name = f"flux-secu-{incident_id}.zip"
        return Response(archive, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # --- audit log ------------------------------------------------------------------------------

    @app.get("/api/audit", tags=["audit"])
    def audit_log(user: Admin, request: Request,
                  after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                  who: Annotated[str | None, Query(max_length=64)] = None,
                  action: Annotated[str | None, Query(max_length=64)] = None,
                  target: Annotated[str | None, Query(max_length=200)] = None) -> list[dict[str, Any]]:
        records = [r for r in store.audit_log(after_seq=after_seq)
                   if (who is None or r.user == who) and (action is None or r.action == action)
                   and (target is None or r.target.startswith(target))][:limit]
        return [{"seq": r.seq, "ts": r.ts, "user": r.user, "action": r.action, "target": r.target,
                 "data": r.data, "hash": r.hash} for r in records]

    @app.get("/api/audit/verify", tags=["audit"])
    def audit_verify(user: Admin, request: Request) -> dict[str, Any]:
        """Check the audit log's hash chain: ``first_broken`` is the first record that does not chain."""
        records = store.audit_log()
        broken = verify_audit_chain(records)
        audit(user.name, "audit_verify", "audit", request, ok=broken is None)
        return {"ok": broken is None, "records": len(records), "first_broken": broken}

    @app.post("/api/audit/purge", tags=["audit"])
    def audit_purge(user: Admin, request: Request) -> dict[str, Any]:
        """Remove the audit records older than ``store.audit_retention_days`` (one audited operation)."""
        now = clock()
        before = now - config.store.audit_retention_days * 86400.0
        removed = store.purge_audit(before, user.name, now)
        return {"ok": True, "removed": removed, "before": before}

    @app.post("/api/incidents/{incident_id}/revoke-links", tags=["incidents"], responses={404: {}})
    def revoke_links(incident_id: IncidentId, user: Admin, request: Request) -> dict[str, Any]:
        """Make every acknowledgement link of the incident unusable (a leaked message)."""
        find(incident_id)
        store.revoke(revocation_key(incident_id), clock() + config.notifications.ack_link_ttl_s + 60)
        audit(user.name, "links_revoked", incident_id, request)
        return {"ok": True, "incident": incident_id}

    # --- acknowledgement links and the panic webhook (their own signatures) ----------------------

    token_path = Annotated[str, PathParam(min_length=10, max_length=1024, pattern=r"^[A-Za-z0-9_.=-]+$")]

    @app.get("/ack/{token}", tags=["links"], response_class=HTMLResponse)
    def ack_page(token: token_path) -> HTMLResponse:
        """A confirmation page: a link preview (mail, chat) must never acknowledge by itself."""
        return HTMLResponse(_ACK_FORM)

    @app.post("/ack/{token}", tags=["links"], responses={403: {}, 404: {}, 409: {}})
    def ack_link(token: token_path, request: Request) -> Response:
        """Acknowledge through a signed link: once (the first POST wins), while the incident is open."""
        outcome, claim = redeem(store, secret, token, clock(),
                                lambda incident, contact: backend.acknowledge(incident, contact, "link"))
        if claim is None or outcome.status != 200:
            log.warning("acknowledgement_refused", reason=outcome.answer.get("reason"))
        if claim is not None and outcome.status in (200, 409):
            audit(claim.contact, "acknowledge" if outcome.status == 200 else "acknowledge_refused",
                  claim.incident_id, request, via="link", link_id=claim.token_id,
                  first=outcome.status == 200)
        return _ack_answer(request, outcome.status, outcome.answer)

    if panic_webhook:
        @app.post("/panic/{site}", tags=["links"], status_code=202,
                  responses={400: {}, 401: {}, 403: {}, 404: {}, 409: {}, 411: {}, 413: {}, 503: {}})
        async def panic(site: Annotated[str, PathParam(max_length=128)], request: Request) -> JSONResponse:
            """A staff panic button's press (signed JSON body; see README, "Panic button")."""
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"status": "rejected", "reason": "length_required"}, status_code=411)
            if not length.isdigit():
                return JSONResponse({"status": "rejected", "reason": "malformed"}, status_code=400)
            if int(length) > MAX_MESSAGE_BYTES:
                return JSONResponse({"status": "rejected", "reason": "too_large"}, status_code=413)
            raw = await request.body()
            answer = await run_in_threadpool(backend.panic, site, raw, client(request))
            if answer is None:
                return JSONResponse({"status": "error", "reason": "no panic ingress"}, status_code=503)
            return JSONResponse(answer[1], status_code=answer[0])

    # --- web interface --------------------------------------------------------------------------

    index = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    def home() -> HTMLResponse:
        return HTMLResponse(index)

    @app.get("/incidents/{incident_id}", include_in_schema=False)
    def incident_page(incident_id: str) -> HTMLResponse:
        """The evidence link of notifications: the web interface opens on that incident."""
        return HTMLResponse(index)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(RequestGuard, public_url=config.notifications.public_url)
    app.add_middleware(BodyLimit, max_bytes=max(api_cfg.max_body_bytes, MAX_MESSAGE_BYTES))
    return app


def _ack_answer(request: Request, status: int, answer: dict[str, Any]) -> Response:
    """JSON for programs; a short page for the browser that posted the confirmation form."""
    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse(answer, status_code=status)
    if answer.get("ok"):
        text = f"Incident pris en charge par {answer['by']}. La chaîne d'astreinte est arrêtée."
    elif "at" in answer:
        text = f"Déjà pris en charge par {answer['by']} ({answer['reason']})."
    else:
        text = f"Lien refusé : {answer.get('reason', '')}."
    page = ('<!doctype html><html lang="fr"><meta charset="utf-8"><meta name="viewport" '
            'content="width=device-width, initial-scale=1"><title>flux-secu</title>'
            '<body style="font-family:sans-serif;max-width:30em;margin:2em auto;padding:0 1em">'
            f"<h1>flux-secu</h1><p>{html.escape(text)}</p></body></html>")
    return HTMLResponse(page, status_code=status)
