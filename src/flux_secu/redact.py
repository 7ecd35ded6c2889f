"""Keep secrets out of logs and API answers: camera URLs and notification URLs carry passwords and tokens.

Redaction is by default: every query value is hidden except a short allow-list of parameters known to
be harmless (stream selection, codec, resolution...), and the whole userinfo (user name included: it is
half of a credential, and often an e-mail address).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

SAFE_QUERY_PARAMS = frozenset({
    "channel", "subtype", "stream", "streamtype", "profile", "codec", "resolution", "fps", "framerate",
    "camera", "cam", "video", "audio", "transport", "rtsp_transport", "unicast", "multicast", "tcp",
    "width", "height", "compression", "quality", "format", "mode",
})
"""Query parameters shown in clear; any other value (``passwd``, ``access_token``, ``apikey``, ``sig``,
``x-amz-signature``, a name we never heard of) is ``***``."""


def _redact_query(query: str) -> str:
    if not query:
        return query
    out = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        out.append(part if not eq or name.lower() in SAFE_QUERY_PARAMS else f"{name}=***")
    return "&".join(out)


def redact_url(url: str) -> str:
    """``rtsp://user:pw@host/x?passwd=t&channel=1`` -> ``rtsp://***@host/x?passwd=***&channel=1``;
    paths are kept, the fragment is dropped."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if not parts.scheme or not parts.netloc:
        return url if "?" not in url and "@" not in url else "***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"***@{netloc.rsplit('@', 1)[1]}"
    return urlunsplit(parts._replace(netloc=netloc, query=_redact_query(parts.query), fragment=""))


def redact_channel(url: str) -> str:
    """Notification (apprise) URLs hide tokens anywhere, host and path included: keep the scheme only."""
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"{scheme}://***"


_URL_IN_TEXT = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """Every URL inside a message (an error from a decoder, a driver) redacted as :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
