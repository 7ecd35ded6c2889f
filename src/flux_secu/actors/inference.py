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
from flux_secu.detect.batching import BatchPolicy, route_batch
from flux_secu.detect.detections import Detections
from flux_secu.detect.model import Detector
from flux_secu.logs import configure_from_env
from flux_secu.metrics import BatchMetrics
from flux_secu.video.frame import CameraFrame
from flux_secu.video.vigilance import Attention

log = structlog.get_logger("flux_secu.inference")


@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)
class InferenceActor:
    def __init__(self, model: ModelConfig) -> None:
        configure_from_env()
        self.detector = Detector(model)
        self.node = ray.get_runtime_context().get_node_id()
        self.frames_from: dict[str, int] = {}
        """Frames analysed, by the node of the camera that sent them (locality, measured here)."""
        log.info("inference_actor_ready", model=str(model.path), providers=self.detector.providers,
                 canvas="trimmed to the frame" if self.detector.fitted else "square")

    def infer(self, frames: list[CameraFrame]) -> list[Detections]:
        for frame in frames:
            self.frames_from[frame.meta.node] = self.frames_from.get(frame.meta.node, 0) + 1
        images = ray.get([f.image for f in frames])
        return self.detector.detect(images, [f.meta.geometry for f in frames])

    def describe(self) -> dict[str, Any]:
        return {"labels": self.detector.labels, "spec": self.detector.spec, "node": self.node,
                "providers": self.detector.providers, "max_batch": self.detector.max_batch,
                "fitted": self.detector.fitted}

    def stats(self) -> dict[str, Any]:
        return {"node": self.node, "frames_from": dict(self.frames_from)}


@dataclass
class _Queued:
    frame: CameraFrame
    done: asyncio.Future[Attention]
    enqueued: float = field(default_factory=time.monotonic)
    attention: Attention = "none"


@dataclass
class _Member:
    """One inference actor of the pool and the batches it has in flight."""

    handle: Any
    load: int = 0
    retiring: bool = False
    node: str = ""
    """Its Ray node (from ``describe``): frames from cameras on that node go to it first."""


