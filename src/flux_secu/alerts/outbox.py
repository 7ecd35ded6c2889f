"""The outbox's vocabulary: the key of each kind of intent, and how a failed one is retried.

Every effect is recorded as an intent in the store before it is carried out (``Store.add_intent``),
carried out by the site's alerts (``actors/site_alerts.py``, ``actors/alerting.py``), marked done
after, and picked up again from the store after any crash. The key makes each effect happen once:
a second request for the same warning, escalation or notification finds the intent already there.
"""

from __future__ import annotations

WARN = "warn"
ESCALATE = "escalate"
PANIC = "panic"
NOTIFY = "notify"
REPORT = "report"

SWEPT = (WARN, ESCALATE, PANIC)
"""Intents handed to the site's alerts by a call, and swept from the store when the call was lost."""

MAX_ATTEMPTS = 5
"""A channel that failed this many times is recorded as failed (the chain goes on to the next contact)."""


def warn_key(incident_id: str) -> str:
    return f"{WARN}:{incident_id}"


def escalate_key(incident_id: str) -> str:
    return f"{ESCALATE}:{incident_id}"


def panic_key(incident_id: str) -> str:
    return f"{PANIC}:{incident_id}"


def channel_key(step_key: str, channel: int) -> str:
    """One notification of a chain's step on one of the contact's channels: the key of its event on the
    incident's timeline (the intent's key, store-wide, is ``notify_key``)."""
    return f"{step_key}:{channel}"


def notify_key(incident_id: str, step_key: str, channel: int) -> str:
    return f"{NOTIFY}:{incident_id}:{channel_key(step_key, channel)}"


def report_key(site: str, night: str) -> str:
    return f"{REPORT}:{site}:{night}"


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: 5, 10, 20, 40 s, then at most a minute.

    >>> [retry_delay(n) for n in (1, 2, 3, 4, 5)]
    [5.0, 10.0, 20.0, 40.0, 60.0]
    """
    return min(60.0, 5.0 * 2 ** (attempts - 1))
