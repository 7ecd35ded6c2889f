"""Detection quality of the whole pipeline on the shipped clips: precision, recall, alert latency.

1. **Bare model, same run, before Ray starts.** The frames the pipeline will analyse (each manifest
   clip sampled to its camera's ``detect_fps``) go one at a time through the model the config names,
   with the project's own letterbox + ``Detector.detect`` (session run, decode, NMS): ``bare_model_ms``
   is the median per frame. It is the yardstick every benchmark here is read against.
2. **Pipeline.** ``flux-secu evaluate CONFIG --manifest MANIFEST --json`` replays every entry through
   the real actors and the real model (one Ray session), and scores the incidents against the
   manifest's expected presences (see ``flux_secu.evaluation`` for the matching rules).

Last line of output: one JSON object; the same object, indented, goes to
``benchmarks/results/detection_quality.json``.
Usage: ``python benchmarks/detection_quality.py [--config C] [--manifest M] [--out FILE]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import cv2
import numpy as np

from flux_secu.config import Config, load_config
from flux_secu.evaluation import Manifest, load_manifest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "evaluation" / "site.yaml"
DEFAULT_MANIFEST = ROOT / "configs" / "evaluation" / "shipped.yaml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "detection_quality.json"
WARMUP_FRAMES = 10


def analysed_frames(config: Config, manifest: Manifest) -> list[np.ndarray]:
    """Every frame a camera would sample from the manifest's clips (each clip once, whatever the entries)."""
    frames: list[np.ndarray] = []
    seen: set[tuple[Path, float]] = set()
    for entry in manifest.entries:
        fps = config.camera(entry.camera)[1].detect_fps
        if (entry.clip, fps) in seen:
            continue
        seen.add((entry.clip, fps))
        cap = cv2.VideoCapture(str(entry.clip))
        step = max(1, round((cap.get(cv2.CAP_PROP_FPS) or fps) / fps))
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(frame)
            index += 1
        cap.release()
    return frames


def bare_model(config: Config, frames: list[np.ndarray]) -> dict[str, Any]:
    """Per-frame time of the bare model (letterbox + run + decode + NMS), one frame at a time."""
    from flux_secu.detect.letterbox import letterbox
    from flux_secu.detect.model import Detector

    cv2.setNumThreads(1)  # as in the camera actors: the comparison is per frame on one core
    detector = Detector(config.model)

    def one(image: np.ndarray) -> None:
        canvas, geometry = letterbox(image, detector.spec)
        detector.detect([canvas], [geometry])

    for image in frames[:WARMUP_FRAMES]:
        one(image)
    times = []
    for image in frames:
        t = time.perf_counter()
        one(image)
        times.append(time.perf_counter() - t)
    return {
        "bare_model_ms": round(float(np.median(times)) * 1000, 2),
        "bare_model_p95_ms": round(float(np.percentile(times, 95)) * 1000, 2),
        "bare_model_frames": len(times),
        "providers": list(detector.providers),
    }


def machine(providers: list[str]) -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):  # not Linux, or an unusual /proc/cpuinfo
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    import onnxruntime as ort

    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, onnxruntime {ort.__version__}, providers {providers}")


def evaluate(config: Path, manifest: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``flux-secu evaluate --manifest`` (run as a command: what users run)."""
    cmd = [sys.executable, "-m", "flux_secu.cli", "evaluate", str(config), "--manifest", str(manifest),
           "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-5000:])
        raise SystemExit(f"flux-secu evaluate failed with status {result.returncode}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    config = load_config(args.config)
    manifest = load_manifest(args.manifest)

    print("# bare model on the frames the pipeline will analyse ...", file=sys.stderr)
    bare = bare_model(config, analysed_frames(config, manifest))
    print(f"# bare model: {bare['bare_model_ms']} ms/frame (p95 {bare['bare_model_p95_ms']} ms, "
          f"{bare['bare_model_frames']} frames)", file=sys.stderr)
    print("# flux-secu evaluate --manifest ...", file=sys.stderr)
    t0 = time.monotonic()
    lines = evaluate(args.config, args.manifest)
    wall = time.monotonic() - t0
    summary = lines[-1]
    if summary.get("type") != "summary":
        raise SystemExit(f"flux-secu evaluate: last line is not the summary: {summary}")
    clips = [line for line in lines if line["type"] == "clip_summary"]
    for clip in clips:
        print(f"# {clip['clip']:20s} presences {clip['presences']}  incidents {clip['incidents']}  "
              f"false positives {clip['false_positives']}  misses {clip['misses']}  "
              f"latencies {clip['latencies_s']} s", file=sys.stderr)

    per_frame_ms = summary["replay_wall_s"] * 1000 / max(summary["frames_analysed"], 1)
    result: dict[str, Any] = {
        **{k: summary[k] for k in ("precision", "recall", "latency_p50_s", "latency_p95_s", "clips",
                                   "presences", "incidents", "false_positives", "misses")},
        "bare_model_ms": bare["bare_model_ms"],
        "bare_model_p95_ms": bare["bare_model_p95_ms"],
        # Wall time of the replays (camera decode + letterbox + pool + model + rules + alerts, actor
        # start-up excluded) per frame the model analysed: what the pipeline costs over the bare model.
        "replay_ms_per_analysed_frame": round(per_frame_ms, 2),
        "ratio_replay_to_bare": round(per_frame_ms / bare["bare_model_ms"], 2),
        "frames": summary["frames"],
        "frames_analysed": summary["frames_analysed"],
        "frames_lost": summary["frames_lost"],
        "evaluate_wall_s": round(wall, 1),
        "per_clip": {
            c["clip"]: {k: c[k] for k in ("precision", "recall", "latency_p50_s", "latency_p95_s",
                                          "presences", "incidents", "false_positives", "misses",
                                          "latencies_s", "false_positive_times_s", "missed")}
            for c in clips
        },
        "manifest": str(args.manifest),
        "machine": machine(bare["providers"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
