"""What the API needs from a running pipeline, behind one small interface.

:class:`StoreBackend` works from the store alone (``flux-secu serve``): an acknowledgement is written
to the store, where every escalation actor of a running deployment sees it at its next tick and stops.
The deployment's backend (``api/actor.py``) calls the escalation actors directly instead, and adds the
live cameras and the panic webhook.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from flux_secu.alerts.ack import record_acknowledgement
from flux_secu.rules.incident import Incident
from flux_secu.store.base import Store


class Backend(Protocol):
    def acknowledge(self, incident: Incident, by: str, via: str) -> bool:
        """Stop the incident's escalation; False when it was already acknowledged."""
        ...

    def camera_stats(self, camera_id: str) -> dict[str, Any] | None:
        """The live camera's ``stats()``, or None when it is not running here."""
        ...

    def latest_jpeg(self, camera_id: str) -> bytes | None:
        """The latest frame (privacy-masked, downscaled), or None."""
        ...

    def panic(self, site: str, raw: bytes, origin: str) -> tuple[int, dict[str, Any]] | None:
        """Hand a webhook body to the panic ingress; None when no ingress runs here."""
        ...

    def ready(self) -> dict[str, bool]:
        """Named checks of the parts this backend relies on."""
        ...


class StoreBackend:
    def __init__(self, store: Store) -> None:
        self.store = store

    def acknowledge(self, incident: Incident, by: str, via: str) -> bool:
        return record_acknowledgement(self.store, incident.id, by, via, time.time())

    def camera_stats(self, camera_id: str) -> dict[str, Any] | None:
        return None

    def latest_jpeg(self, camera_id: str) -> bytes | None:
        return None

    def panic(self, site: str, raw: bytes, origin: str) -> tuple[int, dict[str, Any]] | None:
        return None

    def ready(self) -> dict[str, bool]:
        return {}
