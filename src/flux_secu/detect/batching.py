"""Dynamic batching policy: fire a batch when it is full or when its oldest frame has waited enough."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch: int
    max_wait_ms: float

    def ready(self, queued: int, oldest_wait_s: float) -> bool:
        return queued >= self.max_batch or (queued > 0 and oldest_wait_s * 1000.0 >= self.max_wait_ms)

    def wait_s(self, oldest_wait_s: float) -> float:
        """How long to wait for more frames before firing a partial batch."""
        return max(0.0, self.max_wait_ms / 1000.0 - oldest_wait_s)


def least_loaded(loads: list[int]) -> int:
    """Index of the inference actor with the fewest batches in flight (the first one on ties)."""
    return min(range(len(loads)), key=loads.__getitem__)
