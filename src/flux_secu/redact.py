"""Keep secrets out of logs: camera URLs and notification URLs carry passwords and tokens."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_QUERY = re.compile(r"(?i)([?&](?:pass(?:word)?|pwd|token|key|secret|auth)=)[^&]*")


def redact_url(url: str) -> str:
    """``rtsp://user:pw@host/x?token=t`` -> ``rtsp://user:***@host/x?token=***``; paths are kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    return _SECRET_QUERY.sub(r"\1***", urlunsplit(parts._replace(netloc=netloc)))


def redact_channel(url: str) -> str:
    """Notification (apprise) URLs hide tokens anywhere, host and path included: keep the scheme only."""
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"{scheme}://***"
