"""Evidence export: one incident as a signed zip archive.

Contents::

    incident.json      the incident, its state and its legal hold
    timeline.json      every event of its timeline
    evidence/<file>    the evidence files (snapshot.jpg, clip.mp4) that exist
    manifest.json      who exported what and when, and the SHA-256 of every other file of the archive
                       (for evidence files also the SHA-256 recorded when the file was written)
    manifest.sig       hex HMAC-SHA256 of manifest.json's bytes, with the deployment's export key

Whoever holds the key (the operator of the deployment; see README) checks an archive with
:func:`verify_export`: the signature proves the manifest came from this deployment, the hashes prove
that no file was changed or added since.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import zipfile
from typing import Any

from flux_secu.api.views import Evidence, sha256_file

MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"


class ExportInvalid(Exception):
    """The archive does not verify: altered, incomplete, or signed with another key."""


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True).encode()


def build_export(key: bytes, incident: dict[str, Any], timeline: list[dict[str, Any]],
                 evidence: dict[str, Evidence], exported_by: str, exported_at: float) -> bytes:
    files: dict[str, bytes] = {"incident.json": _json(incident), "timeline.json": _json(timeline)}
    recorded: dict[str, str] = {}
    for name, ev in sorted(evidence.items()):
        if ev.path.is_file():
            files[f"evidence/{name}"] = ev.path.read_bytes()
            recorded[f"evidence/{name}"] = ev.sha256
    manifest = {
        "format": "flux-secu-export/1", "incident": incident.get("id"), "exported_by": exported_by,
        "exported_at": exported_at,
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                         **({"recorded_sha256": recorded[name]} if name in recorded else {})}
                  for name, data in files.items()},
    }
    manifest_bytes = _json(manifest)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(MANIFEST, manifest_bytes)
        archive.writestr(SIGNATURE, hmac.new(key, manifest_bytes, hashlib.sha256).hexdigest())
    return buffer.getvalue()


def verify_export(key: bytes, archive_bytes: bytes) -> dict[str, Any]:
    """The manifest of a genuine, unaltered archive; raises :class:`ExportInvalid` otherwise."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
            contents = {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExportInvalid(f"not a zip archive: {exc}") from None
    manifest_bytes, signature = contents.pop(MANIFEST, None), contents.pop(SIGNATURE, None)
    if manifest_bytes is None or signature is None:
        raise ExportInvalid("manifest or signature missing")
    expected = hmac.new(key, manifest_bytes, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.decode(errors="replace").strip(), expected):
        raise ExportInvalid("signature does not match: altered manifest or another key")
    manifest: dict[str, Any] = json.loads(manifest_bytes)
    listed = manifest.get("files", {})
    if set(listed) != set(contents):
        raise ExportInvalid(f"files differ from the manifest: {sorted(set(listed) ^ set(contents))}")
    for name, data in contents.items():
        if hashlib.sha256(data).hexdigest() != listed[name]["sha256"]:
            raise ExportInvalid(f"{name} was altered")
    return manifest


def evidence_intact(ev: Evidence) -> bool:
    """Whether the file on disk still has the hash recorded when it was written."""
    return ev.path.is_file() and (not ev.sha256 or sha256_file(ev.path) == ev.sha256)
