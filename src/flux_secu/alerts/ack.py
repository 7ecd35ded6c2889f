"""Signed, expiring, single-use acknowledgement links.

Token = base64url(payload) + "." + base64url(HMAC-SHA256(secret, payload)), where payload is the
compact JSON ``{"v": 2, "i": incident_id, "c": contact, "e": expires_at, "n": nonce}``. JSON gives an
unambiguous encoding (a contact name may hold any character, ``|`` included), and the MAC is checked
on the raw bytes before anything in them is parsed: a forged token never reaches the parser, so a
huge number or odd text in it can only be refused, never crash the server.

A link acknowledges at most once: the first POST wins (the acknowledgement is keyed once per
incident in the store), later ones of any link of that incident are told who acknowledged and when.
A link is refused once its incident is closed, or when its incident's links were revoked.

What is stored or shown of a link is only its :func:`token_id` (a hash), never the token: whoever
reads the store, the timeline or an export cannot acknowledge.

The secret comes from the config (``${ENV_VAR}``) or is generated once and kept in the var directory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flux_secu.incidents.lifecycle import Transition
from flux_secu.rules.incident import IncidentState

if TYPE_CHECKING:
    from flux_secu.store.base import Store

TOKEN_VERSION = 2
MAX_EXPIRES = 2**40
"""No real expiry is beyond this (year ~36800): a larger one is malformed, whoever signed it."""


class AckRejected(Exception):
    """The link is malformed, forged, expired, revoked, or its incident is closed."""


@dataclass(frozen=True, slots=True)
class AckClaim:
    incident_id: str
    contact: str
    expires_at: float
    token_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_id(token: str) -> str:
    """What may be stored of a link: a hash that names it and cannot be turned back into it."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def make_token(secret: bytes, incident_id: str, contact: str, expires_at: float) -> str:
    payload = json.dumps({"v": TOKEN_VERSION, "i": incident_id, "c": contact, "e": int(expires_at),
                          "n": secrets.token_urlsafe(9)}, separators=(",", ":"), ensure_ascii=False).encode()
    mac = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_token(secret: bytes, token: str, now: float) -> AckClaim:
    """The link's claim, checked in this order: shape, MAC, then contents, then expiry."""
    parts = token.split(".")
    if len(parts) != 2:
        raise AckRejected("malformed acknowledgement link")
    try:
        payload, mac = _unb64(parts[0]), _unb64(parts[1])
    except (binascii.Error, ValueError):
        raise AckRejected("malformed acknowledgement link") from None
    if not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()):
        raise AckRejected("acknowledgement link signature is invalid")
    try:
        data: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise AckRejected("malformed acknowledgement link") from None
    if not isinstance(data, dict) or data.get("v") != TOKEN_VERSION:
        raise AckRejected("malformed acknowledgement link")
    incident, contact, expires = data.get("i"), data.get("c"), data.get("e")
    if (not isinstance(incident, str) or not isinstance(contact, str) or type(expires) is not int
            or not 0 <= expires <= MAX_EXPIRES):
        raise AckRejected("malformed acknowledgement link")
    if now > expires:
        raise AckRejected("acknowledgement link has expired")
    return AckClaim(incident, contact, float(expires), token_id(token))


def revocation_key(incident_id: str) -> str:
    """The store's revocation key of all the links of an incident (see :func:`check_usable`)."""
    return f"ack-links:{incident_id}"


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """The answer to a link's POST: HTTP status and the JSON body."""

    status: int
    answer: dict[str, Any]


def redeem(store: Store, secret: bytes, token: str, now: float,
           acknowledge: Any) -> tuple[AckOutcome, AckClaim | None]:
    """Check a link and, when it may still be used, ``acknowledge(incident, contact)`` -> first?.

    The one place that decides whether a link acknowledges, for the API and the panic ingress alike.
    """
    try:
        claim = verify_token(secret, token, now)
    except AckRejected as exc:
        return AckOutcome(403, {"ok": False, "reason": str(exc)}), None
    stored = store.get_incident(claim.incident_id)
    if stored is None:
        return AckOutcome(404, {"ok": False, "reason": "unknown incident"}), claim
    already = acknowledged_by(store, claim.incident_id)
    if already is not None:
        return AckOutcome(409, {"ok": False, "reason": _already(already), "incident": claim.incident_id,
                                "by": already[0], "at": already[1]}), claim
    if stored.state is IncidentState.CLOSED:
        return AckOutcome(403, {"ok": False, "reason": "incident is closed: link revoked"}), claim
    if store.is_revoked(revocation_key(claim.incident_id), now):
        return AckOutcome(403, {"ok": False, "reason": "acknowledgement link was revoked"}), claim
    first = bool(acknowledge(stored.incident, claim.contact))
    if not first:  # another link or an operator got there between our check and our write
        already = acknowledged_by(store, claim.incident_id) or ("?", now)
        return AckOutcome(409, {"ok": False, "reason": _already(already), "incident": claim.incident_id,
                                "by": already[0], "at": already[1]}), claim
    return AckOutcome(200, {"ok": True, "incident": claim.incident_id, "by": claim.contact,
                            "first": True}), claim


def acknowledged_by(store: Store, incident_id: str) -> tuple[str, float] | None:
    for event in store.events(incident_id):
        if event.key == "acknowledged":
            return str(event.data.get("by", "")), event.ts
    return None


def _already(by_at: tuple[str, float]) -> str:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(by_at[1], UTC).isoformat(timespec="seconds")
    return f"already acknowledged by {by_at[0]} at {when}"


def load_secret(configured: Any, var_dir: Path) -> bytes:
    """The configured secret (a ``SecretStr`` or str), or one generated on first use and kept (so
    links survive restarts). The file is created atomically with mode 0600: never readable by others,
    not even for an instant, and two processes starting at once agree on one secret."""
    if configured is not None:
        value = configured.get_secret_value() if hasattr(configured, "get_secret_value") else str(configured)
        if value:
            return value.encode()
    path = var_dir / "ack.key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = var_dir / f".ack.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs stands
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()


def record_acknowledgement(store: Store, incident_id: str, by: str, via: str, now: float) -> bool:
    """Record that ``by`` took the incident in charge; False when it already was (the first one stands)
    or cannot be any more (closed).

    The one place that writes an acknowledgement, for the escalation actor and the API alike: every
    escalation actor stops an incident's chain at its next tick once this event is in the store.
    """
    outcome = store.transition(incident_id, Transition.ACKNOWLEDGED, now, {"by": by, "via": via})
    return outcome.applied
