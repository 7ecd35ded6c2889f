"""InferenceActor (owns one model session) and InferencePool (batches frames across cameras).

The pool is an async actor: ``submit`` parks the frame in a queue and returns when the frame's
detections have been handed to the rules, so a camera knows exactly how many of its frames are
still in flight. Frames arrive as ObjectRefs and are only dereferenced by the inference actor.

A hung actor (a wedged GPU, a model call that never returns) must not hold every camera: each call
has a deadline derived from the batch times measured (``detect/deadline.py``); a call past it is
failed (its frames counted lost), its actor is killed and restarted by Ray, and the pool routes to
the other actors meanwhile. Detections go to the rules in capture order per camera, so a slow batch
delays only the cameras that have a frame in it. A member comes back into service only once it
answered ``describe`` again: a restarted actor may sit on another node, with another canvas.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import structlog

from flux_secu.config import InferenceConfig, ModelConfig
from flux_secu.detect.batching import BatchPolicy, route_batch
from flux_secu.detect.deadline import BatchClock, CameraOrder
from flux_secu.detect.detections import Detections
from flux_secu.detect.letterbox import LetterboxSpec
from flux_secu.detect.model import Detector
from flux_secu.logs import configure_from_env
from flux_secu.metrics import BatchMetrics
from flux_secu.video.frame import CameraFrame
from flux_secu.video.vigilance import Attention

log = structlog.get_logger("flux_secu.inference")

ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 1, "max_restarts": -1, "max_task_retries": 0}


class InferenceWorker:
    """The model session of one inference actor (``InferenceActor`` is this class as a Ray actor)."""

    def __init__(self, model: ModelConfig) -> None:
        configure_from_env()
        self.detector = Detector(model)
        self.node = ray.get_runtime_context().get_node_id()
        self.frames_from: dict[str, int] = {}
        """Frames analysed, by the node of the camera that sent them (locality, measured here)."""
        self.warmup_s = self._warm_up()
        log.info("inference_actor_ready", model=str(model.path), providers=self.detector.providers,
                 canvas="trimmed to the frame" if self.detector.fitted else "square",
                 warmup_s=round(self.warmup_s, 4))

    def _warm_up(self) -> float:
        """One call on a blank canvas: its time is the pool's first measure of this actor's speed,
        before any batch (the first call also pays the session's allocations: a generous measure)."""
        size = self.detector.spec.size
        canvas = np.full((size, size, 3), self.detector.spec.pad_value, np.uint8)
        started = time.perf_counter()
        self.detector.run(self.detector.adapter.preprocess([canvas]))
        return time.perf_counter() - started

    def infer(self, frames: list[CameraFrame]) -> list[Detections]:
        for frame in frames:
            self.frames_from[frame.meta.node] = self.frames_from.get(frame.meta.node, 0) + 1
        images = ray.get([f.image for f in frames])
        return self.detector.detect(images, [f.meta.geometry for f in frames])

    def describe(self) -> dict[str, Any]:
        return {"labels": self.detector.labels, "spec": self.detector.spec, "node": self.node,
                "providers": self.detector.providers, "max_batch": self.detector.max_batch,
                "fitted": self.detector.fitted, "warmup_s": self.warmup_s}

    def stats(self) -> dict[str, Any]:
        return {"node": self.node, "frames_from": dict(self.frames_from)}


InferenceActor = ray.remote(**ACTOR_OPTIONS)(InferenceWorker)


@dataclass
class _Queued:
    frame: CameraFrame
    done: asyncio.Future[Attention]
    ticket: int
    """Its place in its camera's order (``CameraOrder``)."""
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
    spec: LetterboxSpec | None = None
    serving: bool = False
    """Described, with the pool's canvas: it takes batches. False while it restarts."""
    clock: BatchClock = field(default_factory=BatchClock)
    recovery: asyncio.Task[None] | None = None


# Keep at most two batches per actor in flight: enough to hide the round trip, few enough that
# frames wait in the pool (where a camera's newer frame can still replace them) rather than in Ray.
MAX_BATCHES_PER_ACTOR = 2
RESTARTING_POLL_S = 0.2
RECOVERY_RETRY_S = 5.0
"""A restarted actor that cannot be described (its restart failed) is tried again this often."""


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class InferencePool:
    def __init__(self, model: ModelConfig, inference: InferenceConfig, rules: Any,
                 worker: type | None = None) -> None:
        """``worker``: the class the inference actors run (``InferenceWorker``, or a subclass)."""
        configure_from_env()
        self.model = model
        self.inference = inference
        self.actor_class = InferenceActor if worker is None else ray.remote(**ACTOR_OPTIONS)(worker)
        self.policy = BatchPolicy(inference.max_batch, inference.max_wait_ms)
        self.members = [self._new_member() for _ in range(inference.actors)]
        self.rules = rules
        self.spec: LetterboxSpec | None = None
        """The canvas the cameras letterbox to (the first actor's): an actor with another gets no frame."""
        self.queue: list[_Queued] = []
        self.wakeup: asyncio.Event | None = None
        self.batches = 0
        self.batch_hist: dict[int, int] = {}
        self.failed_frames = 0
        self.hung_calls = 0
        """Inference calls failed for passing their deadline (their actor was restarted)."""
        self.remote_frames = 0
        """Frames sent to another node's inference actor (their node had none)."""
        self.order = CameraOrder()
        self._turn_changed: asyncio.Condition | None = None
        self._batcher: asyncio.Task[None] | None = None
        self.batch_metrics = BatchMetrics()  # metrics hook (flux_secu.metrics)

    def _new_member(self) -> _Member:
        options: dict[str, Any] = {"num_cpus": self.inference.cpus_per_actor}
        if self.inference.gpus_per_actor:
            options["num_gpus"] = self.inference.gpus_per_actor
        # Spread over the nodes that can take one: each camera node gets its own inference actors.
        options["scheduling_strategy"] = "SPREAD"
        return _Member(self.actor_class.options(**options).remote(self.model))

    def _described(self, member: _Member, description: dict[str, Any]) -> None:
        """What a (re)started actor says of itself: its node and canvas, a first measure of its speed."""
        member.node, member.spec = description["node"], description["spec"]
        if not member.clock.measured:
            member.clock.record(float(description.get("warmup_s", 0.0)), 1)
        if self.spec is None:
            self.spec = member.spec
        member.serving = member.spec == self.spec
        if not member.serving:
            log.error("inference_actor_canvas_differs", node=member.node, canvas=repr(member.spec),
                      pool_canvas=repr(self.spec))

    async def ready(self) -> dict[str, Any]:
        """Wait for every inference actor; returns what the cameras need to know of the model."""
        self._ensure_started()
        described = await asyncio.gather(*[m.handle.describe.remote() for m in self.members])
        for member, description in zip(self.members, described, strict=True):
            self._described(member, description)
        return described[0]

    def canvas(self) -> LetterboxSpec | None:
        """The canvas cameras letterbox to (a restarted supervisor asks, without waiting for actors)."""
        return self.spec

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
                self._described(member, description)
            self.members.extend(added)
        for member in active[actors:]:
            member.retiring = True
        await self._retire_idle()
        log.info("pool_resized", actors=actors)
        return actors

    async def _retire_idle(self) -> None:
        for member in [m for m in self.members if m.retiring and m.load == 0]:
            self.members.remove(member)
            if member.recovery is not None:
                member.recovery.cancel()
            ray.kill(member.handle, no_restart=True)

    def actor_handles(self) -> list[Any]:
        return [m.handle for m in self.members if not m.retiring]

    async def submit(self, frame: CameraFrame) -> Attention:
        """Detect, hand over to the rules, and return once they saw the frame: the attention the rules
        ask of this camera (``RulesActor.observe``, ``video/vigilance.py``)."""
        self._ensure_started()
        assert self.wakeup is not None
        done: asyncio.Future[Attention] = asyncio.get_running_loop().create_future()
        self.queue.append(_Queued(frame, done, self.order.ticket(frame.meta.camera)))
        self.wakeup.set()
        return await done

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self.queue),
            "batches": self.batches,
            "batch_hist": dict(sorted(self.batch_hist.items())),
            "failed_frames": self.failed_frames,
            "hung_calls": self.hung_calls,
            "remote_frames": self.remote_frames,
            "actors": sum(not m.retiring for m in self.members),
            "serving": sum(m.serving and not m.retiring for m in self.members),
            "in_flight_batches": sum(m.load for m in self.members),
            "deadlines_s": [round(m.clock.deadline_s(self.policy.max_batch), 3)
                            for m in self.members if not m.retiring],
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
            candidates = [m for m in self.members if m.serving and not m.retiring]
            route = route_batch([q.frame.meta.node for q in self.queue], [m.node for m in candidates],
                                [m.load for m in candidates], self.policy.max_batch, MAX_BATCHES_PER_ACTOR)
            if route is None:  # every actor that may take these frames is busy (or restarting)
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
            asyncio.get_running_loop().create_task(self._run_batch(member, batch))

    async def _run_batch(self, member: _Member, batch: list[_Queued]) -> None:
        assert self.wakeup is not None
        self.batches += 1
        self.batch_hist[len(batch)] = self.batch_hist.get(len(batch), 0) + 1
        detections: list[Detections] | None = None
        deadline_s = member.clock.deadline_s(len(batch))
        started = time.monotonic()
        try:
            ref = member.handle.infer.remote([q.frame for q in batch])
            detections = await asyncio.wait_for(asyncio.wrap_future(ref.future()), deadline_s)
            elapsed = time.monotonic() - started
            member.clock.record(elapsed, len(batch))
            self.batch_metrics.record_batch(len(batch), elapsed)  # metrics hook
        except TimeoutError:  # hung: its frames are lost, counted, and the actor is restarted
            self.failed_frames += len(batch)
            self.hung_calls += 1
            log.error("inference_call_hung", frames=len(batch), deadline_s=round(deadline_s, 3),
                      node=member.node)
            self._recover(member, kill=True)
        except Exception as exc:  # a crashed actor: its frames are lost, counted, and reported
            self.failed_frames += len(batch)
            log.warning("inference_batch_failed", frames=len(batch), error=type(exc).__name__)
            self._recover(member, kill=False)
        finally:
            member.load -= 1
            self.wakeup.set()
            if member.retiring:
                await self._retire_idle()
        if detections is None:
            error = RuntimeError("inference failed")
            for q in batch:
                await self._finish(q, error)
            return
        await asyncio.gather(*[self._forward(q, d) for q, d in zip(batch, detections, strict=True)])

    async def _forward(self, q: _Queued, detections: Detections) -> None:
        """Hand one frame's detections to the rules once its camera's earlier frames went."""
        assert self._turn_changed is not None
        camera = q.frame.meta.camera
        async with self._turn_changed:
            await self._turn_changed.wait_for(lambda: self.order.is_turn(camera, q.ticket))
        error: BaseException | None = None
        try:
            q.attention = await self.rules.observe.remote(q.frame.meta, detections)
        except Exception as exc:
            log.error("rules_observe_failed", error=repr(exc))
        await self._finish(q, error)

    async def _finish(self, q: _Queued, error: BaseException | None) -> None:
        """The frame's turn is over (forwarded, or failed without waiting): its camera's next may go."""
        assert self._turn_changed is not None
        async with self._turn_changed:
            self.order.finish(q.frame.meta.camera, q.ticket)
            self._turn_changed.notify_all()
        if not q.done.done():
            if error is None:
                q.done.set_result(q.attention)
            else:
                q.done.set_exception(error)

    def _recover(self, member: _Member, *, kill: bool) -> None:
        """Take the member out of service until it answers ``describe`` again (restarted by Ray)."""
        member.serving = False
        if member.recovery is not None and not member.recovery.done():
            return
        if kill:
            # Ray restarts it (max_restarts=-1): a model call that never returns is ended only this way.
            ray.kill(member.handle, no_restart=False)
        member.recovery = asyncio.get_running_loop().create_task(self._await_restart(member))

    async def _await_restart(self, member: _Member) -> None:
        assert self.wakeup is not None
        while not member.retiring:
            try:
                description = await member.handle.describe.remote()
            except ray.exceptions.ActorUnavailableError:  # still restarting
                await asyncio.sleep(RESTARTING_POLL_S)
                continue
            except Exception as exc:  # its restart failed: a new actor in its place
                log.error("inference_actor_replaced", error=type(exc).__name__)
                with contextlib.suppress(Exception):
                    ray.kill(member.handle, no_restart=True)
                member.handle = self._new_member().handle
                await asyncio.sleep(RECOVERY_RETRY_S)
                continue
            self._described(member, description)
            log.info("inference_actor_back", node=member.node, serving=member.serving)
            self.wakeup.set()
            return
