"""Who may use the API: argon2 password checks, signed expiring session tokens, a login throttle.

No Ray and no HTTP here: the FastAPI app (``api/app.py``) only calls these.

- Passwords: argon2id (argon2-cffi). The hash carries its own cost parameters, so a hash made with a
  cheap profile (tests) verifies just as fast, and ``flux-secu user hash`` makes production ones with
  the library's defaults. An unknown user name costs one verification too: the answer time does not
  tell which names exist.
- Sessions: ``itsdangerous`` timed signatures of ``{user, role, fingerprint}`` with a key derived from
  the deployment's secret. The fingerprint is a hash of the user's password hash: changing a password
  (or a role) in the config ends that user's sessions; removing the user ends them too.
- Sessions carry a random id (``s``); logging out revokes it in the store until the session's own
  expiry, so a copied token stops working at logout, on every API instance.
- Login throttle (:class:`LoginThrottle`): one atomic step counts the attempt before the password is
  checked, so parallel tries cannot slip past the limit. Counted per (client address, user name):
  someone elsewhere cannot lock the on-call user out of their own device; past the limit each further
  try waits twice as long as the one before, never longer than the window. An address is also capped
  over all names (spraying). Memory is bounded: the oldest keys are forgotten first.
- Password checks (argon2: tens of MiB each) run at most ``concurrency`` at once, a (device, name)
  that logged in before served first (:class:`HashingQueue`); an unknown name is
  checked against a dummy hash made with the same parameters as the configured users' hashes, so
  both answers cost the same.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import queue
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from flux_secu.config import ApiUserConfig

Role = Literal["viewer", "operator", "admin"]
T = TypeVar("T")
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
    session: str = ""
    """The session's id (what logout revokes); empty outside a session."""
    expires_at: float = 0.0


class HashingBusy(Exception):
    """Too many password checks in progress: the login is refused rather than queued forever."""


class TokenRejected(Exception):
    """A session token that is malformed, forged, expired or no longer matches its user."""


class Authenticator:
    def __init__(self, users: list[ApiUserConfig], secret: bytes, ttl_s: float, *,
                 concurrency: int = 2, wait_s: float = 10.0) -> None:
        self._users = {u.name: u for u in users}
        self._hasher = PasswordHasher()
        # Verified against when the name is unknown, so that both answers take the same time: the
        # dummy uses the configured users' own parameters (time and memory cost), not the defaults.
        params = None
        for u in users:
            try:
                params = extract_parameters(u.password_hash.get_secret_value())
                break
            except InvalidHashError:
                continue
        dummy_hasher = PasswordHasher.from_parameters(params) if params else PasswordHasher()
        self._dummy = dummy_hasher.hash(secrets.token_hex(16))
        self._serializer = URLSafeTimedSerializer(derive_key(secret, "session"), salt="session")
        self.hashing = HashingQueue(concurrency)
        self.wait_s = wait_s
        self.ttl_s = ttl_s

    def submit_check(self, name: str, password: str, *, known: bool = False) -> Future[User | None]:
        """The password check, queued (see :class:`HashingQueue`): its future gives the user when the
        password is right, None otherwise. ``known``: a (device, name) that logged in before; it goes
        before the others, so a flood of guesses does not keep its user out. Raises
        :class:`HashingBusy` when the queue is full."""
        return self.hashing.submit(known, lambda: self._check(name, password))

    def check_password(self, name: str, password: str, *, known: bool = False) -> User | None:
        """:meth:`submit_check`, waited for (at most ``wait_s``: :class:`HashingBusy` after that)."""
        future = self.submit_check(name, password, known=known)
        try:
            return future.result(timeout=self.wait_s)
        except FutureTimeout:
            future.cancel()
            raise HashingBusy("too many logins at once, try again") from None

    def _check(self, name: str, password: str) -> User | None:
        user = self._users.get(name)
        encoded = user.password_hash.get_secret_value() if user else self._dummy
        try:
            self._hasher.verify(encoded, password)
        except (VerificationError, InvalidHashError):
            return None
        return User(user.name, user.role) if user else None

    def issue(self, user: User) -> str:
        return self._serializer.dumps({"u": user.name, "r": user.role, "f": self._fingerprint(user.name),
                                       "s": secrets.token_urlsafe(12)})

    def verify(self, token: str) -> User:
        try:
            data, signed_at = self._serializer.loads(token, max_age=self.ttl_s, return_timestamp=True)
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
        sid = data.get("s")
        if not isinstance(sid, str) or not sid:
            raise TokenRejected("session no longer valid: log in again")
        return User(user.name, user.role, sid, signed_at.timestamp() + self.ttl_s)

    def _fingerprint(self, name: str) -> str:
        user = self._users[name]
        material = f"{user.role}|{user.password_hash.get_secret_value()}".encode()
        return hashlib.sha256(material).hexdigest()[:16]