# Keep at most two batches per actor in flight: enough to hide the round trip, few enough that
# frames wait in the pool (where a camera's newer frame can still replace them) rather than in Ray.
MAX_BATCHES_PER_ACTOR = 2


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class InferencePool:
    def __init__(self, model: ModelConfig, inference: InferenceConfig, rules: Any) -> None:
        configure_from_env()
        self.model = model
        self.inference = inference
        self.policy = BatchPolicy(inference.max_batch, inference.max_wait_ms)
        self.members = [self._new_member() for _ in range(inference.actors)]
        self.rules = rules
        self.queue: list[_Queued] = []
        self.wakeup: asyncio.Event | None = None
        self.batches = 0
        self.batch_hist: dict[int, int] = {}
        self.failed_frames = 0
        self.remote_frames = 0
        """Frames sent to another node's inference actor (their node had none)."""
        self._forward_turn = 0
        self._next_batch_id = 0
        self._turn_changed: asyncio.Condition | None = None
        self._batcher: asyncio.Task[None] | None = None
        self.batch_metrics = BatchMetrics()  # metrics hook (flux_secu.metrics)

    def _new_member(self) -> _Member:
        options: dict[str, Any] = {"num_cpus": self.inference.cpus_per_actor}
        if self.inference.gpus_per_actor:
            options["num_gpus"] = self.inference.gpus_per_actor
        # Spread over the nodes that can take one: each camera node gets its own inference actors.
        options["scheduling_strategy"] = "SPREAD"
        return _Member(InferenceActor.options(**options).remote(self.model))  # type: ignore[attr-defined]

    async def ready(self) -> dict[str, Any]:
        """Wait for every inference actor; returns what the cameras need to know of the model."""
        described = await asyncio.gather(*[m.handle.describe.remote() for m in self.members])
        for member, description in zip(self.members, described, strict=True):
            member.node = description["node"]
        return described[0]

    async def resize(self, actors: int) -> int:
        """Grow or shrink the pool while frames flow; a removed actor finishes its batches first."""
        if actors < 1:
            raise ValueError("the pool needs at least one inference actor")
        self._ensure_started()
        active = [m for m in self.members if not m.retiring]
        added = [self._new_member() for _ in range(actors - len(active))]
        if added:
            described = await asyncio.gather(*[m.handle.describe.remote() for m in added])
            for member, description in zip(added, described, strict=True):
                member.node = description["node"]
            self.members.extend(added)
        for member in active[actors:]:
            member.retiring = True
        await self._retire_idle()
        log.info("pool_resized", actors=actors)
        return actors

    async def _retire_idle(self) -> None:
        for member in [m for m in self.members if m.retiring and m.load == 0]:
            self.members.remove(member)
            ray.kill(member.handle, no_restart=True)

    def actor_handles(self) -> list[Any]:
        return [m.handle for m in self.members if not m.retiring]

    async def submit(self, frame: CameraFrame) -> Attention:
        """Detect, hand over to the rules, and return once they saw the frame: the attention the rules
        ask of this camera (``RulesActor.observe``, ``video/vigilance.py``)."""
        self._ensure_started()
        assert self.wakeup is not None
        done: asyncio.Future[Attention] = asyncio.get_running_loop().create_future()
        self.queue.append(_Queued(frame, done))
        self.wakeup.set()
        return await done

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self.queue),
            "batches": self.batches,
            "batch_hist": dict(sorted(self.batch_hist.items())),
            "failed_frames": self.failed_frames,
            "remote_frames": self.remote_frames,
            "actors": sum(not m.retiring for m in self.members),
            "in_flight_batches": sum(m.load for m in self.members),
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
            candidates = [m for m in self.members if not m.retiring]
            route = route_batch([q.frame.meta.node for q in self.queue], [m.node for m in candidates],
                                [m.load for m in candidates], self.policy.max_batch, MAX_BATCHES_PER_ACTOR)
            if route is None:  # every actor that may take these frames is busy
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            picked = set(route.frames)
            batch = [self.queue[i] for i in route.frames]
            self.queue = [q for i, q in enumerate(self.queue) if i not in picked]
            member = candidates[route.member]
            if not route.local:
                self.remote_frames += len(batch)
            member.load += 1
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            asyncio.get_running_loop().create_task(self._run_batch(member, batch_id, batch))

    async def _run_batch(self, member: _Member, batch_id: int, batch: list[_Queued]) -> None:
        assert self.wakeup is not None and self._turn_changed is not None
        self.batches += 1
        self.batch_hist[len(batch)] = self.batch_hist.get(len(batch), 0) + 1
        error: BaseException | None = None
        detections: list[Detections] = []
        started = time.monotonic()
        try:
            detections = await member.handle.infer.remote([q.frame for q in batch])
            self.batch_metrics.record_batch(len(batch), time.monotonic() - started)  # metrics hook
        except Exception as exc:  # a crashed actor: its frames are lost, counted, and reported
            error = exc
            self.failed_frames += len(batch)
            log.warning("inference_batch_failed", frames=len(batch), error=type(exc).__name__)
        finally:
            member.load -= 1
            self.wakeup.set()
            if member.retiring:
                await self._retire_idle()
        # Forward to the rules in batch order so each camera's frames reach them in capture order.
        async with self._turn_changed:
            await self._turn_changed.wait_for(lambda: self._forward_turn == batch_id)
        try:
            if error is None:
                refs = [
                    self.rules.observe.remote(q.frame.meta, d)
                    for q, d in zip(batch, detections, strict=True)
                ]
                outcomes = await asyncio.gather(*refs, return_exceptions=True)
                for q, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        log.error("rules_observe_failed", error=repr(outcome))
                    else:
                        q.attention = outcome
        finally:
            async with self._turn_changed:
                self._forward_turn += 1
                self._turn_changed.notify_all()
            for q in batch:
                if not q.done.done():
                    if error is None:
                        q.done.set_result(q.attention)
                    else:
                        q.done.set_exception(RuntimeError(f"inference failed: {type(error).__name__}"))
