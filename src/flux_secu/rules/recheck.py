"""Verification after the warning ("levée de doute"): look again ``recheck_after_s`` later.

Due times are on the pipeline clock (frame capture times), like every rule decision, so a replayed
clip rechecks at the same clip time as a live night would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flux_secu.rules.incident import Incident


@dataclass(frozen=True, slots=True)
class Recheck:
    incident: Incident
    due_ts: float


@dataclass
class Rechecks:
    _pending: dict[str, list[Recheck]] = field(default_factory=dict)  # camera -> rechecks

    def schedule(self, incident: Incident, due_ts: float) -> None:
        self._pending.setdefault(incident.camera, []).append(Recheck(incident, due_ts))

    def due(self, camera: str, ts: float) -> list[Recheck]:
        """Rechecks of ``camera`` whose time has come at ``ts``; they are removed."""
        pending = self._pending.get(camera, [])
        ready = [r for r in pending if r.due_ts <= ts]
        if ready:
            self._pending[camera] = [r for r in pending if r.due_ts > ts]
        return ready

    def pending(self, camera: str) -> bool:
        return bool(self._pending.get(camera))

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())
