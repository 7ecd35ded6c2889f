"""InferenceActor (owns one model session) and InferencePool (batches frames across cameras).

The pool is an async actor: ``submit`` parks the frame in a queue and returns when the frame's
detections have been handed to the rules, so a camera knows exactly how many of its frames are
still in flight. Frames arrive as ObjectRefs and are only dereferenced by the inference actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import ray
import structlog

from flux_secu.config import InferenceConfig, ModelConfig
from flux_secu.detect.batching import BatchPolicy, least_loaded
from flux_secu.detect.detections import Detections
from flux_secu.detect.model import Detector
from flux_secu.logs import configure_from_env
from flux_secu.video.frame import CameraFrame

log = structlog.get_logger("flux_secu.inference")


@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)
class InferenceActor:
    def __init__(self, model: ModelConfig) -> None:
        configure_from_env()
        self.detector = Detector(model)
        log.info("inference_actor_ready", model=str(model.path), providers=self.detector.providers)

    def infer(self, frames: list[CameraFrame]) -> list[Detections]:
        images = ray.get([f.image for f in frames])
        return self.detector.detect(images, [f.meta.geometry for f in frames])

    def labels(self) -> list[str]:
        return self.detector.labels


@dataclass
class _Queued:
    frame: CameraFrame
    done: asyncio.Future[None]
    enqueued: float = field(default_factory=time.monotonic)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class InferencePool:
    def __init__(self, model: ModelConfig, inference: InferenceConfig, rules: Any) -> None:
        configure_from_env()
        self.policy = BatchPolicy(inference.max_batch, inference.max_wait_ms)
        self.actors = [InferenceActor.remote(model) for _ in range(inference.actors)]  # type: ignore[attr-defined]
        self.loads = [0] * len(self.actors)
        self.rules = rules
        self.queue: list[_Queued] = []
        self.wakeup: asyncio.Event | None = None
        self.batches = 0
        self.batch_hist: dict[int, int] = {}
        self.failed_frames = 0
        self._forward_turn = 0
        self._next_batch_id = 0
        self._turn_changed: asyncio.Condition | None = None
        self._batcher: asyncio.Task[None] | None = None

    async def ready(self) -> int:
        await asyncio.gather(*[a.labels.remote() for a in self.actors])
        return len(self.actors)

    async def submit(self, frame: CameraFrame) -> None:
        self._ensure_started()
        assert self.wakeup is not None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(_Queued(frame, done))
        self.wakeup.set()
        await done

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self.queue),
            "batches": self.batches,
            "batch_hist": dict(sorted(self.batch_hist.items())),
            "failed_frames": self.failed_frames,
            "actors": len(self.actors),
        }

    def _ensure_started(self) -> None:
        if self._batcher is None:
            self.wakeup = asyncio.Event()
            self._turn_changed = asyncio.Condition()
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop())

    async def _batch_loop(self) -> None:
        assert self.wakeup is not None
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            oldest_wait = time.monotonic() - self.queue[0].enqueued
            if not self.policy.ready(len(self.queue), oldest_wait):
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), self.policy.wait_s(oldest_wait))
                continue
            # Keep at most two batches per actor in flight: enough to hide the round trip,
            # few enough that frames wait here (where newer ones can still replace them) not there.
            if min(self.loads) >= 2:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            batch = self.queue[: self.policy.max_batch]
            del self.queue[: len(batch)]
            actor_index = least_loaded(self.loads)
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            asyncio.get_running_loop().create_task(self._run_batch(actor_index, batch_id, batch))

    async def _run_batch(self, actor_index: int, batch_id: int, batch: list[_Queued]) -> None:
        assert self.wakeup is not None and self._turn_changed is not None
        self.loads[actor_index] += 1
        self.batches += 1
        self.batch_hist[len(batch)] = self.batch_hist.get(len(batch), 0) + 1
        error: BaseException | None = None
        detections: list[Detections] = []
        try:
            detections = await self.actors[actor_index].infer.remote([q.frame for q in batch])
        except Exception as exc:  # a crashed actor: its frames are lost, counted, and reported
            error = exc
            self.failed_frames += len(batch)
            log.warning("inference_batch_failed", frames=len(batch), error=type(exc).__name__)
        finally:
            self.loads[actor_index] -= 1
            self.wakeup.set()
        # Forward to the rules in batch order so each camera's frames reach them in capture order.
        async with self._turn_changed:
            await self._turn_changed.wait_for(lambda: self._forward_turn == batch_id)
        try:
            if error is None:
                refs = [
                    self.rules.observe.remote(q.frame.meta, d)
                    for q, d in zip(batch, detections, strict=True)
                ]
                for outcome in await asyncio.gather(*refs, return_exceptions=True):
                    if isinstance(outcome, BaseException):
                        log.error("rules_observe_failed", error=repr(outcome))
        finally:
            async with self._turn_changed:
                self._forward_turn += 1
                self._turn_changed.notify_all()
            for q in batch:
                if not q.done.done():
                    if error is None:
                        q.done.set_result(None)
                    else:
                        q.done.set_exception(RuntimeError(f"inference failed: {type(error).__name__}"))

