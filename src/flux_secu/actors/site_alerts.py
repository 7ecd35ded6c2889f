"""SiteAlerts: the speakers and escalation chains of every site, in one process.

An idle Ray actor process costs ~0.6 % of a core here (its core worker wakes up every 10 ms to check
for signals) and ~60 MiB: a speaker actor and an escalation actor per site made the agglomeration's
10 sites 20 processes, 0.15 core and 1.2 GiB doing nothing most nights. Their work is rare and
small, so one process holds them all, as a camera host holds its cameras.

Each site keeps its own ``Speaker`` and ``Escalation`` (``actors/alerting.py``, the same classes a
process of their own would run), reached through ``SiteRole`` handles that are called like actor
handles: ``escalations[site].escalate.remote(incident, reason)``. Calls run on the process's threads,
so a site whose speakers take a while (a SIP call rings for seconds) delays no other site; a site's
own warnings are played one at a time, as in an actor of their own. If the process dies, Ray starts
it again: each escalation in progress resumes from the store, and nothing is announced twice (every
step is recorded under its idempotency key before it counts as done).

The warnings, escalations and panic presses handed to it are intents in the store first
(``alerts/outbox.py``): a sweeper thread carries out those still pending a moment after they were
requested (their call was lost when this process died, or never arrived), each under the same lock
as a direct call, so an effect requested twice is carried out once.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import ray
import structlog

from flux_secu.actors.alerting import Escalation, Speaker
from flux_secu.alerts import outbox
from flux_secu.alerts.panic import PanicPress
from flux_secu.config import Config, SiteConfig
from flux_secu.logs import configure_from_env
from flux_secu.rules.incident import Incident

log = structlog.get_logger("flux_secu.alerts")
Role = Literal["speaker", "escalation"]
MAX_CONCURRENT_CALLS = 64
SWEEP_S = 1.0
SWEEP_AFTER_S = 2.0
"""An intent younger than this is left to the call that requested it."""


class SiteRole:
    """One site's speaker or escalation inside a ``SiteAlerts`` process, called like an actor handle:
    ``role.method.remote(*args)`` returns the call's ObjectRef."""

    __slots__ = ("host", "role", "site")

    def __init__(self, host: Any, site: str, role: Role) -> None:
        self.host, self.site, self.role = host, site, role

    def __getattr__(self, method: str) -> _RoleMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _RoleMethod(self.host, self.site, self.role, method)

    def __reduce__(self) -> tuple[Any, ...]:
        return SiteRole, (self.host, self.site, self.role)

    def __repr__(self) -> str:
        return f"SiteRole({self.site!r}, {self.role!r})"


class _RoleMethod:
    __slots__ = ("host", "method", "role", "site")

    def __init__(self, host: Any, site: str, role: Role, method: str) -> None:
        self.host, self.site, self.role, self.method = host, site, role, method

    def remote(self, *args: Any, **kwargs: Any) -> ray.ObjectRef:
        return self.host.call.remote(self.site, self.role, self.method, *args, **kwargs)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=MAX_CONCURRENT_CALLS)
class SiteAlerts:
    def __init__(self, sites: list[SiteConfig], config: Config, dry_run: bool = False) -> None:
        configure_from_env()
        me = ray.get_runtime_context().current_actor
        self.escalations = {site.id: Escalation(site, config, dry_run) for site in sites}
        self.speakers = {
            site.id: Speaker(site, config.store, config.var_dir, SiteRole(me, site.id, "escalation"), dry_run)
            for site in sites if site.speakers
        }
        self._speaking = {site: threading.Lock() for site in self.speakers}
        self.swept = 0
        threading.Thread(target=self._sweeper, name="outbox-sweeper", daemon=True).start()

    def call(self, site: str, role: Role, method: str, *args: Any, **kwargs: Any) -> Any:
        if role == "speaker":
            with self._speaking[site]:
                return getattr(self.speakers[site], method)(*args, **kwargs)
        return getattr(self.escalations[site], method)(*args, **kwargs)

    def roles(self) -> tuple[dict[str, SiteRole], dict[str, SiteRole]]:
        """(speakers, escalations) by site id: the handles the rest of the deployment calls."""
        me = ray.get_runtime_context().current_actor
        return ({site: SiteRole(me, site, "speaker") for site in self.speakers},
                {site: SiteRole(me, site, "escalation") for site in self.escalations})

    def sweep(self, now: float | None = None) -> int:
        """Carry out the warnings, escalations and panics still pending in the store; returns how many."""
        now = time.time() if now is None else now
        done = 0
        for site, escalation in self.escalations.items():
            for intent in escalation.store.pending_intents(site):
                if intent.kind not in outbox.SWEPT or now - intent.created < SWEEP_AFTER_S:
                    continue
                log.warning("intent_swept", site=site, intent=intent.key, kind=intent.kind)
                if intent.kind == outbox.WARN and site in self.speakers:
                    self.call(site, "speaker", "warn", Incident.from_dict(intent.data["incident"]))
                elif intent.kind == outbox.ESCALATE:
                    self.call(site, "escalation", "escalate", Incident.from_dict(intent.data["incident"]),
                              intent.data.get("reason", ""))
                elif intent.kind == outbox.PANIC:
                    self.call(site, "escalation", "panic", PanicPress(**intent.data["press"]))
                else:  # a warning for a site without speakers any more: nothing to carry out
                    escalation.store.update_intent(intent.key, "failed", attempts=intent.attempts + 1,
                                                   error="no speaker on the site")
                done += 1
        self.swept += done
        return done

    def _sweeper(self) -> None:
        while True:
            time.sleep(SWEEP_S)
            try:
                self.sweep()
            except Exception as exc:  # the sweeper must survive a store outage
                log.error("outbox_sweep_failed", error=repr(exc))
