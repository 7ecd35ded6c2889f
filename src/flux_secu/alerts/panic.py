"""Staff panic button ("Smart Alert"): verify a press before it goes straight to the police.

Pure logic (no Ray, no sockets, no clock of its own): the ingress actor feeds it the raw bytes of an MQTT
message or of an HTTP request body, with the site the message was addressed to and the current time.

Wire format (the same on both channels)
---------------------------------------
Where the site comes from:

- MQTT: topic ``{panic.mqtt.topic_prefix}/{site_id}`` (default ``flux-secu/panic/{site_id}``), QoS 1,
  not retained;
- HTTP: ``POST /panic/{site_id}``.

Payload: a UTF-8 JSON object with exactly these fields::

    {"device": "btn-01", "ts": 1764108000, "nonce": "3f9c2a7be1d04c55", "sig": "<64 hex chars>"}

- ``device``: the button's id as configured under ``sites[].panic.devices[].id``;
- ``ts``: when the button was pressed, integer seconds since the Unix epoch (an integer, so that the
  device and the server format it the same way in the signed string);
- ``nonce``: unique per press, 8 to 64 characters of ``[A-Za-z0-9_-]`` (a random 64-bit hex string or a
  press counter both do);
- ``sig``: lowercase hex of ``HMAC-SHA256(secret, "{site}|{device}|{ts}|{nonce}")``, the secret being the
  device's ``secret`` from the config. The site is part of the signed string, so a press captured on one
  site's topic cannot be replayed to another site's topic or URL.

A press is accepted when the site and device are known, the signature matches, ``ts`` is within
``max_skew_s`` of the server's clock, and ``(site, device, nonce)`` was not accepted before. Anything
else raises :class:`PanicRejected`, and a rejected message changes no state: only accepted presses
consume their nonce, so a forged copy of a nonce cannot block the genuine press.

Why an HMAC and not a bare per-device token: a token travels in every message, so anyone who reads one
message (a broker log, a mis-configured proxy) can forge new presses; an HMAC never reveals the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from flux_secu.config import Config

MAX_MESSAGE_BYTES = 4096
"""A press is ~150 bytes; anything much larger is not ours and is refused before JSON parsing."""
DEFAULT_REPLAY_CAPACITY = 1024
"""Accepted nonces remembered per device; far above any real press rate within the skew window."""
CHANNELS = ("mqtt", "http")

_FIELDS = frozenset({"device", "ts", "nonce", "sig"})
_DEVICE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_SIG = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PanicPress:
    """An accepted press: the proof kept with the ``panic`` incident (device, agent, time, site)."""

    site: str
    device_id: str
    agent: str
    pressed_at: float
    """Epoch seconds, from the device (signed)."""
    received_at: float
    """Epoch seconds, from the server's clock when the message was verified."""
    channel: str
    """``"mqtt"`` or ``"http"``."""
    message_id: str
    """``"{site}:{device}:{nonce}"``: unique per press (with ``pressed_at``: a rebooted button reuses
    nonces), the incident's idempotency key."""
    stale: bool = False
    """Signed by the device, but its clock is outside ``max_skew_s``: no proof of an emergency now (a
    drifting clock, or an old press replayed), still never dropped in silence: a call back."""


