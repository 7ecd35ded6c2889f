"""The ``flux-secu`` command: check a config, run the pipeline, replay a clip through it."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from flux_secu.config import Config, ConfigError, load_config

# Listen on loopback only, and keep Ray's own token auth predictable (see README, "Ray").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
log = structlog.get_logger("flux_secu.cli")

EXIT_CONFIG = 2


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"flux-secu: config error in {path}: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None


@app.command()
def check(config: Path) -> None:
    """Validate CONFIG; exit status 2 with the field and the reason when it is wrong."""
    cfg = _load(config)
    cameras = sum(len(s.cameras) for s in cfg.sites)
    typer.echo(f"{config}: OK ({len(cfg.sites)} site(s), {cameras} camera(s))")


@app.command()
def run(
    config: Path,
    for_seconds: Annotated[float | None, typer.Option("--for", help="Stop after this many seconds.")] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")] = False,
) -> None:
    """Run every camera of CONFIG on an embedded local Ray until Ctrl-C (or --for SECONDS)."""
    from flux_secu.logs import configure

    configure(json_lines=json_logs)
    cfg = _load(config)
    from flux_secu.actors.graph import Deployment, init_local_ray
    from flux_secu.store import open_store

    init_local_ray()
    import ray

    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    store = open_store(cfg.store)
    last_seq = max((e.seq for e in store.events()), default=0)
    try:
        dep = Deployment.build(cfg)
        dep.start_all_cameras()
        log.info("running", sites=len(cfg.sites), cameras=len(dep.cameras), store=str(cfg.store.path),
                 var_dir=str(cfg.var_dir), stop="Ctrl-C" if for_seconds is None else f"after {for_seconds}s")
        deadline = None if for_seconds is None else time.monotonic() + for_seconds
        next_stats = time.monotonic() + 10
        while not stopping and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.25)
            last_seq = _log_new_events(store, last_seq)
            if time.monotonic() >= next_stats:
                next_stats += 10
                for s in dep.camera_stats():
                    log.info("camera_stats", **s)
        log.info("stopping")
        for s in dep.stop():
            log.info("camera_stopped", **s)
        _log_new_events(store, last_seq)
    finally:
        store.close()
        ray.shutdown()


def _log_new_events(store: Any, after_seq: int) -> int:
    for event in store.events(after_seq=after_seq):
        after_seq = event.seq
        data = event.data
        if event.kind == "opened":
            log.info("incident", incident=event.incident_id, site=data["site"], camera=data["camera"],
                     kind=data["kind"], label=data["label"], score=data["score"])
        elif event.kind == "warning":
            log.info("warning", incident=event.incident_id, speaker=data["speaker"], wav=data["wav"])
        elif event.kind == "notification":
            log.info("notification", incident=event.incident_id, contact=data["contact"],
                     channels=data["channels"])
        elif event.kind in ("recheck", "escalated", "deterred", "acknowledged", "presence_ended",
                            "notification_failed", "panic_proof"):
            log.info(event.kind, incident=event.incident_id, **{k: v for k, v in data.items()
                                                                  if isinstance(v, str | int | float | bool)})
    return after_seq


@app.command()
def evaluate(
    config: Path,
    camera: Annotated[str, typer.Option(help="Camera of CONFIG whose site, rules and settings apply.")],
    clip: Annotated[Path, typer.Option(help="Video file to replay as that camera.")],
    at: Annotated[
        datetime | None, typer.Option(help="Pipeline clock at the clip's first frame (ISO 8601).",
                                      formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"])
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    store: Annotated[Path | None, typer.Option(help="Keep incidents in this SQLite file.")] = None,
) -> None:
    """Replay CLIP through the real pipeline as CAMERA, as fast as the machine allows.

    Warnings and notifications go to file drivers in a scratch directory: a replay never sounds a
    real speaker nor notifies a real person.
    """
    from flux_secu.logs import configure

    configure(json_lines=True)
    cfg = _load(config)
    try:
        site_cfg, cam_cfg = cfg.camera(camera)
    except KeyError as exc:
        typer.echo(f"flux-secu: {exc.args[0]}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if not clip.is_file():
        typer.echo(f"flux-secu: --clip: file not found: {clip}", err=True)
        raise typer.Exit(EXIT_CONFIG)
    tz = cfg.site_timezone(site_cfg)
    start = at or datetime.now(tz)
    if start.tzinfo is None:
        start = start.replace(tzinfo=tz)
    scratch = Path(tempfile.mkdtemp(prefix="flux-secu-evaluate-"))
    store_path = store or scratch / "incidents.db"
    replay_camera = cam_cfg.model_copy(update={"source": str(clip.resolve()), "loop": False})
    replay_site = site_cfg.model_copy(update={"cameras": [replay_camera]})
    replay_cfg = cfg.model_copy(update={
        "sites": [replay_site], "var_dir": scratch,
        "store": cfg.store.model_copy(update={"path": store_path}),
    })

    from flux_secu.actors.graph import Deployment, init_local_ray
    from flux_secu.store import open_store

    init_local_ray()
    import ray

    try:
        t0 = time.monotonic()
        dep = Deployment.build(replay_cfg, dry_run=True)
        t_ready = time.monotonic()
        dep.add_camera(site_cfg.id, replay_camera, realtime=False, clock_start=start)
        stats = ray.get(dep.runs[camera])
        ray.get(dep.rules.flush.remote())
        wall = time.monotonic() - t_ready
        pool_stats = ray.get(dep.pool.stats.remote())
    finally:
        ray.shutdown()
    db = open_store(replay_cfg.store)
    incidents = db.incidents()
    lines: list[dict[str, Any]] = []
    for stored in incidents:
        inc = stored.incident
        lines.append({
            "type": "incident", "id": inc.id, "kind": str(inc.kind), "camera": inc.camera,
            "site": inc.site, "label": inc.label, "clip_time_s": inc.clip_time_s,
            "at": datetime.fromtimestamp(inc.opened_at, tz).isoformat(), "score": inc.score,
            "state": str(stored.state),
            "warnings": sum(1 for e in db.events(inc.id) if e.kind == "warning"),
            "notifications": sum(1 for e in db.events(inc.id) if e.kind == "notification"),
            "recheck": next((e.data["still_there"] for e in db.events(inc.id) if e.kind == "recheck"), None),
        })
    db.close()
    lines.append({
        "type": "summary", "frames": stats["frames_read"], "frames_sampled": stats["frames_sampled"],
        "frames_analysed": stats["frames_done"], "frames_gated": stats["frames_gated"],
        "frames_lost": stats["frames_lost"], "incidents": len(incidents),
        "batch_hist": pool_stats["batch_hist"], "wall_s": round(wall, 3),
        "startup_s": round(t_ready - t0, 3), "fps": round(stats["frames_read"] / max(wall, 1e-9), 1),
        "store": str(store_path),
    })
    for line in lines:
        if json_output:
            typer.echo(json.dumps(line, ensure_ascii=False))
        else:
            typer.echo("  ".join(f"{k}={v}" for k, v in line.items()))


site_app = typer.Typer(no_args_is_help=True, help="Sites: arm or disarm by hand, for a while.")
app.add_typer(site_app, name="site")


def _override(config: Path, site: str, armed: bool, seconds: float, by: str, store: Path | None) -> None:
    cfg = _load(config)
    if site not in {s.id for s in cfg.sites}:
        known = ", ".join(s.id for s in cfg.sites)
        typer.echo(f"flux-secu: unknown site {site!r} (known: {known})", err=True)
        raise typer.Exit(EXIT_CONFIG)
    from flux_secu.actors.rules import override_key
    from flux_secu.store import open_store

    store_cfg = cfg.store if store is None else cfg.store.model_copy(update={"path": store})
    db = open_store(store_cfg)
    until = time.time() + seconds
    db.put_setting(override_key(site), {"armed": armed, "until": until, "by": by, "set_at": time.time()})
    db.close()
    state = "armed" if armed else "disarmed"
    local = datetime.fromtimestamp(until, cfg.site_timezone(next(s for s in cfg.sites if s.id == site)))
    typer.echo(f"{site}: {state} until {local.isoformat(timespec='seconds')}")


@site_app.command("disarm")
def site_disarm(
    config: Path, site: str,
    for_seconds: Annotated[float, typer.Option("--for", help="Seconds until the calendar rules again.")],
    by: Annotated[str, typer.Option(help="Who asked (kept in the store).")] = "cli",
    store: Annotated[Path | None, typer.Option(help="SQLite file instead of the config's store.")] = None,
) -> None:
    """No intrusion rules on SITE for a while (a late delivery, works at night)."""
    _override(config, site, False, for_seconds, by, store)


@site_app.command("arm")
def site_arm(
    config: Path, site: str,
    for_seconds: Annotated[float, typer.Option("--for", help="Seconds until the calendar rules again.")],
    by: Annotated[str, typer.Option(help="Who asked (kept in the store).")] = "cli",
    store: Annotated[Path | None, typer.Option(help="SQLite file instead of the config's store.")] = None,
) -> None:
    """Intrusion rules on SITE even during opening hours, for a while (an exceptional closure)."""
    _override(config, site, True, for_seconds, by, store)


model_app = typer.Typer(no_args_is_help=True, help="Model files: make a fixed-batch export batchable.")
app.add_typer(model_app, name="model")


@model_app.command("prepare")
def model_prepare(
    source: Annotated[Path, typer.Argument(help="Fixed-batch ONNX export (IN.onnx).")],
    target: Annotated[Path, typer.Argument(help="Where to write the dynamic-batch model (OUT.onnx).")],
    batch: Annotated[int, typer.Option(help="Batch size used to verify the result.")] = 4,
) -> None:
    """Make the batch axis of SOURCE dynamic, verify batch == single runs, write TARGET.

    Exits with status 2 and one line saying why when the model cannot be converted safely.
    """
    from flux_secu.detect.prepare import PrepareError, prepare_model

    try:
        report = prepare_model(source, target, batch=batch)
    except PrepareError as exc:
        typer.echo(f"flux-secu: cannot prepare {source}: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    typer.echo(
        f"{target}: batch axis of input {report.input_name!r} is dynamic "
        f"({report.rewritten_reshapes} Reshape target(s) rewritten"
        f"{', already dynamic' if report.already_dynamic else ''}); "
        f"batch of {report.batch} matches {report.batch} single runs (max abs diff {report.max_abs_diff:.2g})"
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
