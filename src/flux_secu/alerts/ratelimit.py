"""At most one warning per (speaker, zone) per interval: a loop of warnings helps nobody."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    _last: dict[tuple[str, str], float] = field(default_factory=dict)

    def allow(self, key: tuple[str, str], ts: float, interval_s: float) -> bool:
        """True, and remembered, when nothing was allowed for ``key`` within ``interval_s`` before ``ts``."""
        last = self._last.get(key)
        if last is not None and ts - last < interval_s:
            return False
        self._last[key] = ts
        return True
