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

from flux_secu.config import Config, ConfigError, StoreConfig, load_config
from flux_secu.redact import redact_url

# Listen on loopback only, and keep Ray's own token auth predictable (see README, "Ray").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
log = structlog.get_logger("flux_secu.cli")

EXIT_CONFIG = 2


def _store_config(cfg: Config, store: Path | None) -> StoreConfig:
    """The config's store, or the SQLite file a command's ``--store`` names instead (even when the
    config's store is Redis: ``--store`` is always a file)."""
    return cfg.store if store is None else cfg.store.model_copy(update={"kind": "sqlite", "path": store})


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


AddressOption = Annotated[str | None, typer.Option(
    "--address", envvar="RAY_ADDRESS",
    help="Ray cluster to join: auto, HOST:PORT of its head (default: $RAY_ADDRESS, else auto).")]


@app.command()
def run(
    config: Path,
    for_seconds: Annotated[float | None, typer.Option("--for", help="Stop after this many seconds.")] = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")] = False,
    address: Annotated[str | None, typer.Option(
        "--address", help="Run on this Ray cluster (auto, HOST:PORT), not an embedded local Ray.")] = None,
    detach: Annotated[bool, typer.Option(
        "--detach", help="With --address: return once everything runs; flux-secu stop ends it.")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", help="Embedded Ray: port of its Prometheus metrics endpoint.")] = None,
) -> None:
    """Run every camera of CONFIG until Ctrl-C (or --for SECONDS), on an embedded local Ray or a cluster.

    The deployment belongs to a named supervisor actor: while it runs, flux-secu cameras, pool, reload
    and stop change it from any machine that reaches the cluster.
    """
    from flux_secu.logs import configure

    configure(json_lines=json_logs)
    cfg = _load(config)
    if detach and address is None:
        typer.echo("flux-secu: --detach needs --address (an embedded Ray ends with this command)", err=True)
        raise typer.Exit(EXIT_CONFIG)
    from flux_secu.actors.graph import init_local_ray
    from flux_secu.actors.supervisor import create_supervisor, error_text
    from flux_secu.store import open_store

    if address is None:
        init_local_ray(metrics_port=metrics_port)
    else:
        _join(address)
        _refuse_sqlite_on_several_nodes(cfg)
    import ray

    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    store = open_store(cfg.store)
    last_seq = max((e.seq for e in store.events()), default=0)
    supervisor = None
    try:
        # On a cluster, the actors' processes do not inherit this one's environment.
        env = {"env_vars": {"FLUX_SECU_LOG_JSON": os.environ["FLUX_SECU_LOG_JSON"]}} if address else None
        try:
            supervisor = create_supervisor(cfg, runtime_env=env)
        except RuntimeError as exc:
            typer.echo(f"flux-secu: {exc}", err=True)
            raise typer.Exit(EXIT_CONFIG) from None
        try:
            started = ray.get(supervisor.start.remote())
        except ray.exceptions.RayError as exc:
            typer.echo(f"flux-secu: the deployment did not start: {error_text(exc)}", err=True)
            raise typer.Exit(1) from None
        if "api" in started:
            log.info("api_listening", url=started["api"])
        where = (redact_url(cfg.store.url.get_secret_value()) if cfg.store.kind == "redis"
                 else str(cfg.store.path))
        log.info("running", sites=len(cfg.sites), cameras=started["cameras"], store=where,
                 var_dir=str(cfg.var_dir), stop="Ctrl-C" if for_seconds is None else f"after {for_seconds}s")
        if detach:
            supervisor = None  # it outlives this command
            typer.echo(f"flux-secu: running on {address}; flux-secu stop --address {address} ends it")
            return
        deadline = None if for_seconds is None else time.monotonic() + for_seconds
        next_stats = time.monotonic() + 10
        while not stopping and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.25)
            last_seq = _log_new_events(store, last_seq)
            if time.monotonic() >= next_stats:
                next_stats += 10
                for s in ray.get(supervisor.cameras.remote()):
                    log.info("camera_stats", **s)
        log.info("stopping")
        for s in ray.get(supervisor.stop.remote()):
            log.info("camera_stopped", **s)
        _log_new_events(store, last_seq)
    finally:
        if supervisor is not None:
            ray.kill(supervisor)
        store.close()
        ray.shutdown()


