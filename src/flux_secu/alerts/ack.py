"""Signed, expiring acknowledgement links: whoever holds one may acknowledge its incident until it expires.

Token = base64url(payload) + "." + base64url(HMAC-SHA256(secret, payload)), payload =
``incident_id|contact|expires_at``. The standard library is enough; the secret comes from the config
(``${ENV_VAR}``) or is generated once and kept in the var directory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flux_secu.incidents.lifecycle import Transition

if TYPE_CHECKING:
    from flux_secu.store.base import Store


class AckRejected(Exception):
    """The link is malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class AckClaim:
    incident_id: str
    contact: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: bytes, incident_id: str, contact: str, expires_at: float) -> str:
    payload = f"{incident_id}|{contact}|{int(expires_at)}".encode()
    mac = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_token(secret: bytes, token: str, now: float) -> AckClaim:
    try:
        payload_b64, mac_b64 = token.split(".")
        payload, mac = _unb64(payload_b64), _unb64(mac_b64)
        incident_id, contact, expires = payload.decode().rsplit("|", 2)
        expires_at = float(int(expires))
    except (ValueError, UnicodeDecodeError):
        raise AckRejected("malformed acknowledgement link") from None
    if not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()):
        raise AckRejected("acknowledgement link signature is invalid")
    if now > expires_at:
        raise AckRejected("acknowledgement link has expired")
    return AckClaim(incident_id, contact, expires_at)


def load_secret(configured: str | None, var_dir: Path) -> bytes:
    """The configured secret, or one generated on first use and kept (so links survive restarts)."""
    if configured:
        return configured.encode()
    path = var_dir / "ack.key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def record_acknowledgement(store: Store, incident_id: str, by: str, via: str, now: float) -> bool:
    """Record that ``by`` took the incident in charge; False when it already was (the first one stands)
    or cannot be any more (closed).

    The one place that writes an acknowledgement, for the escalation actor and the API alike: every
    escalation actor stops an incident's chain at its next tick once this event is in the store.
    """
    outcome = store.transition(incident_id, Transition.ACKNOWLEDGED, now, {"by": by, "via": via})
    return outcome.applied