class RejectReason(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_SITE = "unknown_site"
    UNKNOWN_DEVICE = "unknown_device"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    REPLAYED = "replayed"


# What the webhook answers for each refusal (the MQTT channel has no answer; it only logs).
HTTP_STATUS: dict[RejectReason, int] = {
    RejectReason.MALFORMED: 400,
    RejectReason.UNKNOWN_SITE: 404,
    RejectReason.UNKNOWN_DEVICE: 403,
    RejectReason.BAD_SIGNATURE: 401,
    RejectReason.STALE: 401,  # outside the freshness window: not authenticated any more
    RejectReason.REPLAYED: 409,
}


class PanicRejected(Exception):
    """A message that is not a valid press. ``detail`` is safe to log: never the signature or a secret."""

    def __init__(self, reason: RejectReason, detail: str = "", device: str | None = None,
                 press: PanicPress | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail
        self.device = device
        """The claimed device id when it was well-formed (attacker-controlled for unknown devices)."""
        self.press = press
        """For a stale press only: the press itself, authenticated (``stale=True``)."""


@dataclass(frozen=True)
class PanicDevice:
    id: str
    agent: str
    secret: bytes


def canonical(site: str, device: str, ts: int, nonce: str) -> bytes:
    """The signed string. Device ids, site ids and nonces cannot contain ``|``, so it is unambiguous."""
    return f"{site}|{device}|{ts}|{nonce}".encode()


def sign(site: str, device: str, secret: str | bytes, ts: int, nonce: str) -> str:
    """The ``sig`` field a device computes (also used by tests and by ``flux-secu`` tooling)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, canonical(site, device, ts, nonce), hashlib.sha256).hexdigest()


def press_payload(site: str, device: str, secret: str | bytes, ts: int, nonce: str) -> bytes:
    """A complete signed message, as a device sends it."""
    sig = sign(site, device, secret, ts, nonce)
    return json.dumps({"device": device, "ts": ts, "nonce": nonce, "sig": sig}).encode()


@dataclass
class _Seen:
    """Accepted nonces of one device with their timestamps, and a floor below which all are refused."""

    nonces: dict[str, int]
    floor: int | None = None


class PanicVerifier:
    """Checks presses against the configured devices and remembers accepted nonces.

    Thread-safe: the MQTT network thread and the HTTP server threads share one verifier, so that a
    press accepted on one channel is a replay on the other.
    """

    def __init__(
        self,
        devices: Mapping[str, Mapping[str, PanicDevice]],
        max_skew_s: float = 120.0,
        replay_capacity: int = DEFAULT_REPLAY_CAPACITY,
    ) -> None:
        if max_skew_s <= 0 or replay_capacity < 1:
            raise ValueError("max_skew_s must be > 0 and replay_capacity >= 1")
        self.devices = {site: dict(devs) for site, devs in devices.items()}
        self.max_skew_s = max_skew_s
        self.replay_capacity = replay_capacity
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._lock = threading.Lock()

    @property
    def sites(self) -> list[str]:
        return sorted(self.devices)

    def verify(self, site: str, raw: bytes, channel: str, now: float) -> PanicPress:
        """The press, or :class:`PanicRejected`; on success its nonce is remembered."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        devices = self.devices.get(site)
        if devices is None:
            raise PanicRejected(RejectReason.UNKNOWN_SITE, f"no panic devices for site {safe_text(site)!r}")
        device_id, ts, nonce, sig = _parse(raw)
        device = devices.get(device_id)
        if device is None:
            raise PanicRejected(RejectReason.UNKNOWN_DEVICE, "device not configured for this site",
                                device_id)
        expected = sign(site, device_id, device.secret, ts, nonce)
        # Constant-time: a timing difference would let an attacker guess the signature byte by byte.
        if not hmac.compare_digest(expected, sig):
            raise PanicRejected(RejectReason.BAD_SIGNATURE, "signature does not match", device_id)
        # Freshness is checked after authentication, so unsigned noise learns nothing about our clock.
        skew = ts - now
        if abs(skew) > self.max_skew_s:
            when = "in the future" if skew > 0 else "old"
            stale = PanicPress(site=site, device_id=device_id, agent=device.agent, pressed_at=float(ts),
                               received_at=now, channel=channel, message_id=f"{site}:{device_id}:{nonce}",
                               stale=True)
            raise PanicRejected(RejectReason.STALE, f"timestamp {abs(skew):.0f} s {when}", device_id, stale)
        with self._lock:
            seen = self._seen.setdefault((site, device_id), _Seen({}))
            if nonce in seen.nonces or (seen.floor is not None and ts <= seen.floor):
                raise PanicRejected(RejectReason.REPLAYED, "nonce already used", device_id)
            self._remember(seen, nonce, ts, now)
        return PanicPress(
            site=site, device_id=device_id, agent=device.agent, pressed_at=float(ts), received_at=now,
            channel=channel, message_id=f"{site}:{device_id}:{nonce}",
        )

    def forget(self, press: PanicPress) -> None:
        """Release the nonce of a press that could not be handed over, so the device may resend it."""
        _site, device_id, nonce = press.message_id.split(":", 2)
        with self._lock:
            seen = self._seen.get((press.site, device_id))
            if seen is not None:
                seen.nonces.pop(nonce, None)

    def remembered(self) -> int:
        with self._lock:
            return sum(len(s.nonces) for s in self._seen.values())

    def _remember(self, seen: _Seen, nonce: str, ts: int, now: float) -> None:
        # A nonce only needs remembering while its timestamp is still fresh: older copies are STALE.
        horizon = now - self.max_skew_s
        for old in [n for n, t in seen.nonces.items() if t < horizon]:
            del seen.nonces[old]
        if len(seen.nonces) >= self.replay_capacity:
            # Full (only genuine, signed presses get here): forget the oldest but raise the floor to its
            # timestamp, so that dropping it can never let its replay through.
            oldest = min(seen.nonces, key=seen.nonces.__getitem__)
            dropped = seen.nonces.pop(oldest)
            seen.floor = dropped if seen.floor is None else max(seen.floor, dropped)
        seen.nonces[nonce] = ts


def _parse(raw: bytes) -> tuple[str, int, str, str]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise PanicRejected(RejectReason.MALFORMED, f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PanicRejected(RejectReason.MALFORMED, "not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise PanicRejected(RejectReason.MALFORMED, "not a JSON object")
    missing = sorted(_FIELDS - data.keys())
    extra = sorted(data.keys() - _FIELDS)
    if missing or extra:
        what = f"missing {', '.join(missing)}" if missing else f"unknown fields {safe_text(', '.join(extra))}"
        raise PanicRejected(RejectReason.MALFORMED, what)
    device, ts, nonce, sig = data["device"], data["ts"], data["nonce"], data["sig"]
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise PanicRejected(RejectReason.MALFORMED, "device must be a device id")
    # bool is an int in Python; JSON true is not a timestamp.
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 < ts < 2**40:
        raise PanicRejected(RejectReason.MALFORMED, "ts must be integer epoch seconds", device)
    if not isinstance(nonce, str) or not _NONCE.match(nonce):
        raise PanicRejected(RejectReason.MALFORMED, "nonce must be 8-64 characters [A-Za-z0-9_-]", device)
    if not isinstance(sig, str) or not _SIG.match(sig):
        raise PanicRejected(RejectReason.MALFORMED, "sig must be 64 lowercase hex characters", device)
    return device, ts, nonce, sig


def safe_text(text: str, limit: int = 64) -> str:
    """Attacker-supplied text goes into logs: keep it short and printable."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "")


def verifier_from_config(config: Config, sites: set[str] | None = None) -> PanicVerifier:
    """A verifier for every site of ``config`` that has panic devices.

    ``sites`` restricts it to those sites (the ones an escalation actor exists for).
    """
    devices: dict[str, dict[str, PanicDevice]] = {}
    for site in config.sites:
        if site.panic is None or (sites is not None and site.id not in sites):
            continue
        devices[site.id] = {
            d.id: PanicDevice(d.id, d.agent, d.secret.get_secret_value().encode()) for d in site.panic.devices
        }
    return PanicVerifier(devices, max_skew_s=config.panic.max_skew_s)