def _join(address: str) -> None:
    from flux_secu.actors.graph import connect_ray

    try:
        connect_ray(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        typer.echo(f"flux-secu: cannot join the Ray cluster at {address}: {exc}", err=True)
        raise typer.Exit(1) from None


def _refuse_sqlite_on_several_nodes(cfg: Config) -> None:
    """Actors on several nodes would each open their own SQLite file (or share one over a network
    filesystem, where SQLite's locks do not hold): incidents lost or acknowledged twice. A cluster of
    one node (a test, a single server run detached) may keep SQLite."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if cfg.store.kind == "sqlite" and nodes > 1:
        typer.echo(f"flux-secu: store.kind sqlite cannot serve a cluster of {nodes} nodes: "
                   "use store.kind redis", err=True)
        ray.shutdown()
        raise typer.Exit(EXIT_CONFIG)


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
                            "notification_failed", "panic_proof", "evidence", "legal_hold"):
            log.info(event.kind, incident=event.incident_id, **{k: v for k, v in data.items()
                                                                  if isinstance(v, str | int | float | bool)})
    return after_seq


@app.command()
def evaluate(
    config: Path,
    camera: Annotated[
        str | None, typer.Option(help="Camera of CONFIG whose site, rules and settings apply.")
    ] = None,
    clip: Annotated[Path | None, typer.Option(help="Video file to replay as that camera.")] = None,
    at: Annotated[
        datetime | None, typer.Option(help="Pipeline clock at the clip's first frame (ISO 8601).",
                                      formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"])
    ] = None,
    manifest: Annotated[Path | None, typer.Option(
        help="Replay every entry of this YAML manifest (clip, camera, at, expected presences) instead of "
             "one --camera/--clip, and score precision, recall and alert latency.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    store: Annotated[Path | None, typer.Option(
        help="Keep incidents in this SQLite file (--manifest: in this directory, a file per entry).")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the replay's scratch directory (store, evidence, warnings played).")] = False,
) -> None:
    """Replay CLIP through the real pipeline as CAMERA, as fast as the machine allows.

    With --manifest, replay each entry of the manifest the same way (one Ray session for all) and
    score the incidents against the expected presences.

    Warnings and notifications go to file drivers in a scratch directory: a replay never sounds a
    real speaker nor notifies a real person. The scratch directory is removed at the end unless
    --keep is given (--store keeps the incidents and their evidence beside the store).

    A clip that is not a video, or is cut short, ends the command with exit status 2 and one line.
    """
    from flux_secu.logs import configure

    configure(json_lines=True)
    if manifest is not None and (camera is not None or clip is not None or at is not None):
        typer.echo("flux-secu: --manifest replaces --camera, --clip and --at (each entry has its own): "
                   "give one or the other", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if manifest is None and (camera is None or clip is None):
        typer.echo("flux-secu: give --camera and --clip, or --manifest", err=True)
        raise typer.Exit(EXIT_CONFIG)
    cfg = _load(config)
    if manifest is not None:
        _evaluate_manifest(cfg, manifest, json_output, store, keep)
        return
    assert camera is not None and clip is not None  # checked above; narrows the types
    try:
        site_cfg, _ = cfg.camera(camera)
    except KeyError as exc:
        typer.echo(f"flux-secu: {exc.args[0]}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if not clip.is_file():
        typer.echo(f"flux-secu: --clip: file not found: {clip}", err=True)
        raise typer.Exit(EXIT_CONFIG)
    _check_clip("--clip", clip)
    tz = cfg.site_timezone(site_cfg)
    start = at or datetime.now(tz)
    if start.tzinfo is None:
        start = start.replace(tzinfo=tz)

    from flux_secu.actors.graph import init_local_ray

    init_local_ray()
    import ray

    try:
        incidents, summary = _replay(cfg, camera, clip, start, store, keep)
    except ClipError as exc:
        typer.echo(f"flux-secu: --clip: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    finally:
        ray.shutdown()
    for line in [*incidents, summary]:
        _echo(line, json_output)


class ClipError(Exception):
    """A replayed clip that cannot be read to its end: one line naming the file and the reason."""


def _check_clip(option: str, clip: Path) -> None:
    """Before anything starts: a file that is not a video, or is cut short, ends the command (exit 2)."""
    from flux_secu.video.source import SourceError, check_video_file

    try:
        check_video_file(str(clip))
    except SourceError as exc:
        typer.echo(f"flux-secu: {option}: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None


def _echo(line: dict[str, Any], json_output: bool) -> None:
    if json_output:
        typer.echo(json.dumps(line, ensure_ascii=False))
    else:
        typer.echo("  ".join(f"{k}={v}" for k, v in line.items()))


def _replay(
    cfg: Config, camera: str, clip: Path, start: datetime, store: Path | None, keep: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Replay CLIP as CAMERA of CFG, clock starting at START, on the Ray this process has started.

    Every replay gets actors of its own, killed before returning: the tracks, presences and open
    incidents of one clip must not carry over into the next one replayed in the same Ray session.
    Returns the incident lines and the summary line that ``evaluate --json`` prints. The scratch
    directory (the replay's var_dir, and its store unless ``store``) is removed unless ``keep``;
    raises ClipError when the clip could not be read to its end.
    """
    import shutil

    scratch = Path(tempfile.mkdtemp(prefix="flux-secu-evaluate-"))
    try:
        lines, summary = _replay_in(cfg, camera, clip, start, store, scratch)
        if store is None and not keep:
            summary["store"] = None  # it was in the scratch directory: gone with it
        return lines, summary
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def _replay_in(
    cfg: Config, camera: str, clip: Path, start: datetime, store: Path | None, scratch: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import ray

    from flux_secu.actors.graph import Deployment
    from flux_secu.store import open_store

    site_cfg, cam_cfg = cfg.camera(camera)
    tz = cfg.site_timezone(site_cfg)
    store_path = store or scratch / "incidents.db"
    replay_camera = cam_cfg.model_copy(update={"source": str(clip.resolve()), "loop": False})
    replay_site = site_cfg.model_copy(update={"cameras": [replay_camera]})
    replay_cfg = cfg.model_copy(update={
        "sites": [replay_site], "var_dir": scratch,
        # Always a SQLite file: a replay must never write into a production (Redis) store.
        "store": cfg.store.model_copy(update={"kind": "sqlite", "path": store_path}),
        # Nor its evidence into the production evidence folder: beside the replay's store.
        "evidence": cfg.evidence.model_copy(update={"dir": store_path.parent / "evidence"}),
    })

    t0 = time.monotonic()
    dep = Deployment.build(replay_cfg, dry_run=True)
    try:
        t_ready = time.monotonic()
        dep.add_camera(site_cfg.id, replay_camera, realtime=False, clock_start=start)
        try:
            stats = ray.get(dep.runs[camera])
        except ray.exceptions.RayTaskError as exc:  # the camera ends a replay whose file fails mid-way
            from flux_secu.video.source import SourceError

            if isinstance(exc.cause, SourceError):
                raise ClipError(str(exc.cause)) from None
            raise
        ray.get(dep.rules.flush.remote())
        wall = time.monotonic() - t_ready
        pool_stats = ray.get(dep.pool.stats.remote())
    finally:
        # The inference actors belong to the pool, which created them: they die with it.
        for actor in dep.actors(inference=False):
            ray.kill(actor)
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
            "evidence": {e.data["file"]: e.data["path"] for e in db.events(inc.id) if e.kind == "evidence"},
        })
    db.close()
    summary = {
        "type": "summary", "frames": stats["frames_read"], "frames_decoded": stats["frames_decoded"],
        "quiet_periods": stats["quiet_periods"], "frames_sampled": stats["frames_sampled"],
        "frames_analysed": stats["frames_done"], "frames_gated": stats["frames_gated"],
        "frames_skipped_following": stats["frames_skipped_following"],
        "frames_skipped_resting": stats["frames_skipped_resting"],
        "frames_lost": stats["frames_lost"], "incidents": len(incidents),
        "batch_hist": pool_stats["batch_hist"], "wall_s": round(wall, 3),
        "startup_s": round(t_ready - t0, 3), "fps": round(stats["frames_read"] / max(wall, 1e-9), 1),
        "store": str(store_path),
    }
    return lines, summary