class HashingQueue:
    """``workers`` threads run the password checks, known devices' first, then in arrival order.

    A login waits here as a future, not in a thread: a flood of guesses holds neither the server's
    request threads nor memory beyond ``max_waiting`` queued checks (more are refused at once).
    """

    def __init__(self, workers: int, max_waiting: int = 256) -> None:
        self.max_waiting = max_waiting
        self._queue: queue.PriorityQueue[tuple[int, int, Future[Any], Callable[[], Any]]] = \
            queue.PriorityQueue()
        self._order = itertools.count()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"password-check-{i}", daemon=True).start()

    def submit(self, first: bool, fn: Callable[[], T]) -> Future[T]:
        if self._queue.qsize() >= self.max_waiting:
            raise HashingBusy("too many logins at once, try again")
        future: Future[T] = Future()
        self._queue.put((0 if first else 1, next(self._order), future, fn))
        return future

    def waiting(self) -> int:
        return self._queue.qsize()

    def _work(self) -> None:
        while True:
            _, _, future, fn = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue  # its login gave up waiting
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


class LoginThrottle:
    """Failed logins per (address, name) and per address, in a sliding window of ``window_s``.

    :meth:`begin` is the one atomic step: it refuses (seconds to wait) or counts the attempt as a
    failure in advance; :meth:`succeeded` takes it back. ``max_keys`` bounds the memory.
    """

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float], *,
                 per_address: int | None = None, max_keys: int = 10_000) -> None:
        self.max_failures = max_failures
        self.per_address = per_address or 20 * max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._known: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, address: str, name: str) -> float:
        """0 when the attempt may go on (it is now counted), else the seconds to wait."""
        now = self.clock()
        pair, addr = f"pair:{address}|{name}", f"addr:{address}"
        with self._lock:
            wait = max(self._wait(pair, now, self.max_failures, backoff=True),
                       self._wait(addr, now, self.per_address, backoff=False))
            if wait > 0:
                return wait
            for key in (pair, addr):
                self._failures.setdefault(key, deque()).append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
            return 0.0

    def succeeded(self, address: str, name: str) -> None:
        """The right password: the pair's failures are forgotten, the address's count loses this try."""
        with self._lock:
            self._failures.pop(f"pair:{address}|{name}", None)
            failures = self._failures.get(f"addr:{address}")
            if failures:
                failures.pop()

    def remember(self, address: str, name: str) -> None:
        """This user logged in from this address: later logins from there are :meth:`known`."""
        with self._lock:
            self._known[f"{address}|{name}"] = self.clock()
            self._known.move_to_end(f"{address}|{name}")
            while len(self._known) > self.max_keys:
                self._known.popitem(last=False)

    def known(self, address: str, name: str) -> bool:
        with self._lock:
            return f"{address}|{name}" in self._known

    def keys(self) -> int:
        with self._lock:
            return len(self._failures)

    def _wait(self, key: str, now: float, limit: int, *, backoff: bool) -> float:
        failures = self._failures.get(key)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]  # forget idle keys
            return 0.0
        over = len(failures) - limit
        if over < 0:
            return 0.0
        if not backoff:
            return failures[0] + self.window_s - now
        # 1 s after the limit, then 2, 4, 8... since the last failure, never beyond the window.
        delay = min(self.window_s, 2.0 ** over)
        return max(0.0, failures[-1] + delay - now)
