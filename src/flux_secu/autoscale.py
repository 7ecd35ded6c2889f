"""Inference pool autoscaling policy: pure, no Ray.

Every ``interval_s`` the supervisor hands the policy what the pool did since the last look: frames
waiting in its queue and how full its batches were. A pool whose batches come out full, or whose queue
holds more than a batch, has frames waiting for a free model: it is saturated. One that fires nearly
empty batches and has nothing queued has actors to spare. Hysteresis (several looks in a row before
acting) keeps a short burst or a camera reconnecting from resizing the pool back and forth.
"""

from __future__ import annotations

from dataclasses import dataclass

from flux_secu.config import AutoscaleConfig, InferenceConfig


@dataclass(frozen=True, slots=True)
class PoolSample:
    """The pool between two looks."""

    actors: int
    queued: int
    """Frames waiting in the pool's queue at the look."""
    batches: int
    """Batches fired since the previous look."""
    frames: int
    """Frames in those batches."""
    max_batch: int

    @property
    def fill(self) -> float:
        """Mean batch size over the largest batch; 0 when no batch was fired."""
        return self.frames / (self.batches * self.max_batch) if self.batches else 0.0


class PoolAutoscaler:
    def __init__(self, config: AutoscaleConfig) -> None:
        self.config = config
        self._busy_looks = 0
        self._idle_looks = 0

    def bounded(self, actors: int) -> int:
        return min(self.config.max_actors, max(self.config.min_actors, actors))

    def decide(self, sample: PoolSample) -> int:
        """The pool size to have now (the current size when nothing needs to change)."""
        c = self.config
        if sample.actors != self.bounded(sample.actors):
            self._busy_looks = self._idle_looks = 0
            return self.bounded(sample.actors)
        saturated = sample.fill >= c.high_fill or sample.queued > sample.max_batch
        idle = sample.queued == 0 and sample.fill <= c.low_fill
        self._busy_looks = self._busy_looks + 1 if saturated else 0
        self._idle_looks = self._idle_looks + 1 if idle else 0
        if self._busy_looks >= c.up_after and sample.actors < c.max_actors:
            self._busy_looks = 0
            return sample.actors + 1
        if self._idle_looks >= c.down_after and sample.actors > c.min_actors:
            self._idle_looks = 0
            return sample.actors - 1
        return sample.actors


def batch_window(previous_hist: dict[int, int], hist: dict[int, int]) -> tuple[int, int]:
    """(batches, frames) fired between two cumulative batch-size histograms of the pool.

    A histogram that went backwards belongs to a restarted pool: all of it is new.
    """
    restarted = any(hist.get(size, 0) < count for size, count in previous_hist.items())
    base = {} if restarted else previous_hist
    batches = sum(count - base.get(size, 0) for size, count in hist.items())
    frames = sum(size * (count - base.get(size, 0)) for size, count in hist.items())
    return batches, frames


def gpu_bundles(inference: InferenceConfig, actors: int) -> list[dict[str, float]]:
    """What ``actors`` inference actors need of the cluster, one bundle each (none for a CPU pool)."""
    if inference.gpus_per_actor <= 0:
        return []
    return [{"GPU": inference.gpus_per_actor, "CPU": inference.cpus_per_actor}] * actors


def request_gpu_nodes(inference: InferenceConfig, actors: int) -> bool:
    """Ask Ray's autoscaler for the GPU nodes the pool needs; the request replaces the previous one, so
    a smaller pool lets idle nodes go. False (nothing asked) for a CPU pool."""
    bundles = gpu_bundles(inference, actors)
    if not bundles:
        return False
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)
    return True