def _evaluate_manifest(
    cfg: Config, manifest_path: Path, json_output: bool, store_dir: Path | None, keep: bool = False
) -> None:
    """Replay every entry of the manifest in one Ray session; print each clip's incidents and score as
    it finishes (a long manifest shows progress), then the overall score."""
    from flux_secu.evaluation import (
        ClipScore,
        ManifestError,
        Raised,
        check_cameras,
        clip_details,
        load_manifest,
        metrics,
        score_clip,
    )

    try:
        plan = load_manifest(manifest_path)
        check_cameras(plan, cfg)
    except ManifestError as exc:
        typer.echo(f"flux-secu: manifest error in {manifest_path}: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    for i, entry in enumerate(plan.entries):
        _check_clip(f"manifest {manifest_path}: entries[{i}].clip", entry.clip)
    stores: list[Path | None] = [None] * len(plan.entries)
    if store_dir is not None:
        if store_dir.exists() and not store_dir.is_dir():
            typer.echo(f"flux-secu: --store: with --manifest, a directory: {store_dir} is a file", err=True)
            raise typer.Exit(EXIT_CONFIG)
        stores = [store_dir / f"{i:02d}-{entry.camera}.db" for i, entry in enumerate(plan.entries)]
        # Incident ids come from what caused them: replayed into a used store, every incident would be
        # found "already announced" (no warning, no notification) and the figures would be wrong.
        used = [str(path) for path in stores if path is not None and path.exists()]
        if used:
            typer.echo(f"flux-secu: --store: already used, remove first: {', '.join(used)}", err=True)
            raise typer.Exit(EXIT_CONFIG)
        store_dir.mkdir(parents=True, exist_ok=True)

    from flux_secu.actors.graph import init_local_ray

    t0 = time.monotonic()
    init_local_ray()
    ray_start_s = time.monotonic() - t0
    import ray

    scores: list[ClipScore] = []
    replays: list[dict[str, Any]] = []
    try:
        for entry, store in zip(plan.entries, stores, strict=True):
            try:
                incidents, replay = _replay(cfg, entry.camera, entry.clip, entry.at, store, keep)
            except ClipError as exc:
                typer.echo(f"flux-secu: {entry.label}: {exc}", err=True)
                raise typer.Exit(EXIT_CONFIG) from None
            raised = [Raised(float(i["clip_time_s"]), i["kind"]) for i in incidents]
            score = score_clip(entry.expected, raised, entry.tolerance_s)
            scores.append(score)
            replays.append(replay)
            for incident in incidents:
                _echo({"type": "incident", "clip": entry.label, **{k: v for k, v in incident.items()
                                                                     if k != "type"}}, json_output)
            _echo({
                "type": "clip_summary", "clip": entry.label, "camera": entry.camera, "file": str(entry.clip),
                "at": entry.at.isoformat(), **metrics([score]), **clip_details(score),
                **{k: replay[k] for k in ("frames", "frames_analysed", "frames_lost", "wall_s", "startup_s",
                                          "fps", "store")},
            }, json_output)
    finally:
        ray.shutdown()
    _echo({
        "type": "summary", **metrics(scores), "clips": len(scores),
        "frames": sum(r["frames"] for r in replays),
        "frames_analysed": sum(r["frames_analysed"] for r in replays),
        "frames_lost": sum(r["frames_lost"] for r in replays),
        "replay_wall_s": round(sum(r["wall_s"] for r in replays), 3),
        "ray_start_s": round(ray_start_s, 3), "wall_s": round(time.monotonic() - t0, 3),
    }, json_output)


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

    store_cfg = _store_config(cfg, store)
    db = open_store(store_cfg)
    until = time.time() + seconds
    db.put_setting(override_key(site), {"armed": armed, "until": until, "by": by, "set_at": time.time()})
    db.append_audit(time.time(), by, "arm" if armed else "disarm", site,
                    {"via": "cli", "until": until, "os_user": _os_user()})
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


evidence_app = typer.Typer(no_args_is_help=True, help="Evidence: retention purge and legal hold.")
app.add_typer(evidence_app, name="evidence")
StoreOption = Annotated[
    Path | None, typer.Option("--store", help="SQLite file instead of the config's store.")
]


def _os_user() -> str:
    """Who ran the command on this machine (the audit keeps it beside ``--by``, which anyone may type)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _evidence_store(config: Path, store: Path | None) -> tuple[Config, Any]:
    from flux_secu.store import open_store

    cfg = _load(config)
    return cfg, open_store(_store_config(cfg, store))


@evidence_app.command("purge")
def evidence_purge(config: Path, store: StoreOption = None) -> None:
    """Delete the evidence older than evidence.retention_days, except incidents on legal hold
    (`flux-secu run` does this every hour)."""
    from flux_secu.evidence.retention import purge_expired

    cfg, db = _evidence_store(config, store)
    try:
        report = purge_expired(db, cfg.evidence_dir, time.time(), cfg.evidence.retention_days)
    finally:
        db.close()
    typer.echo(f"purged {len(report.purged)} incident(s) older than {cfg.evidence.retention_days:g} days; "
               f"{len(report.held)} kept on legal hold")


@evidence_app.command("hold")
def evidence_hold(
    config: Path, incident: str,
    by: Annotated[str, typer.Option(help="Who decided (kept on the incident's timeline).")],
    release: Annotated[bool, typer.Option("--release", help="Lift the hold instead.")] = False,
    store: StoreOption = None,
) -> None:
    """Keep an incident's evidence past the retention period (a complaint, a police request)."""
    from flux_secu.evidence.retention import set_legal_hold

    _, db = _evidence_store(config, store)
    try:
        set_legal_hold(db, incident, not release, by, time.time())
        db.append_audit(time.time(), by, "legal_hold", incident,
                        {"via": "cli", "hold": not release, "os_user": _os_user()})
    except KeyError as exc:
        typer.echo(f"flux-secu: {exc.args[0]}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    finally:
        db.close()
    typer.echo(f"{incident}: {'released from' if release else 'on'} legal hold")


@app.command()
def serve(
    config: Path,
    store: Annotated[Path | None, typer.Option(help="SQLite file instead of the config's store.")] = None,
    port: Annotated[int | None, typer.Option(help="Port instead of the config's api.port.")] = None,
) -> None:
    """Serve the operator API and web interface on CONFIG's store, without the pipeline.

    Acknowledgements are written to the store, where a running deployment's escalation stops at its
    next tick. `flux-secu run` serves the same API itself when the config has an `api` section.
    """
    from flux_secu.logs import configure

    configure(json_lines=False)
    cfg = _load(config)
    if cfg.api is None:
        typer.echo(f"flux-secu: {config} has no api section (users, port): nothing to serve", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if port is not None:
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"port": port})})
    from flux_secu.alerts.ack import load_secret
    from flux_secu.api.actor import ApiServer
    from flux_secu.api.app import create_app
    from flux_secu.api.backend import StoreBackend
    from flux_secu.store import open_store

    db = open_store(_store_config(cfg, store))
    secret = load_secret(cfg.notifications.ack_secret, cfg.var_dir)
    assert cfg.api is not None
    server = ApiServer(create_app(cfg, db, StoreBackend(db), secret), cfg.api.host, cfg.api.port)
    # Printed before serving: a script (or a test) reads the port it got when asking for port 0.
    typer.echo(f"serving http://{server.host}:{server.port}/", err=True)
    server.thread.run()  # in the foreground: uvicorn handles Ctrl-C itself
    db.close()


