"""Who may use the API: argon2 password checks, signed expiring session tokens, a login throttle.

No Ray and no HTTP here: the FastAPI app (``api/app.py``) only calls these.

- Passwords: argon2id (argon2-cffi). The hash carries its own cost parameters, so a hash made with a
  cheap profile (tests) verifies just as fast, and ``flux-secu user hash`` makes production ones with
  the library's defaults. An unknown user name costs one verification too: the answer time does not
  tell which names exist.
- Sessions: ``itsdangerous`` timed signatures of ``{user, role, fingerprint}`` with a key derived from
  the deployment's secret. The fingerprint is a hash of the user's password hash: changing a password
  (or a role) in the config ends that user's sessions; removing the user ends them too.
- Login throttle: failed attempts counted per client address and per user name in a sliding window;
  past the limit, logins are refused (429) until the oldest failure leaves the window.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from flux_secu.config import ApiUserConfig

Role = Literal["viewer", "operator", "admin"]
_RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}


def role_allows(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


def derive_key(secret: bytes, purpose: str) -> bytes:
    """One deployment secret, a distinct key per use (sessions, exports): a key leaked from one use
    cannot sign for another."""
    return hmac.new(secret, f"flux-secu {purpose}".encode(), hashlib.sha256).digest()


def hash_password(password: str, hasher: PasswordHasher | None = None) -> str:
    return (hasher or PasswordHasher()).hash(password)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role


class TokenRejected(Exception):
    """A session token that is malformed, forged, expired or no longer matches its user."""


class Authenticator:
    def __init__(self, users: list[ApiUserConfig], secret: bytes, ttl_s: float) -> None:
        self._users = {u.name: u for u in users}
        self._hasher = PasswordHasher()
        # Verified against when the name is unknown, so that both answers take the same time.
        self._dummy = hash_password("flux-secu dummy password", PasswordHasher(time_cost=2))
        self._serializer = URLSafeTimedSerializer(derive_key(secret, "session"), salt="session")
        self.ttl_s = ttl_s

    def check_password(self, name: str, password: str) -> User | None:
        user = self._users.get(name)
        encoded = user.password_hash.get_secret_value() if user else self._dummy
        try:
            self._hasher.verify(encoded, password)
        except (VerificationError, InvalidHashError):
            return None
        return User(user.name, user.role) if user else None

    def issue(self, user: User) -> str:
        return self._serializer.dumps({"u": user.name, "r": user.role, "f": self._fingerprint(user.name)})

    def verify(self, token: str) -> User:
        try:
            data = self._serializer.loads(token, max_age=self.ttl_s)
        except SignatureExpired:
            raise TokenRejected("session expired: log in again") from None
        except BadSignature:
            raise TokenRejected("invalid session token") from None
        if not isinstance(data, dict):
            raise TokenRejected("invalid session token")
        name = data.get("u")
        user = self._users.get(name) if isinstance(name, str) else None
        if user is None or data.get("r") != user.role or data.get("f") != self._fingerprint(user.name):
            raise TokenRejected("session no longer valid: log in again")
        return User(user.name, user.role)

    def _fingerprint(self, name: str) -> str:
        user = self._users[name]
        material = f"{user.role}|{user.password_hash.get_secret_value()}".encode()
        return hashlib.sha256(material).hexdigest()[:16]


class LoginThrottle:
    """At most ``max_failures`` failed logins per key (client address, user name) per ``window_s``."""

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float]) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> float:
        """Seconds until a login may be tried again for all ``keys``; 0 when it may be tried now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                failures = self._prune(key, now)
                if len(failures) >= self.max_failures:
                    wait = max(wait, failures[0] + self.window_s - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                self._prune(key, now)
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _prune(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            # Forget idle keys: a scan of many addresses must not grow memory forever.
            self._failures.pop(key, None)
        return failures
