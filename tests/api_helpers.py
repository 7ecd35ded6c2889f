"""Shared set-up of the API tests: a config with users, incidents with evidence as the evidence
contract writes them, and a logged-in client."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from flux_secu.config import Config
from flux_secu.rules.incident import Incident, IncidentKind, incident_id
from flux_secu.store.base import Store

from .conftest import LOWLIGHT_CLIP, build_config

# The hash carries its parameters: a cheap one verifies in well under a millisecond.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORDS = {"zoe": "zoe-password-1", "marc": "marc-password-2", "admin": "admin-password-3"}
ROLES = {"zoe": "viewer", "marc": "operator", "admin": "admin"}
JPEG = b"\xff\xd8\xff\xe0" + b"flux-secu test snapshot" + b"\xff\xd9"


def api_config(tmp_path: Path, more: Callable[[dict[str, Any]], None] | None = None, **api: Any) -> Config:
    def edit(d: dict[str, Any]) -> None:
        d["api"] = {"port": 0, "users": [
            {"name": name, "role": ROLES[name], "password_hash": CHEAP.hash(pw)}
            for name, pw in PASSWORDS.items()
        ], **api}
        d["notifications"]["ack_secret"] = "test-ack-secret-of-some-length-32+chars"
        d["sites"][0]["cameras"].append({"id": "cam-two", "source": str(LOWLIGHT_CLIP)})
        if more is not None:
            more(d)

    return build_config(tmp_path, edit)


def add_incident(store: Store, evidence_dir: Path, ts: float, *, camera: str = "cam-test",
                 kind: IncidentKind = IncidentKind.INTRUSION, site: str = "site-test",
                 files: dict[str, bytes] | None = None) -> Incident:
    inc = Incident(id=incident_id(kind, camera, ts), kind=kind, site=site, camera=camera, label="person",
                   opened_at=ts, clip_time_s=1.0, first_seen_ts=ts, score=0.8)
    assert store.open_incident(inc)
    for name, data in (files or {}).items():
        path = evidence_dir / inc.id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        store.record_event(inc.id, "evidence", ts + 1, {"file": name, "path": str(path.resolve()),
                                                        "sha256": hashlib.sha256(data).hexdigest()},
                           key=f"evidence:{name}")
    return inc
