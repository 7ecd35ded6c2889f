"""Faults benchmark: what one fault costs the rest of the deployment, measured, in one short run.

1. Hung inference actor: 3 live cameras (2 analysed frames/s each, motion gate off) on 2 inference
   actors; after a healthy window, one actor's model call hangs (``tests/hanging_model.py``: a real
   blocking call on a file flag) for a window as long. Counted from the cameras' and the pool's own
   counters: frames analysed per camera in each window, frames lost, frames lost beyond the hung
   calls' own (the target is 0), frames dropped (stale while waiting behind a hung call).
2. Supervisor crash: a supervised deployment of 4 live cameras; ``ray.kill`` of the supervisor's
   process, then the time until the supervisor answers again through Ray, and until
   ``flux-secu cameras list --address`` answers (that includes the CLI's own start), and how many
   frames the cameras read meanwhile.
3. ``flux-secu evaluate`` on 200 kB of random bytes and on the shipped clips cut at half their size:
   time to the exit status 2.

Last line of output: one JSON object. Usage: ``python benchmarks/faults.py [--window 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("NOTIFY_TOKEN_FOR_TESTS", "benchmark")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' helpers: the hanging model, the test config

import yaml  # noqa: E402
from machine import describe, publish  # noqa: E402  (benchmarks/machine.py)

from flux_secu.config import parse_config  # noqa: E402
from tests.conftest import FLUX_SECU, LOWLIGHT_CLIP, MODEL, ONE_BY_ONE_CLIP, site_yaml  # noqa: E402


def config_data(tmp: Path, cameras: list[str], source: Path) -> dict[str, Any]:
    data = yaml.safe_load(site_yaml(var_dir=str(tmp / "var")))
    base = data["sites"][0]["cameras"][0]
    base.update(source=str(source), detect_fps=2, motion={"enabled": False})
    data["sites"][0]["cameras"] = [dict(base, id=cid) for cid in cameras]
    data["evidence"] = {"enabled": False}
    return data


def small_clip(src: Path, dst: Path, width: int, seconds: float | None = None) -> Path:
    cut = ["-t", str(seconds)] if seconds else []
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), *cut, "-vf", f"scale={width}:-2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-an", str(dst)], check=True)
    return dst


def counters(dep: Any, cameras: list[str]) -> dict[str, dict[str, Any]]:
    import ray

    return {c: ray.get(dep.cameras[c].stats.remote()) for c in cameras}


def hung_actor(tmp: Path, window_s: float) -> dict[str, Any]:
    import ray

    from flux_secu.actors.graph import Deployment
    from tests.hanging_model import HangingWorker, hang

    cameras = ["cam-0", "cam-1", "cam-2"]
    flags = tmp / "model"
    flags.mkdir()
    (flags / "yolox_nano.onnx").symlink_to(MODEL)
    data = config_data(tmp, cameras, LOWLIGHT_CLIP)
    data["model"]["path"] = str(flags / "yolox_nano.onnx")
    data["inference"] = {"actors": 2, "cpus_per_actor": 0.5, "max_batch": 1}
    for camera in data["sites"][0]["cameras"]:
        camera["video_loss_after_s"] = 3 * window_s  # no analysis_stalled: one actor serves
    config = parse_config(data, tmp)
    dep = Deployment.build(config, inference_worker=HangingWorker)
    try:
        for camera in config.sites[0].cameras:
            dep.add_camera(config.sites[0].id, camera)
        while not all(s["frames_done"] >= 3 for s in counters(dep, cameras).values()):
            time.sleep(0.5)
        t0, pool0 = counters(dep, cameras), ray.get(dep.pool.stats.remote())
        time.sleep(window_s)
        t1, pool1 = counters(dep, cameras), ray.get(dep.pool.stats.remote())
        victim, _ = ray.get(dep.pool.actor_handles.remote())
        flag = hang(flags, victim)
        time.sleep(window_s)
        t2, pool2 = counters(dep, cameras), ray.get(dep.pool.stats.remote())
        flag.unlink()

        def delta(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], key: str) -> dict[str, int]:
            return {c: int(b[c][key] - a[c][key]) for c in cameras}

        lost = delta(t1, t2, "frames_lost")
        failed = pool2["failed_frames"] - pool1["failed_frames"]
        return {
            "window_s": window_s,
            "analysed_healthy": delta(t0, t1, "frames_done"),
            "analysed_one_hung": delta(t1, t2, "frames_done"),
            "frames_lost_one_hung": lost,
            "hung_calls": pool2["hung_calls"] - pool1["hung_calls"],
            "frames_in_failed_calls": failed,
            "frames_lost_beyond_the_hung_calls": sum(lost.values()) - failed,
            "drops_one_hung": delta(t1, t2, "drops"),
            "drops_healthy": delta(t0, t1, "drops"),
            "deadlines_s": pool2["deadlines_s"],
            "lost_healthy": sum(delta(t0, t1, "frames_lost").values()),
            "failed_calls_healthy": pool1["failed_frames"] - pool0["failed_frames"],
        }
    finally:
        for actor in dep.actors():
            ray.kill(actor, no_restart=True)


def cli_lists(address: str) -> bool:
    result = subprocess.run([str(FLUX_SECU), "cameras", "list", "--json", "--address", address],
                            capture_output=True, text=True, timeout=60)
    return result.returncode == 0 and len(result.stdout.splitlines()) == 4


def supervisor_crash(tmp: Path) -> dict[str, Any]:
    import ray

    from flux_secu.actors.supervisor import NoDeployment, create_supervisor, get_supervisor

    cameras = ["cam-0", "cam-1", "cam-2", "cam-3"]
    clip = small_clip(LOWLIGHT_CLIP, tmp / "empty.mp4", 160, seconds=6)
    data = config_data(tmp, cameras, clip)
    data["sites"][0]["cameras"] = [dict(c, detect_fps=1) for c in data["sites"][0]["cameras"]]
    data["camera_hosts"] = {"cameras_per_host": 2}
    config = parse_config(data, tmp)
    address = ray.get_runtime_context().gcs_address
    supervisor = create_supervisor(config)
    ray.get(supervisor.start.remote())
    try:
        while not all(r["frames_read"] > 0 for r in ray.get(supervisor.cameras.remote())):
            time.sleep(0.5)
        before = {r["camera"]: r["frames_read"] for r in ray.get(supervisor.cameras.remote())}
        t0 = time.monotonic()
        ray.kill(supervisor, no_restart=False)
        ray_s = None
        while ray_s is None:
            try:
                ray.get(get_supervisor().cameras.remote(), timeout=5)
                ray_s = time.monotonic() - t0
            except (NoDeployment, ray.exceptions.RayError, TimeoutError):
                time.sleep(0.05)
        while not cli_lists(address):
            time.sleep(0.05)
        cli_s = time.monotonic() - t0
        after = {r["camera"]: r["frames_read"] for r in ray.get(get_supervisor().cameras.remote())}
        return {
            "cameras": len(cameras),
            "kill_to_supervisor_answering_s": round(ray_s, 2),
            "kill_to_cameras_list_answering_s": round(cli_s, 2),
            "frames_read_meanwhile_min": min(after[c] - before[c] for c in cameras),
        }
    finally:
        sup = get_supervisor()
        ray.get(sup.stop.remote(), timeout=120)
        ray.kill(sup)


def evaluate_bad_clips(tmp: Path) -> dict[str, Any]:
    config = tmp / "eval.yaml"
    config.write_text(site_yaml(var_dir=str(tmp / "var-eval")))
    garbage = tmp / "bad.mp4"
    garbage.write_bytes(os.urandom(200_000))
    clips = {"random_bytes": garbage}
    for name, src in (("lowlight_cut_half", LOWLIGHT_CLIP), ("one_by_one_cut_half", ONE_BY_ONE_CLIP)):
        data = src.read_bytes()
        clips[name] = tmp / f"{name}.mp4"
        clips[name].write_bytes(data[: len(data) // 2])
    out: dict[str, Any] = {}
    for name, clip in clips.items():
        t0 = time.monotonic()
        result = subprocess.run([str(FLUX_SECU), "evaluate", str(config), "--camera", "cam-test", "--clip",
                                 str(clip)], capture_output=True, text=True, timeout=120)
        out[name] = {"exit": result.returncode, "s": round(time.monotonic() - t0, 2),
                     "stderr_lines": len(result.stderr.strip().splitlines())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=20.0, help="seconds healthy, then as long hung")
    args = parser.parse_args()
    import ray

    from flux_secu.actors.graph import init_local_ray

    tmp = Path(tempfile.mkdtemp(prefix="flux-secu-faults-"))
    bad = evaluate_bad_clips(tmp)
    print(f"evaluate on bad clips: {json.dumps(bad)}", flush=True)
    init_local_ray(num_cpus=2, object_store_mib=300)
    try:
        for part in ("hung", "crash"):
            (tmp / part).mkdir()
        hung = hung_actor(tmp / "hung", args.window)
        print(f"one inference actor hung: {json.dumps(hung)}", flush=True)
        crash = supervisor_crash(tmp / "crash")
        print(f"supervisor crash: {json.dumps(crash)}", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    publish("faults", {"hung_inference_actor": hung, "supervisor_crash": crash, "evaluate_bad_clip": bad,
                       "machine": describe()})


if __name__ == "__main__":
    main()