user_app = typer.Typer(no_args_is_help=True, help="API users: make password hashes for the config.")
app.add_typer(user_app, name="user")


@user_app.command("hash")
def user_hash(
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the password from standard input.")] = False,
) -> None:
    """Print the argon2 hash of a password, for `api.users[].password_hash` (best via an env var)."""
    from flux_secu.api.auth import hash_password

    if stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 10:
        typer.echo("flux-secu: a password of at least 10 characters, please", err=True)
        raise typer.Exit(EXIT_CONFIG)
    typer.echo(hash_password(password))


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


# --- a running deployment ----------------------------------------------------------------------------

def _supervisor(address: str | None) -> Any:
    """Join the cluster and find the deployment's supervisor, or exit with status 1 saying why."""
    from flux_secu.actors.supervisor import NoDeployment, get_supervisor

    _join(address or "auto")
    try:
        return get_supervisor()
    except NoDeployment as exc:
        typer.echo(f"flux-secu: {exc}", err=True)
        raise typer.Exit(1) from None


def _call(method: Any, *args: Any) -> Any:
    """Call a supervisor method; a refused change exits with status 2 and the supervisor's one-line reason."""
    import ray

    from flux_secu.actors.supervisor import error_text

    try:
        return ray.get(method.remote(*args))
    except ray.exceptions.RayTaskError as exc:
        typer.echo(f"flux-secu: {error_text(exc)}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None


cameras_app = typer.Typer(no_args_is_help=True, help="Cameras of a running deployment: list, add, remove.")
app.add_typer(cameras_app, name="cameras")
CAMERA_COLUMNS = ("camera", "site", "state", "frames_read", "frames_done", "drops", "frames_lost",
                  "reconnects", "restarts", "faults", "source")


@cameras_app.command("list")
def cameras_list(
    address: AddressOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per camera.")] = False,
) -> None:
    """Every camera of the running deployment and its counters."""
    rows = _call(_supervisor(address).cameras)
    for row in rows:
        if not json_output:  # the active faults (video_loss is `link`): frozen, analysis_stalled...
            row = {**{k: row.get(k, "") for k in CAMERA_COLUMNS}, "faults": ",".join(row.get("faults", []))}
        _echo(row, json_output)


@cameras_app.command("add")
def cameras_add(
    site: str, camera_id: Annotated[str, typer.Argument(metavar="CAMERA")],
    source: Annotated[str, typer.Argument(help="rtsp:// or http:// URL, or a video file on the cluster.")],
    detect_fps: Annotated[float, typer.Option(help="Frames analysed per second.")] = 5.0,
    loop: Annotated[bool, typer.Option(help="Loop a video file.")] = True,
    address: AddressOption = None,
) -> None:
    """Start camera CAMERA of SITE reading SOURCE, with default zones, while the others keep running.

    A lasting change goes into the config file too (flux-secu reload applies the file).
    """
    from pydantic import ValidationError

    from flux_secu.config import CameraConfig, describe_validation_error

    try:
        camera = CameraConfig.model_validate(
            {"id": camera_id, "source": source, "detect_fps": detect_fps, "loop": loop},
            context={"base_dir": Path.cwd()},
        )
    except ValidationError as exc:
        typer.echo(f"flux-secu: camera: {describe_validation_error(exc)}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    added = _call(_supervisor(address).add_camera, site, camera)
    typer.echo(f"{added['camera']}: added to {added['site']}")


@cameras_app.command("remove")
def cameras_remove(
    camera_id: Annotated[str, typer.Argument(metavar="CAMERA")], address: AddressOption = None
) -> None:
    """Stop CAMERA (its frames in flight are analysed first) while the others keep running."""
    stats = _call(_supervisor(address).remove_camera, camera_id)
    done = "" if stats is None else f" after {stats['frames_done']} analysed frame(s)"
    typer.echo(f"{camera_id}: removed{done}")


pool_app = typer.Typer(no_args_is_help=True, help="Inference pool of a running deployment.")
app.add_typer(pool_app, name="pool")


@pool_app.command("scale")
def pool_scale(
    actors: Annotated[int, typer.Argument(min=1, help="Number of inference actors.")],
    address: AddressOption = None,
) -> None:
    """Grow or shrink the inference pool to ACTORS actors; frames keep flowing meanwhile."""
    size = _call(_supervisor(address).scale_pool, actors)
    typer.echo(f"pool: {size} inference actor(s)")


@pool_app.command("stats")
def pool_stats(address: AddressOption = None) -> None:
    """Queue depth, batches, actors of the inference pool (one JSON object)."""
    typer.echo(json.dumps(_call(_supervisor(address).pool_stats)))


@app.command()
def reload(config: Path, address: AddressOption = None) -> None:
    """Apply CONFIG to the running deployment: cameras added, removed, or restarted when their settings
    changed, pool resized; the other cameras keep running. Any other change is refused (status 2) and
    nothing changes: restart the deployment for it."""
    cfg = _load(config)
    summary = _call(_supervisor(address).reload, cfg)
    for key in ("added", "removed", "restarted"):
        typer.echo(f"{key}: {', '.join(summary[key]) or '-'}")
    typer.echo(f"unchanged: {len(summary['unchanged'])} camera(s)")
    if summary["pool_actors"] is not None:
        typer.echo(f"pool: {summary['pool_actors']} inference actor(s)")


@app.command()
def stop(address: AddressOption = None) -> None:
    """End the running deployment: cameras stop, frames and alerts in flight finish, every actor ends."""
    import ray

    supervisor = _supervisor(address)
    stats = _call(supervisor.stop)
    ray.kill(supervisor)
    typer.echo(f"stopped {len(stats)} camera(s)")


config_app = typer.Typer(no_args_is_help=True, help="Config files: a starting file to edit.")
app.add_typer(config_app, name="config")


@config_app.command("skeleton")
def config_skeleton(
    sites: Annotated[int, typer.Option("--sites", min=1, max=999, help="Number of sites.")] = 1,
    cameras_per_site: Annotated[int, typer.Option(
        "--cameras-per-site", min=1, max=999, help="Cameras of each site.")] = 1,
    model: Annotated[str, typer.Option(
        "--model", help="The model file, as written in the config (relative to where it is saved).")
    ] = "models/yolox_nano.onnx",
) -> None:
    """Print a starting config (sites, RTSP cameras, hours, holidays, on-call) that `check` accepts once
    the model exists and the variables it lists are exported; save it, edit what it marks CHANGE."""
    from flux_secu.skeleton import skeleton

    typer.echo(skeleton(sites, cameras_per_site, model=model, year=datetime.now().year), nl=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
