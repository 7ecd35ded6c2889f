"""Request guards of the API, as plain ASGI middleware: body limit, CSRF, security headers, client
address. No FastAPI here; ``api/app.py`` installs them.

- :class:`BodyLimit`: every request's body is refused beyond ``max_bytes`` (413) before the app reads
  it: by its ``Content-Length``, or, for a chunked body, while it arrives (it is buffered only up to
  the limit).
- :class:`RequestGuard`: a state-changing request (POST, PUT, PATCH, DELETE) under ``/api/`` must say
  ``Content-Type: application/json`` (415 otherwise: an HTML form or a ``no-cors`` fetch cannot), and
  must come from this origin: ``Sec-Fetch-Site`` ``same-origin`` or ``none`` when the browser sends
  it, ``Origin`` equal to the request's own origin or to ``public_url`` when present (403 otherwise).
  Programs (curl, scripts) send neither header and pass. The links (``/ack``) and the panic webhook
  carry their own signatures and are not cookie-authenticated: they are not concerned.
  Every response gets the security headers (CSP, frame-ancestors, nosniff, referrer policy).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self' "
     b"'unsafe-inline'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
     b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # The acknowledgement links carry their token in the path: never sent on as a Referer.
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


def client_address(peer: str, forwarded_for: str | None,
                   proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the right-most
    address of ``X-Forwarded-For`` that is not a trusted proxy (what the first proxy saw: addresses
    to its left were written by the client and prove nothing)."""
    if not proxies or not forwarded_for or not _trusted(peer, proxies):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if not hop:
            continue
        if not _trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage: trust the one thing we know
    return peer


def _trusted(address: str, proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class BodyLimit:
    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _answer(send, 400, "malformed Content-Length")
                return
            if int(length) > self.max_bytes:
                await _answer(send, 413, f"request body over {self.max_bytes} bytes")
                return
        # Read the body here (at most max_bytes of it), then hand it over: a chunked body without a
        # length cannot make the app buffer more than the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _answer(send, 413, f"request body over {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replay: list[Message] = [message]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


class RequestGuard:
    def __init__(self, app: App, public_url: str) -> None:
        self.app = app
        parts = urlsplit(public_url)
        self.public_origin = f"{parts.scheme}://{parts.netloc}".lower() if parts.netloc else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _answer(send, *refusal)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(k, v) for k, v in SECURITY_HEADERS if k not in names]]
            await send(message)

        await self.app(scope, receive, with_headers)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        if scope.get("method") not in STATE_CHANGING or not str(scope.get("path", "")).startswith("/api/"):
            return None
        fetch_site = _header(scope, b"sec-fetch-site")
        if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
            return 403, f"cross-site request refused (Sec-Fetch-Site: {fetch_site[:20]})"
        origin = _header(scope, b"origin")
        if origin is not None and origin.lower() not in self._own_origins(scope):
            return 403, "cross-origin request refused (Origin)"
        media = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return 415, "a JSON body is required (Content-Type: application/json)"
        return None

    def _own_origins(self, scope: Scope) -> set[str]:
        host = (_header(scope, b"host") or "").lower()
        scheme = str(scope.get("scheme", "http"))
        own = {f"{scheme}://{host}"} if host else set()
        if self.public_origin:
            own.add(self.public_origin)
        return own
