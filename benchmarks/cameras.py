"""How many cameras does this machine sustain? N live cameras through the real pipeline.

What runs
    The real actor graph (``flux_secu.actors.graph.Deployment`` on an embedded local Ray): N cameras,
    threads of ``CameraHost`` processes (16 per process; decode, key frames only while quiet, sample to
    5 detect fps, motion gate, letterbox), the ``InferencePool``
    with its YOLOX-Nano ``InferenceActor`` (the demo's settings: 1 actor, 1 intra-op thread,
    max_batch 4, max_wait_ms 5), the ``RulesActor``, and ``SiteAlerts`` (every site's speakers and
    escalation in one process) with a SQLite store in a scratch directory. The cameras are spread over
    ``SITES`` sites (the agglomeration has ~10), every site closed (empty ``opening_hours``), so a
    person is a real intrusion: incidents are opened, warnings played (file driver), contacts
    notified (``notifications.dry_run``: recorded to a file, nobody is called).

The streams (segments built once with ffmpeg into ``benchmarks/.cache/``, never committed)
    A typical camera substream: 640x360, 25 fps, H.264 (main profile, no B-frames, GOP 2 s,
    ~600 kbit/s), made from ``one-by-one-person-detection.mp4`` (768x432, 10 fps) of the shared
    assets, in three segments:
      - EMPTY: the clip's empty first 5.6 s (frames 0-55; the person's first pixels appear at frame
        60) played forwards then backwards: 11.2 s of empty scene that joins itself with no cut;
      - SHORT: the same with frames 0-11 (2.4 s), to shift a camera's phase finely;
      - PRESENCE: clip seconds 5.6-20.5: one person walks in, around and out (~12.8 s visible).
    A night is PRESENCE once per cycle of ``--cycle`` s (default 200 s: PRESENCE + EMPTY x 17 =
    205 s, someone on the scene ~6 % of the time, "mostly empty scenes with intrusions now and
    then"). Each camera reads its own FFmpeg concat playlist (``.ffconcat``, written in the scratch
    directory, segments linked beside it), decoded as one continuous stream and paced at 25 fps
    like a live camera. Its leading EMPTY/SHORT segments set its phase: camera i's intruder comes in
    at ``frac(i x 0.618) x cycle`` s of a wall-clock cycle shared by all cameras (golden-ratio
    spacing: for every N the intrusions are spread evenly over the cycle, never lined up), to
    within ~2 s. So the detector load is steady through a measurement window, and the same at
    every N: ``N x (1 / quiet_heartbeat_s)`` frames/s for the still scenes (``1 / heartbeat_s`` with
    ``--no-quiet``) plus ~5 frames/s for each camera that sees someone. Upsampling 10 -> 25 fps
    repeats frames, which the encoder stores as cheap P-frames: the run measures what decoding the
    stream costs (``decode_ms_per_frame``; the issue quotes ~0.55 ms for real 360p25 streams on this
    kind of machine).

The sweep
    Cameras are added in steps (5, 10, 20, 30, ... ``--steps``); after each step every new camera
    answers, the pipeline warms up for ``--warmup`` s (at least ``quiet_after_s`` + 5 s: new cameras
    start watching and go quiet only then), then a ``--window`` s measurement runs:
      - latency: capture -> detections at the rules (``RulesActor.stats(since=...)``: wall time at
        the rules minus the camera's capture time, for every analysed frame in the window): p50,
        p95, p99;
      - camera counters (``stats()`` deltas over the window);
      - CPU: user+system time of the driver and every Ray process (gcs_server, raylet, workers)
        over the window, split by role (camera actors, inference actor, rest); and the whole
        machine's busy time (/proc/stat): what other processes used is ``foreign_cpu_cores``, with a
        warning when it exceeds 0.15 core (the run was not alone: its figures are pessimistic);
      - memory at the end of the window: the sum of PSS (proportional set size: a shared page counts
        once, split among the processes that map it) of the driver and every Ray process.
        ``rss_mib_total`` is that PSS sum; plain RSS summed would count cv2/numpy/ray shared
        libraries once per process.
    N is *sustained* when p95 latency < 1 s and no camera is starved. A camera is **starved** in a
    window when any of these holds:
      - it read fewer than 95 % of its source's packets (25 fps x window): reading does not keep
        up with real time, so the live stream would lag and lose packets;
      - more than 10 % of the frames its motion gate let through were dropped (newest wins,
        stale) or lost instead of analysed;
      - it got fewer than 80 % of the heartbeat frames (one per ``quiet_heartbeat_s`` = 10 s plus a
        GOP, the wait for a key frame; with ``--no-quiet`` one per ``heartbeat_s`` = 2 s) analysed:
        even a still scene must be looked at.
    Over the whole run, ``entry_to_incident_s``: for every intrusion raised, the seconds from the
    intruder's first visible frame to the frame that raised it (p50, p95, max): what quiet cameras
    (key frames every 2 s here) cost in time to notice.
    The sweep stops at the first N that is not sustained; ``max_cameras`` is the last one that was.

The bare model (the project's yardstick, same machine, same run, while Ray is not running)
    YOLOX-Nano in a plain process: onnxruntime CPU, 1 intra-op thread, letterbox + run + decode +
    NMS of PRESENCE frames one at a time, as fast as possible, on the model as exported (the assets
    README's square 416x416 canvas). ``bare_trimmed_canvas_fps`` is the same on the 416x256
    canvases that the pipeline's detector runs for these 16:9 streams (``model.fit_canvas``). Both
    are measured before the sweep and again after it (this VM's speed drifts by up to ~25 % over
    minutes); ``bare_model_fps`` is the mean of the two, both are in the JSON.
    ``detector_frames_ratio`` = detector frames/s the N cameras demand (frames that passed their
    motion gate, analysed or dropped) / ``bare_model_fps``: the share of one core's worth of
    detector the deployment needs. ``ungated_ratio`` is the same without the motion gate (N x 5 fps).

Output
    One line per step on stderr, ``benchmarks/results/cameras.json`` and ``cameras.png`` (scaling
    curve), and the summary JSON object as the last line of stdout:
    ``{"max_cameras", "p95_latency_ms", "cpu_per_camera", "rss_mib_total", "detector_frames_ratio",
    "bare_model_fps", "machine", ...}``, the figures at ``max_cameras``.
    ``cpu_per_camera`` is the whole deployment's CPU (all processes) / N, in % of one core.

Soak (``--soak SECONDS``, with one step: ``--steps 10``)
    After the step's window, the deployment keeps running for SECONDS while the PSS of the driver and
    every Ray process is sampled every ``--sample-every`` s (30). Growth is the least-squares slope of
    each role's PSS (and of the total) over the samples taken after ``--settle`` s (600: buffers that
    fill once, such as the evidence rings, are full by then), in MiB per hour and in % per hour of its
    value at the start of the fit. The summary gets a ``soak`` object and goes to
    ``benchmarks/results/cameras-soak.json`` (``cameras.json`` is the sweep's and is left alone).

Run (serialise CPU-heavy runs on this 2-core box):
    flock /tmp/flux-secu-cpu.lock .venv/bin/python benchmarks/cameras.py            # ~5 min here
    flock /tmp/flux-secu-cpu.lock .venv/bin/python benchmarks/cameras.py --quick    # ~3 min
    (~1 min per step; the sweep stops at the first N that is not sustained.)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Before Ray is imported anywhere: every Ray listener on loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
SOURCE_CLIP = ASSETS / "videos" / "one-by-one-person-detection.mp4"
MODEL = ASSETS / "models" / "yolox_nano.onnx"
LABELS = ASSETS / "models" / "coco80_labels.txt"
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"

WIDTH, HEIGHT, FPS = 640, 360, 25
DETECT_FPS = 5.0
EMPTY_S, SHORT_S, PRESENCE_S = 11.2, 2.4, 14.92  # segment lengths (frames / 25 fps)
DEFAULT_CYCLE_S = 200.0
PHASE_STEP = 0.6180339887  # golden-ratio conjugate: evenly spread phases for every N
STARTUP_S = 2.0  # from add_camera() to the camera's first frame, typically (worker start)
RUN_S = 3600.0  # playlists are this long: a run never loops them (a loop would shift the phase)
SITES = 10
GOP_S = 2.0  # the streams' key frame interval (-g 50 at 25 fps)
CLIP_VERSION = "v3"  # bump when the recipe below changes: the cache is keyed on it

LATENCY_BUDGET_MS = 1000.0
MIN_READ_SHARE = 0.95
MAX_DROP_SHARE = 0.10
MIN_HEARTBEAT_SHARE = 0.80
MEMORY_TARGET_MIB = 6 * 1024
FOREIGN_CPU_WARN = 0.15  # cores used by processes outside the benchmark: the run was not alone
FULL_STEPS = [5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100]
QUICK_STEPS = [5, 10, 20, 40, 60]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- streams

_ENCODE = ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-bf", "0",
           "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
           "-b:v", "600k", "-maxrate", "800k", "-bufsize", "800k", "-pix_fmt", "yuv420p", "-an"]
_SHAPE = f"fps={FPS},scale={WIDTH}:{HEIGHT}"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_segments(cache: Path = CACHE) -> dict[str, Path]:
    """The EMPTY, SHORT and PRESENCE segments (see the module docstring); built once, then reused."""
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is needed to build the benchmark streams (apt-get install ffmpeg)")
    folder = cache / f"streams-{CLIP_VERSION}"
    segments = {name: folder / f"{name}.mp4" for name in ("empty", "short", "presence")}
    if all(p.is_file() for p in segments.values()):
        return segments
    folder.mkdir(parents=True, exist_ok=True)
    log(f"building the stream segments ({WIDTH}x{HEIGHT}@{FPS}) in {folder}")
    for name, last in (("empty", 55), ("short", 11)):
        # Forwards then backwards: the segment ends on its first frame, so segments join with no cut.
        _ffmpeg("-i", str(SOURCE_CLIP), "-filter_complex",
                f"[0:v]trim=start_frame=0:end_frame={last + 1},setpts=PTS-STARTPTS,split[a][b];"
                f"[b]reverse[r];[a][r]concat=n=2:v=1,{_SHAPE}[v]", "-map", "[v]", *_ENCODE,
                str(segments[name]))
    # A person walks in (clip frame 63), around, and out (frame 191).
    _ffmpeg("-i", str(SOURCE_CLIP), "-vf", f"trim=start_frame=56:end_frame=205,setpts=PTS-STARTPTS,{_SHAPE}",
            *_ENCODE, str(segments["presence"]))
    return segments


@dataclass(frozen=True)
class Scene:
    """Where the playlists live and how long a night cycle is."""

    folder: Path
    empty_repeats: int

    @property
    def cycle_s(self) -> float:
        return PRESENCE_S + self.empty_repeats * EMPTY_S

    @classmethod
    def create(cls, segments: dict[str, Path], folder: Path, cycle_s: float) -> Scene:
        folder.mkdir(parents=True, exist_ok=True)
        for path in segments.values():  # the concat demuxer only takes plain names beside the list
            (folder / path.name).symlink_to(path)
        return cls(folder, max(1, round((cycle_s - PRESENCE_S) / EMPTY_S)))

    def playlist(self, camera: int, seconds_to_presence: float, run_s: float) -> tuple[Path, float]:
        """Write camera's playlist: empty scene for ~``seconds_to_presence`` s, then the cycle; returns
        it and the exact position (s) of its first PRESENCE segment."""
        lead = seconds_to_presence % self.cycle_s
        empties = int(lead // EMPTY_S)
        shorts = round((lead - empties * EMPTY_S) / SHORT_S)
        parts = ["empty.mp4"] * empties + ["short.mp4"] * shorts
        for _ in range(int(run_s // self.cycle_s) + 2):  # long enough never to loop during the run
            parts += ["presence.mp4"] + ["empty.mp4"] * self.empty_repeats
        path = self.folder / f"cam-{camera:03d}.ffconcat"
        path.write_text("ffconcat version 1.0\n" + "".join(f"file {p}\n" for p in parts))
        return path, empties * EMPTY_S + shorts * SHORT_S


# ------------------------------------------------------------------------------ bare references


def bare_references(stream: str, presence: str, seconds: float) -> dict[str, float]:
    """Bare YOLOX-Nano frames/s and decode CPU per frame, in a fresh process (run before Ray)."""
    import cv2

    from flux_secu.config import ModelConfig
    from flux_secu.detect.letterbox import letterbox
    from flux_secu.detect.model import Detector

    cv2.setNumThreads(1)
    # Decode: the night stream, as a camera reads it (every frame decoded on one thread, 1 in 5
    # converted to BGR).
    one_thread = [cv2.CAP_PROP_N_THREADS, 1]
    cap = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, one_thread)
    decoded, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < min(seconds, 4.0):
        if not cap.grab():
            cap.release()
            cap = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, one_thread)
            continue
        decoded += 1
        if decoded % round(FPS / DETECT_FPS) == 0:
            cap.retrieve()
    decode_ms = (time.process_time() - cpu0) / decoded * 1000
    cap.release()

    frames = []
    cap = cv2.VideoCapture(presence, cv2.CAP_FFMPEG)
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    frames = frames[:: round(FPS / DETECT_FPS)]  # the frames a camera would sample: empty and person
    def fps_of(fit_canvas: bool) -> float:
        config = ModelConfig(path=MODEL, labels=LABELS, input_size=416, score_threshold=0.25,
                             intra_op_threads=1, fit_canvas=fit_canvas)
        detector = Detector(config)
        spec = detector.spec

        def one(image: Any) -> None:
            canvas, geometry = letterbox(image, spec)
            detector.detect([canvas], [geometry])

        for image in frames[:10]:  # warm-up
            one(image)
        count, wall0 = 0, time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            one(frames[count % len(frames)])
            count += 1
        return count / (time.perf_counter() - wall0)

    # The yardstick is the model as exported, with the assets README's square 416x416 canvas; the
    # canvas trimmed to the 16:9 frame (416x256) that the pipeline's detector runs is measured beside it.
    fps, fitted = fps_of(False), fps_of(True)
    return {"bare_model_fps": round(fps, 1), "bare_model_ms": round(1000 / fps, 2),
            "bare_trimmed_canvas_fps": round(fitted, 1), "decode_ms_per_frame": round(decode_ms, 3)}


def run_bare(stream: Path, presence: Path, seconds: float) -> dict[str, float]:
    log("bare references (no Ray running) ...")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        bare: dict[str, float] = pool.apply(bare_references, (str(stream), str(presence), seconds))
    log(f"bare YOLOX-Nano: {bare['bare_model_fps']} frames/s ({bare['bare_model_ms']} ms; "
        f"{bare['bare_trimmed_canvas_fps']} frames/s on 416x256 canvases), "
        f"decode {bare['decode_ms_per_frame']} ms/frame")
    return bare


# ----------------------------------------------------------------------------------- deployment


def build_config(sources: list[Path], scratch: Path, inference_actors: int = 1, quiet: bool = True) -> Any:
    """A closed-site agglomeration: camera i reads ``sources[i]``, cameras spread over SITES sites."""
    from flux_secu.config import parse_config

    sites: list[dict[str, Any]] = [
        {
            "id": f"site-{s:02d}",
            "name": f"Déchetterie {s:02d}",
            "opening_hours": {},  # closed all week: a person is an intruder
            "cameras": [],
            "speakers": [{"id": f"hp-{s:02d}"}],
            "escalation": {"contacts": [{"name": "Astreinte", "channels": ["json://127.0.0.1:9/bench"]}]},
        }
        for s in range(min(SITES, len(sources)))
    ]
    for i, source in enumerate(sources):
        sites[i % len(sites)]["cameras"].append({
            "id": f"cam-{i:03d}", "source": str(source),
            "detect_fps": DETECT_FPS, "loop": True,
            **({} if quiet else {"motion": {"quiet_after_s": 0}}),
        })
    data = {
        "timezone": "Europe/Paris",
        "var_dir": str(scratch / "var"),
        "model": {"path": str(MODEL), "labels": str(LABELS), "kind": "yolox", "input_size": 416,
                  "score_threshold": 0.25, "nms_iou": 0.45, "intra_op_threads": 1},
        "inference": {"actors": inference_actors, "max_batch": 4, "max_wait_ms": 5},
        "store": {"kind": "sqlite", "path": str(scratch / "var" / "flux-secu.db")},
        "rules": {"min_score": 0.25, "confirm_hits": 3, "confirm_window": 5, "clear_after_s": 3.0},
        "notifications": {"dry_run": True},  # recorded under var_dir: nobody is called
        "sites": sites,
    }
    return parse_config(data, scratch)


# --------------------------------------------------------------------------------- measurement


def _role(proc: Any) -> str:
    try:
        name = proc.name()
        cmd = " ".join(proc.cmdline())
    except Exception:
        return "gone"
    for actor in ("CameraHost", "InferenceActor", "InferencePool", "RulesActor", "SiteAlerts"):
        if f"ray::{actor}" in cmd or name.startswith(f"ray::{actor}"):
            return actor
    if "raylet" in name or "raylet" in cmd.split(" ")[0]:
        return "raylet"
    if "gcs_server" in name or "gcs_server" in cmd.split(" ")[0]:
        return "gcs_server"
    if "ray::" in cmd or name.startswith("ray::"):
        return "ray_worker_other"
    return "ray_other"


def session_processes() -> list[Any]:
    import psutil

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def cpu_times() -> dict[int, tuple[str, float]]:
    out = {}
    for proc in session_processes():
        try:
            t = proc.cpu_times()
            out[proc.pid] = (_role(proc) if proc.pid != os.getpid() else "driver", t.user + t.system)
        except Exception:
            continue
    return out


def machine_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def memory() -> dict[str, float]:
    pss: dict[str, float] = {}
    rss_sum = 0.0
    for proc in session_processes():
        try:
            info = proc.memory_full_info()
            role = "driver" if proc.pid == os.getpid() else _role(proc)
        except Exception:
            continue
        pss[role] = pss.get(role, 0.0) + info.pss / 2**20
        rss_sum += info.rss / 2**20
    return {"pss_mib_total": round(sum(pss.values()), 1), "rss_mib_naive_sum": round(rss_sum, 1),
            **{f"pss_mib_{k}": round(v, 1) for k, v in sorted(pss.items())}}


def soak(seconds: float, every_s: float) -> list[tuple[float, dict[str, float]]]:
    """PSS by role every ``every_s`` for ``seconds``: ``(seconds since the first sample, memory())``."""
    samples: list[tuple[float, dict[str, float]]] = []
    t0 = time.monotonic()
    while True:
        t = time.monotonic() - t0
        samples.append((t, memory()))
        m = samples[-1][1]
        log(f"soak {t:6.0f} s: PSS {m['pss_mib_total']:.0f} MiB (gcs_server "
            f"{m.get('pss_mib_gcs_server', 0):.0f}, camera hosts {m.get('pss_mib_CameraHost', 0):.0f})")
        if t >= seconds:
            return samples
        time.sleep(min(every_s, seconds - t))


def pss_growth(samples: list[tuple[float, dict[str, float]]], settle_s: float) -> dict[str, Any]:
    """Least-squares growth of each PSS figure present in every sample taken at or after ``settle_s``."""
    fit = [(t, m) for t, m in samples if t >= settle_s]
    if len(fit) < 3:
        raise ValueError(f"{len(fit)} samples after {settle_s} s: at least 3 are needed for a slope")
    keys = sorted(k for k in fit[0][1] if k.startswith("pss_mib_") and all(k in m for _, m in fit))
    hours = [t / 3600 for t, _ in fit]
    mean_h = sum(hours) / len(hours)
    var = sum((h - mean_h) ** 2 for h in hours)
    out: dict[str, Any] = {}
    for key in keys:
        ys = [m[key] for _, m in fit]
        mean_y = sum(ys) / len(ys)
        slope = sum((h - mean_h) * (y - mean_y) for h, y in zip(hours, ys, strict=True)) / var
        start = mean_y + slope * (hours[0] - mean_h)  # the fitted value at the first sample of the fit
        out[key.removeprefix("pss_mib_")] = {
            "start_mib": round(start, 1), "last_mib": round(ys[-1], 1), "mib_per_hour": round(slope, 1),
            "pct_per_hour": round(slope / start * 100, 2) if start > 0 else None,
        }
    return {"fit_from_s": round(fit[0][0], 1), "fit_to_s": round(fit[-1][0], 1), "samples": len(fit),
            "by_role": out}


@dataclass
class Step:
    n: int
    window_s: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None
    max_latency_ms: float | None
    latency_samples: int
    handover_p50_ms: float | None
    handover_p95_ms: float | None
    cpu_cores_total: float
    cpu_cores_cameras: float
    cpu_cores_inference: float
    cpu_cores_other: float
    cpu_per_camera: float
    machine_busy_pct: float
    foreign_cpu_cores: float
    read_fps_per_camera_min: float
    detector_fps_demanded: float
    detector_fps_done: float
    detector_frames_ratio: float
    ungated_ratio: float
    drops: int
    lost: int
    offered: int
    incidents: int
    starved: list[str]
    sustained: bool
    cpu_cores_by_role: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)

    @property
    def rss_mib_total(self) -> float:
        return self.memory.get("pss_mib_total", 0.0)


def measure(dep: Any, store: Any, n: int, window_s: float, bare_fps: float, heartbeat_s: float) -> Step:
    import ray

    cams0 = {s["camera"]: s for s in dep.camera_stats()}
    cpu0, busy0 = cpu_times(), machine_busy()
    wall0, mono0 = time.time(), time.monotonic()
    time.sleep(window_s)
    cams1 = {s["camera"]: s for s in dep.camera_stats()}
    cpu1, busy1 = cpu_times(), machine_busy()
    elapsed = time.monotonic() - mono0
    rules = ray.get(dep.rules.stats.remote(since=wall0))
    incidents = sum(1 for s in store.incidents() if wall0 <= s.incident.opened_at <= wall0 + elapsed)
    lat, handover = rules["latency_ms"], rules["handover_latency_ms"]

    roles: dict[str, float] = {}
    for pid, (role, t1) in cpu1.items():
        t0 = cpu0.get(pid, (role, 0.0))[1]
        roles[role] = roles.get(role, 0.0) + (t1 - t0) / elapsed
    total = sum(roles.values())
    cams_cpu = roles.get("CameraHost", 0.0)
    infer_cpu = roles.get("InferenceActor", 0.0)
    busy = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1.0) * 100

    starved, drops, lost, offered, done, min_read = [], 0, 0, 0, 0, float("inf")
    for cam, s1 in cams1.items():
        s0 = cams0.get(cam)
        if s0 is None:
            continue
        d = {k: s1[k] - s0[k] for k in ("frames_read", "frames_sent", "frames_done", "frames_lost", "drops")}
        cam_offered = d["frames_sent"] + d["drops"]
        drops, lost, offered, done = drops + d["drops"], lost + d["frames_lost"], offered + cam_offered, \
            done + d["frames_done"]
        read_fps = d["frames_read"] / elapsed
        min_read = min(min_read, read_fps)
        why = []
        if d["frames_read"] < MIN_READ_SHARE * FPS * elapsed:
            why.append(f"decodes {read_fps:.1f} fps < {MIN_READ_SHARE:.0%} of {FPS}")
        if cam_offered and (d["drops"] + d["frames_lost"]) > MAX_DROP_SHARE * cam_offered:
            why.append(f"dropped {d['drops'] + d['frames_lost']}/{cam_offered}")
        if d["frames_done"] < MIN_HEARTBEAT_SHARE * (elapsed // heartbeat_s):  # whole heartbeats only
            why.append(f"analysed {d['frames_done']} < {MIN_HEARTBEAT_SHARE:.0%} of heartbeats")
        if why:
            starved.append(f"{cam}: {', '.join(why)}")

    demanded = offered / elapsed
    p95 = lat["p95"]
    sustained = p95 is not None and p95 < LATENCY_BUDGET_MS and not starved and len(cams1) == n
    return Step(
        n=n, window_s=round(elapsed, 1),
        p50_latency_ms=lat["p50"], p95_latency_ms=p95, p99_latency_ms=lat["p99"], max_latency_ms=lat["max"],
        latency_samples=lat["n"],
        handover_p50_ms=handover["p50"], handover_p95_ms=handover["p95"],
        cpu_cores_total=round(total, 3), cpu_cores_cameras=round(cams_cpu, 3),
        cpu_cores_inference=round(infer_cpu, 3), cpu_cores_other=round(total - cams_cpu - infer_cpu, 3),
        cpu_per_camera=round(total / n * 100, 2), machine_busy_pct=round(busy, 1),
        foreign_cpu_cores=round(max(0.0, busy / 100 * (os.cpu_count() or 2) - total), 2),
        read_fps_per_camera_min=round(min_read, 2),
        detector_fps_demanded=round(demanded, 1), detector_fps_done=round(done / elapsed, 1),
        detector_frames_ratio=round(demanded / bare_fps, 3),
        ungated_ratio=round(n * DETECT_FPS / bare_fps, 3),
        drops=drops, lost=lost, offered=offered, incidents=incidents, starved=starved, sustained=sustained,
        cpu_cores_by_role={k: round(v, 3) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])},
    )


PERSON_IN_SEGMENT_S = 0.7  # the person's first pixels: clip frame 63, the PRESENCE segment starts at 56


def entry_latencies(store: Any, presence_at: dict[str, float], cycle_s: float) -> dict[str, Any]:
    """Seconds from the intruder's first visible frame to the incident, over every intrusion of the run
    (the incident's ``clip_time_s`` is the stream position of the frame that raised it)."""
    from flux_secu.rules.incident import IncidentKind

    delays = []
    for stored in store.incidents():
        inc = stored.incident
        if inc.kind != IncidentKind.INTRUSION or inc.camera not in presence_at or inc.clip_time_s is None:
            continue
        entry = presence_at[inc.camera] + PERSON_IN_SEGMENT_S
        delays.append((inc.clip_time_s - entry + 5.0) % cycle_s - 5.0)  # within a cycle, a little early too
    if not delays:
        return {"n": 0}
    delays.sort()
    p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
    return {"n": len(delays), "p50": round(delays[len(delays) // 2], 2), "p95": round(p95, 2),
            "max": round(delays[-1], 2)}


def wait_ready(cameras: list[Any], timeout_s: float = 120.0) -> None:
    """Every camera actor answers (created, its worker process up) and has read a frame."""
    import ray

    deadline = time.monotonic() + timeout_s
    pending = list(cameras)
    while pending and time.monotonic() < deadline:
        stats = ray.get([c.stats.remote() for c in pending], timeout=max(1.0, deadline - time.monotonic()))
        pending = [c for c, s in zip(pending, stats, strict=True) if s["frames_read"] == 0]
        if pending:
            time.sleep(0.5)
    if pending:
        raise RuntimeError(f"{len(pending)} cameras did not start within {timeout_s} s")


def machine_description() -> str:
    import psutil

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    gpu = "GPU" if shutil.which("nvidia-smi") else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({model}), "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {gpu}, Python {platform.python_version()}")


# ---------------------------------------------------------------------------------------- plot


def plot(steps: list[Step], summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [s.n for s in steps]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    ax.plot(ns, [s.p95_latency_ms or 0 for s in steps], "o-", label="p95")
    ax.plot(ns, [s.p50_latency_ms or 0 for s in steps], "s--", label="p50")
    ax.axhline(LATENCY_BUDGET_MS, color="red", lw=1, label="budget 1 s")
    failed = [s for s in steps if not s.sustained]
    ax.plot([s.n for s in failed], [s.p95_latency_ms or 0 for s in failed], "rx", ms=10,
            label="not sustained")
    ax.set_ylabel("capture -> detection (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.stackplot(ns, [s.cpu_cores_cameras for s in steps], [s.cpu_cores_inference for s in steps],
                 [s.cpu_cores_other for s in steps], labels=["camera actors", "inference actor", "rest"],
                 alpha=0.8)
    ax.plot(ns, [s.machine_busy_pct / 100 * (os.cpu_count() or 2) for s in steps], "k--", lw=1,
            label="whole machine busy")
    ax.axhline(os.cpu_count() or 2, color="red", lw=1, label="cores")
    ax.set_ylabel("CPU (cores)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1][0]
    ax.plot(ns, [s.rss_mib_total / 1024 for s in steps], "o-", label="PSS, all processes")
    ax.axhline(MEMORY_TARGET_MIB / 1024, color="red", lw=1, label="target 6 GiB")
    ax.set_ylabel("memory (GiB)")
    ax.set_xlabel("cameras")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(ns, [s.detector_fps_demanded for s in steps], "o-", label="demanded (motion-gated)")
    ax.plot(ns, [s.detector_fps_done for s in steps], "s--", label="analysed")
    ax.plot(ns, [s.n * DETECT_FPS for s in steps], ":", color="grey", label="ungated (N x 5 fps)")
    ax.axhline(summary["bare_model_fps"], color="red", lw=1, label="bare model, 1 core")
    ax.set_ylabel("detector frames/s")
    ax.set_xlabel("cameras")
    ax.legend(fontsize=8)
    for a in axes.flat:
        a.grid(alpha=0.3)
        if summary["max_cameras"]:
            a.axvline(summary["max_cameras"], color="green", lw=1, ls="--")
    fig.suptitle(f"flux-secu: cameras (640x360@25, 5 detect fps, motion-gated) on {os.cpu_count()} cores — "
                 f"max sustained {summary['max_cameras']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def log_step(step: Step) -> None:
    log(f"N={step.n}: p95 {step.p95_latency_ms} ms (p50 {step.p50_latency_ms}, n={step.latency_samples}; "
        f"after hand-over p95 {step.handover_p95_ms} p50 {step.handover_p50_ms}), "
        f"CPU {step.cpu_cores_total:.2f} cores (cams {step.cpu_cores_cameras:.2f}, "
        f"infer {step.cpu_cores_inference:.2f}), busy {step.machine_busy_pct}%, "
        f"PSS {step.rss_mib_total:.0f} MiB, detector {step.detector_fps_demanded} fps demanded "
        f"/ {step.detector_fps_done} done (ratio {step.detector_frames_ratio}), "
        f"drops {step.drops}/{step.offered}, incidents {step.incidents}, "
        f"min read {step.read_fps_per_camera_min} fps, "
        f"starved {len(step.starved)} -> {'OK' if step.sustained else 'NOT sustained'}")
    for line in step.starved[:5]:
        log(f"    starved {line}")
    if step.foreign_cpu_cores > FOREIGN_CPU_WARN:
        log(f"    WARNING: other processes used {step.foreign_cpu_cores} cores during this window: "
            "the figures are pessimistic (run alone, under the flock)")


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"steps {QUICK_STEPS}, short windows (~3 min)")
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="comma-separated camera counts, increasing")
    parser.add_argument("--warmup", type=float, default=None, help="seconds after each step (default 12)")
    parser.add_argument("--window", type=float, default=None, help="measurement seconds (default 30)")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at the first failing step")
    parser.add_argument("--inference-actors", type=int, default=1,
                        help="InferenceActors in the pool (default 1, as in configs/demo.yaml)")
    parser.add_argument("--cycle", type=float, default=DEFAULT_CYCLE_S,
                        help=f"seconds between two intruders on a camera (default {DEFAULT_CYCLE_S:.0f})")
    parser.add_argument("--no-quiet", action="store_true",
                        help="cameras never go quiet (motion.quiet_after_s: 0): every frame decoded")
    parser.add_argument("--soak", type=float, default=0.0,
                        help="after the (single) step, keep running this many seconds sampling PSS")
    parser.add_argument("--sample-every", type=float, default=30.0, help="soak: seconds between samples")
    parser.add_argument("--settle", type=float, default=600.0,
                        help="soak: growth is fitted on the samples after this many seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.soak and (args.steps is None or len(args.steps) != 1):
        parser.error("--soak needs one step: --steps N")
    steps_n = args.steps or (QUICK_STEPS if args.quick else FULL_STEPS)
    warmup = args.warmup if args.warmup is not None else (6.0 if args.quick else 12.0)
    window = args.window if args.window is not None else (15.0 if args.quick else 30.0)

    started = time.monotonic()
    segments = make_segments()
    scratch = Path(tempfile.mkdtemp(prefix="flux-secu-bench-cameras-"))
    try:
        scene = Scene.create(segments, scratch / "streams", args.cycle)
        max_n = max(steps_n)
        phases = [(i * PHASE_STEP) % 1.0 * scene.cycle_s for i in range(max_n)]
        # Placeholders for the config (sources must exist); rewritten with the right phase at start.
        sources = [scene.playlist(i, phases[i], RUN_S)[0] for i in range(max_n)]
        bare_s = 3.0 if args.quick else 6.0
        bare_before = run_bare(sources[0], segments["presence"], bare_s)
        bare = dict(bare_before)

        import ray

        from flux_secu.actors.graph import Deployment, init_local_ray
        from flux_secu.store import open_store

        config = build_config(sources, scratch, args.inference_actors, quiet=not args.no_quiet)
        cameras = [(site.id, cam) for site in config.sites for cam in site.cameras]
        cameras.sort(key=lambda sc: sc[1].id)  # cam-000, cam-001, ...: sites interleaved
        # Expected analysed frames of a still scene: a quiet camera's heartbeat is the slower one.
        motion = cameras[0][1].motion
        # A quiet camera's heartbeat waits for a key frame: its period is up to one GOP longer.
        heartbeat_s = motion.heartbeat_s if args.no_quiet else motion.quiet_heartbeat_s + GOP_S
        if not args.no_quiet:  # new cameras start watching: measure once the still ones went quiet
            warmup = max(warmup, motion.quiet_after_s + 5.0)
        presence_at: dict[str, float] = {}
        results: list[Step] = []
        init_local_ray()
        try:
            t0 = time.monotonic()
            dep = Deployment.build(config)
            store = open_store(config.store)
            log(f"graph up in {time.monotonic() - t0:.1f} s ({len(config.sites)} sites)")
            epoch = time.monotonic()  # the wall-clock night cycle all cameras share
            for n in steps_n:
                t0 = time.monotonic()
                new = []
                for site_id, cam in cameras[len(dep.cameras):n]:
                    i = len(dep.cameras)
                    now = time.monotonic() - epoch + STARTUP_S
                    # The camera's intruder comes in at phases[i] of the shared cycle.
                    _, presence_at[cam.id] = scene.playlist(i, phases[i] - now, RUN_S)
                    new.append(dep.add_camera(site_id, cam))
                wait_ready(new)
                log(f"N={n}: {len(new)} cameras added in {time.monotonic() - t0:.1f} s; "
                    f"warm-up {warmup:.0f} s")
                time.sleep(warmup)
                step = measure(dep, store, n, window, bare["bare_model_fps"], heartbeat_s)
                step.memory = memory()
                results.append(step)
                log_step(step)
                if not step.sustained and not args.keep_going:
                    break
                if step.rss_mib_total > MEMORY_TARGET_MIB * 2:
                    log("memory far beyond the target: stopping")
                    break
            samples = soak(args.soak, args.sample_every) if args.soak and results else []
            pool_stats = ray.get(dep.pool.stats.remote())
            entries = entry_latencies(store, presence_at, scene.cycle_s)
            dep.stop()
        finally:
            ray.shutdown()
        bare_after = run_bare(sources[0], segments["presence"], bare_s)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    bare = {
        "bare_model_fps": round((bare_before["bare_model_fps"] + bare_after["bare_model_fps"]) / 2, 1),
        "bare_model_fps_before": bare_before["bare_model_fps"],
        "bare_model_fps_after": bare_after["bare_model_fps"],
        "bare_trimmed_canvas_fps": round((bare_before["bare_trimmed_canvas_fps"]
                                          + bare_after["bare_trimmed_canvas_fps"]) / 2, 1),
        "decode_ms_per_frame": round((bare_before["decode_ms_per_frame"]
                                      + bare_after["decode_ms_per_frame"]) / 2, 3),
    }
    for step in results:  # ratios against the mean of the two bare measurements
        step.detector_frames_ratio = round(step.detector_fps_demanded / bare["bare_model_fps"], 3)
        step.ungated_ratio = round(step.n * DETECT_FPS / bare["bare_model_fps"], 3)

    best = None
    for step in results:
        if not step.sustained:
            break
        best = step
    summary: dict[str, Any] = {
        "max_cameras": best.n if best else 0,
        "p95_latency_ms": best.p95_latency_ms if best else None,
        "cpu_per_camera": best.cpu_per_camera if best else None,
        "rss_mib_total": best.rss_mib_total if best else None,
        "detector_frames_ratio": best.detector_frames_ratio if best else None,
        "bare_model_fps": bare["bare_model_fps"],
        "bare_model_fps_before_after": [bare["bare_model_fps_before"], bare["bare_model_fps_after"]],
        "bare_trimmed_canvas_fps": bare["bare_trimmed_canvas_fps"],
        "detector_fps_demanded": best.detector_fps_demanded if best else None,
        "ungated_ratio": best.ungated_ratio if best else None,
        "decode_ms_per_frame": bare["decode_ms_per_frame"],
        "within_memory_target": bool(best and best.rss_mib_total <= MEMORY_TARGET_MIB),
        "target_cameras": 60,
        "first_failing": (next((s.n for s in results if not s.sustained), None)),
        "max_foreign_cpu_cores": max((s.foreign_cpu_cores for s in results), default=0.0),
        "machine": machine_description(),
        "units": {"cpu_per_camera": "% of one core (all processes / N)",
                  "rss_mib_total": "MiB, sum of PSS of the driver and every Ray process",
                  "detector_frames_ratio": "motion-gated detector frames/s demanded / bare model frames/s"},
        "inference_actors": args.inference_actors,
        "quiet_mode": not args.no_quiet,
        "entry_to_incident_s": entries,
        "night_cycle_s": round(scene.cycle_s, 1),
        "person_visible_share": round(12.8 / scene.cycle_s, 3),
        "quick": args.quick,
        "window_s": window,
        "runtime_s": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if args.soak:
        from flux_secu.actors.graph import MEMORY_ENV

        summary["soak"] = {"seconds": args.soak, "cameras": steps_n[0],
                           "memory_env": {k: os.environ.get(k) for k in MEMORY_ENV},
                           **pss_growth(samples, args.settle)}
        (args.out / "cameras-soak.json").write_text(json.dumps(
            {"summary": summary, "samples": samples, "steps": [asdict(s) for s in results]},
            indent=2, ensure_ascii=False) + "\n")
        log(f"wrote {args.out / 'cameras-soak.json'}")
        print(json.dumps(summary, ensure_ascii=False))
        return
    (args.out / "cameras.json").write_text(json.dumps(
        {"summary": summary, "bare": bare, "pool": pool_stats, "steps": [asdict(s) for s in results]},
        indent=2, ensure_ascii=False) + "\n")
    plot(results, summary, args.out / "cameras.png")
    log(f"wrote {args.out / 'cameras.json'} and {args.out / 'cameras.png'}")
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
