"""Inference benchmark: the bare model against the full Ray pool fed by K camera actors, in one run.

1. Bare model: one onnxruntime session (the pool's settings: 1 intra-op thread), pre-processing +
   run + decode + NMS on letterboxed frames of the shipped clip, batch 1 on the shipped fixed-batch
   model; then a batch sweep on the same model made dynamic by ``flux-secu model prepare``.
2. Pool: K CameraActors replay the clip as fast as possible (no pacing, motion gate off, every frame
   sampled) through the real InferencePool -> InferenceActor -> RulesActor; frames/s is counted over a
   fixed window after warm-up from the cameras' own counters.

Efficiency = pool frames/s / bare frames/s at batch 1. The cameras decode and letterbox on the same two
cores, which the bare measurement does not pay: that cost is part of what the ratio shows.

Last line of output: one JSON object. Usage: ``python benchmarks/inference.py [--cameras 8] [--seconds 20]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import cv2
import numpy as np
from machine import describe, publish  # benchmarks/machine.py (the script folder is on sys.path)

from flux_secu.config import ModelConfig, parse_config
from flux_secu.detect.letterbox import letterbox
from flux_secu.detect.model import Detector

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
CLIP = ASSETS / "videos" / "one-by-one-person-detection.mp4"


def clip_frames(count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    return frames


def bare_fps(detector: Detector, frames: list[np.ndarray], batch: int, seconds: float) -> dict[str, float]:
    canvases = [letterbox(f, detector.spec) for f in frames]
    for i in range(3):  # warm-up
        detector.detect([canvases[i][0]], [canvases[i][1]])
    done, latencies = 0, []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [canvases[(done + j) % len(canvases)] for j in range(batch)]
        t = time.perf_counter()
        detector.detect([c for c, _ in chunk], [g for _, g in chunk])
        latencies.append(time.perf_counter() - t)
        done += batch
    elapsed = time.perf_counter() - start
    return {"fps": round(done / elapsed, 2), "batch_ms_p50": round(float(np.median(latencies)) * 1000, 2)}


def bare_parallel_fps(config: ModelConfig, frames: list[np.ndarray], sessions: int, seconds: float) -> float:
    """Bare model on every core: ``sessions`` threads, each with its own session (ORT frees the GIL)."""
    import threading

    detectors = [Detector(config) for _ in range(sessions)]
    counts = [0] * sessions
    canvases = [letterbox(f, detectors[0].spec) for f in frames]
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            canvas, geometry = canvases[counts[i] % len(canvases)]
            detectors[i].detect([canvas], [geometry])
            counts[i] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return round(sum(counts) / (time.perf_counter() - start), 2)


def pool_fps(model: ModelConfig, cameras: int, seconds: float, max_batch: int, max_wait_ms: float,
             actors: int) -> dict[str, Any]:
    import ray

    from flux_secu.actors.graph import Deployment, init_local_ray

    scratch = Path(tempfile.mkdtemp(prefix="flux-secu-bench-"))
    data = {
        "var_dir": str(scratch),
        "model": {"path": str(model.path), "kind": model.kind},
        "inference": {"actors": actors, "max_batch": max_batch, "max_wait_ms": max_wait_ms},
        "store": {"path": str(scratch / "store.db")},
        "sites": [{
            "id": "bench", "name": "Bench",
            "cameras": [{"id": f"cam-{i}", "source": str(CLIP), "detect_fps": 30, "loop": False,
                         "motion": {"enabled": False}} for i in range(cameras)],
            "escalation": {"contacts": [{"name": "nobody", "channels": ["json://127.0.0.1:9/x"]}]},
        }],
    }
    config = parse_config(data, scratch)
    init_local_ray(num_cpus=os.cpu_count() or 2, object_store_mib=512)
    try:
        dep = Deployment.build(config)
        for cam in config.sites[0].cameras:
            dep.add_camera("bench", cam, realtime=False)  # wall-clock capture times: latency counts
        time.sleep(min(5.0, seconds / 3))  # warm-up: actors started, queues filled
        before = sum(s["frames_done"] for s in dep.camera_stats())
        t0 = time.time()
        time.sleep(seconds)
        after_stats = dep.camera_stats()
        t1 = time.time()
        done = sum(s["frames_done"] for s in after_stats) - before
        pool = ray.get(dep.pool.stats.remote())
        rules = ray.get(dep.rules.stats.remote(since=t0))
        dep.stop(timeout_s=30)
        return {
            "fps": round(done / (t1 - t0), 2),
            "batch_hist": pool["batch_hist"],
            "frames_lost": sum(s["frames_lost"] for s in after_stats),
            "rules_latency_ms": rules.get("latency_ms"),
        }
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ASSETS / "models" / "yolox_nano.onnx")
    parser.add_argument("--kind", default="yolox")
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--bare-seconds", type=float, default=8.0)
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 2,
                        help="inference actors (default: one per core, the fastest on CPU here)")
    parser.add_argument("--batches", default="1,2,4,8")
    args = parser.parse_args()

    frames = clip_frames(64)
    fixed = ModelConfig(path=args.model, kind=args.kind)
    bare = bare_fps(Detector(fixed), frames, 1, args.bare_seconds)
    print(f"bare batch 1: {bare}", flush=True)
    parallel = bare_parallel_fps(fixed, frames, args.actors, args.bare_seconds)
    print(f"bare, {args.actors} sessions in parallel: {parallel} frames/s", flush=True)

    sweep: dict[int, dict[str, float]] = {}
    try:
        from flux_secu.detect.prepare import prepare_model

        dynamic_path = Path(tempfile.mkdtemp(prefix="flux-secu-prepared-")) / "dynamic.onnx"
        prepare_model(args.model, dynamic_path)
        dynamic = Detector(ModelConfig(path=dynamic_path, kind=args.kind))
        for b in (int(x) for x in args.batches.split(",")):
            sweep[b] = bare_fps(dynamic, frames, b, args.bare_seconds / 2)
            print(f"bare dynamic batch {b}: {sweep[b]}", flush=True)
    except ImportError:
        print("model prepare not available: no batch sweep", flush=True)

    pool = pool_fps(fixed, args.cameras, args.seconds, args.max_batch, args.max_wait_ms, args.actors)
    print(f"pool: {pool}", flush=True)
    best_batch = max(sweep, key=lambda b: sweep[b]["fps"]) if sweep else 1
    result = {
        "bare_fps": bare["fps"],
        "bare_best_batch": best_batch,
        "bare_best_batch_fps": sweep[best_batch]["fps"] if sweep else bare["fps"],
        "batch_sweep_fps": {str(b): v["fps"] for b, v in sweep.items()},
        "pool_fps": pool["fps"],
        "efficiency": round(pool["fps"] / bare["fps"], 3),
        "bare_parallel_fps": parallel,
        "efficiency_vs_parallel_bare": round(pool["fps"] / parallel, 3),
        "batch_hist": pool["batch_hist"],
        "p95_latency_ms": (pool["rules_latency_ms"] or {}).get("p95"),
        "cameras": args.cameras,
        "pool": {"actors": args.actors, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "frames_lost": pool["frames_lost"],
        "machine": describe(),
    }
    publish("inference", result)


if __name__ == "__main__":
    main()
