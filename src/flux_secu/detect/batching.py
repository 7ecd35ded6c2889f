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


@dataclass(frozen=True, slots=True)
class Route:
    """A batch to send: which inference actor, and which queued frames (indices, in queue order)."""

    member: int
    frames: list[int]
    local: bool
    """The frames' node has an inference actor and this is one of them (False: they cross the network)."""


def route_batch(frame_nodes: list[str], member_nodes: list[str], loads: list[int], max_batch: int,
                max_load: int) -> Route | None:
    """The next batch, keeping frames on their node: frames go to an inference actor of the node
    their camera runs on, the node of the oldest waiting frame first; a node busy to its limit waits
    while another node's frames go ahead. Only frames from a node with no inference actor at all are
    sent elsewhere (least loaded). None: nothing can be sent now.

    ``frame_nodes``: the node of each queued frame, oldest first (""=unknown: any actor);
    ``member_nodes``/``loads``: each inference actor's node and batches in flight.
    """
    served = set(member_nodes)
    tried: set[str] = set()
    for node in frame_nodes:
        if node in tried:
            continue
        tried.add(node)
        if node and node in served:
            mine = [i for i, n in enumerate(member_nodes) if n == node and loads[i] < max_load]
            local = True
        else:
            mine = [i for i in range(len(member_nodes)) if loads[i] < max_load]
            local = not node
        if not mine:
            continue
        member = min(mine, key=loads.__getitem__)
        frames = [i for i, n in enumerate(frame_nodes) if n == node][:max_batch]
        return Route(member, frames, local)
    return None
