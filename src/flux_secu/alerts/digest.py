"""HTTP/SIP authentication answers: Digest (RFC 7616 / RFC 3261 §22, MD5 and SHA-256) and Basic.

Shared by the Axis (VAPIX over HTTP) and SIP speaker drivers: both get a challenge
(``WWW-Authenticate`` / ``Proxy-Authenticate``) and answer it once with ``Authorization`` /
``Proxy-Authorization``. Only the scheme the device offers is answered: credentials are never sent
in clear (Basic) to a device that asked for Digest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)\s*,?')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class AuthError(Exception):
    pass


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "digest" or "basic" (lower case)
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Parse the values of one or more ``WWW-Authenticate`` headers (one challenge per header value)."""
    out: list[Challenge] = []
    for value in values:
        value = value.strip()
        scheme, _, rest = value.partition(" ")
        params: dict[str, str] = {}
        for match in _PARAM.finditer(rest):
            raw = match.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[match.group(1).lower()] = raw
        out.append(Challenge(scheme.lower(), params))
    return out


def _algorithm(challenge: Challenge) -> str:
    return challenge.params.get("algorithm", "MD5").upper()


def choose(challenges: list[Challenge]) -> Challenge:
    """The strongest challenge we can answer: Digest SHA-256, Digest MD5, then Basic."""
    def rank(ch: Challenge) -> int:
        if ch.scheme == "digest":
            base = _algorithm(ch).removesuffix("-SESS")
            return {"SHA-256": 3, "MD5": 2}.get(base, 0)
        return 1 if ch.scheme == "basic" else 0

    usable = [c for c in challenges if rank(c) > 0]
    if not usable:
        schemes = ", ".join(sorted({c.scheme for c in challenges})) or "none"
        raise AuthError(f"unsupported authentication scheme(s): {schemes}")
    return max(usable, key=rank)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(challenge: Challenge, username: str, password: str, method: str, uri: str,
                  *, nc: int = 1, cnonce: str | None = None) -> str:
    """The ``Authorization`` header value answering ``challenge`` for ``method`` on ``uri``."""
    if challenge.scheme == "basic":
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return f"Basic {token}"
    if challenge.scheme != "digest":
        raise AuthError(f"unsupported authentication scheme: {challenge.scheme}")
    p = challenge.params
    if "nonce" not in p:
        raise AuthError("digest challenge without a nonce")
    algorithm = _algorithm(challenge)
    session = algorithm.endswith("-SESS")
    hash_fn = _HASHES.get(algorithm.removesuffix("-SESS"))
    if hash_fn is None:
        raise AuthError(f"unsupported digest algorithm: {algorithm}")

    def h(text: str) -> str:
        return hash_fn(text.encode("utf-8")).hexdigest()

    realm, nonce = p.get("realm", ""), p["nonce"]
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    cnonce = cnonce or os.urandom(8).hex()
    ha1 = h(f"{username}:{realm}:{password}")
    if session:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    parts = [f"username={_quote(username)}", f"realm={_quote(realm)}", f"nonce={_quote(nonce)}",
             f"uri={_quote(uri)}"]
    if qops:
        if "auth" not in qops:
            raise AuthError(f"unsupported digest qop: {','.join(qops)}")
        ncs = f"{nc:08x}"
        response = h(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        parts += [f"response={_quote(response)}", "qop=auth", f"nc={ncs}", f"cnonce={_quote(cnonce)}"]
    else:
        if session:
            parts.append(f"cnonce={_quote(cnonce)}")
        parts.append(f"response={_quote(h(f'{ha1}:{nonce}:{ha2}'))}")
    if "algorithm" in p:
        parts.append(f"algorithm={p['algorithm']}")
    if "opaque" in p:
        parts.append(f"opaque={_quote(p['opaque'])}")
    return "Digest " + ", ".join(parts)
