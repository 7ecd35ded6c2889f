"""Configuration: one YAML file, validated by pydantic, with errors that name the field.

Rules the loader enforces:
- unknown fields are errors (a typo must not silently disable a rule);
- ``${ENV_VAR}`` anywhere in a string is replaced from the environment before validation, so secrets
  (camera passwords, notification tokens) never sit in the file; a missing variable is an error naming
  the field that referenced it;
- relative paths are relative to the directory of the config file, not to the current directory;
- files that must exist (the model, file camera sources) are checked at load time.
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flux_secu.detect.classes import load_labels, unknown_group_labels

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "person": ("person",),
    "vehicle": ("bicycle", "car", "motorcycle", "bus", "truck"),
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DEFAULT_WARNING_FR = (
    "Attention. Vous êtes sur un site fermé et placé sous vidéosurveillance. "
    "Quittez les lieux immédiatement. Les services de sécurité sont prévenus."
)


class ConfigError(Exception):
    """A configuration that cannot be used; ``str()`` is one line naming the field and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return Path(os.path.normpath(value))


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    path = _resolve(value, info)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


def is_url(source: str) -> bool:
    return bool(_URL.match(source))


class TimeRange(_Strict):
    """An opening interval within one day, written ``"08:30-12:00"`` in the YAML file."""

    start: time
    end: time

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", value)
            if not match:
                raise ValueError(f"expected 'HH:MM-HH:MM', got {value!r}")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h2 == 24 and m2 == 0:
                h2, m2 = 23, 59
            try:
                return {"start": time(h1, m1), "end": time(h2, m2)}
            except ValueError as exc:
                raise ValueError(f"invalid time in {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end <= self.start:
            raise ValueError("end must be after start (split a range that crosses midnight in two)")
        return self


class OpeningHours(_Strict):
    """Weekly opening hours; a day left out is closed all day."""

    mon: list[TimeRange] = []
    tue: list[TimeRange] = []
    wed: list[TimeRange] = []
    thu: list[TimeRange] = []
    fri: list[TimeRange] = []
    sat: list[TimeRange] = []
    sun: list[TimeRange] = []

    def for_weekday(self, weekday: int) -> list[TimeRange]:
        """Ranges for ``date.weekday()`` (0 = Monday)."""
        ranges: list[TimeRange] = getattr(self, WEEKDAYS[weekday])
        return ranges


def _month_day(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{2})-(\d{2})", value)
    try:
        if match is None:
            raise ValueError
        date(2000, int(match.group(1)), int(match.group(2)))  # a leap year: 02-29 is a day of the year
    except ValueError:
        raise ValueError(f"expected a day of the year 'MM-DD', got {value!r}") from None
    return int(match.group(1)), int(match.group(2))


class SeasonalHoursConfig(_Strict):
    """Opening hours that replace the site's ``opening_hours`` every year from ``from_`` to ``until``
    (both included, ``MM-DD``; a season may span the new year: ``11-01`` to ``02-28``)."""

    name: str = ""
    from_: str = Field(alias="from")
    until: str
    opening_hours: OpeningHours

    @field_validator("from_", "until")
    @classmethod
    def _day_of_year(cls, value: str) -> str:
        _month_day(value)
        return value

    def contains(self, day: date) -> bool:
        start, end, key = _month_day(self.from_), _month_day(self.until), (day.month, day.day)
        return start <= key <= end if start <= end else key >= start or key <= end


class ModelConfig(_Strict):
    path: Path
    kind: Literal["yolox", "nanodet", "yolov8"] = "yolox"
    input_size: int | None = Field(None, ge=32, le=2048)
    """Checked against the model's input; read from the model when left out."""
    labels: Path | None = None
    """One class name per line, in output order; COCO-80 when left out."""
    score_threshold: float | None = Field(None, gt=0, lt=1)
    """Per-frame score threshold; the model family's documented default when left out."""
    nms_iou: float | None = Field(None, gt=0, le=1)
    class_groups: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_GROUPS.items()}
    )
    """Groups of labels the rules reason about; NMS is class-agnostic inside a group."""
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        default_factory=lambda: ["tensorrt", "cuda", "cpu"], min_length=1
    )
    intra_op_threads: int = Field(1, ge=1, le=64)
    fit_canvas: bool = True
    """YOLOX: letterbox to a canvas trimmed to the frame (a 16:9 camera: 416x256 instead of 416x416, a
    third less detector work) when the graph is proven to take any size (``detect/fitting.py``); else,
    and for the other families, a square canvas of the model's size."""

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path, info: ValidationInfo) -> Path:
        return _existing_file(value, info)

    @field_validator("labels")
    @classmethod
    def _labels_exist(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _existing_file(value, info)

    @model_validator(mode="after")
    def _groups_are_labels(self) -> ModelConfig:
        unknown = unknown_group_labels(load_labels(self.labels), self.class_groups)
        if unknown:
            raise ValueError(f"class_groups name labels the model does not have: {', '.join(unknown)}")
        return self


class AutoscaleConfig(_Strict):
    """Bounds and thresholds of the inference pool's autoscaling (see flux_secu.autoscale)."""

    min_actors: int = Field(1, ge=1, le=256)
    max_actors: int = Field(4, ge=1, le=256)
    interval_s: float = Field(5.0, gt=0, le=600)
    """How often queue depth and batch fill are looked at."""
    high_fill: float = Field(0.75, gt=0, le=1)
    """Mean batch size / max_batch at or above which the pool is saturated."""
    low_fill: float = Field(0.25, ge=0, lt=1)
    up_after: int = Field(2, ge=1, le=100)
    """Consecutive saturated looks before an actor is added."""
    down_after: int = Field(6, ge=1, le=1000)
    """Consecutive idle looks before an actor is removed."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleConfig:
        if self.min_actors > self.max_actors:
            raise ValueError("min_actors must not exceed max_actors")
        if self.low_fill >= self.high_fill:
            raise ValueError("low_fill must be below high_fill")
        return self


class CameraHostsConfig(_Strict):
    """How cameras are packed into processes (``actors/camera_host.py``)."""

    cameras_per_host: int = Field(16, ge=1, le=64)
    """Cameras read by one process, each on its own thread. A process costs ~1 % of a core and ~76 MiB
    idle, so fewer is cheaper; a crash of one takes its cameras down until Ray restarts it (seconds)."""


class InferenceConfig(_Strict):
    actors: int = Field(1, ge=1, le=256)
    cpus_per_actor: float = Field(1.0, ge=0, le=64)
    gpus_per_actor: float = Field(0.0, ge=0, le=8)
    """Fractional values share a GPU between several inference actors."""
    max_batch: int = Field(4, ge=1, le=256)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    autoscale: AutoscaleConfig | None = None
    """Resize the pool from queue depth and batch fill within bounds; fixed at ``actors`` when unset."""


class StoreConfig(_Strict):
    """Where incidents and their timelines live: a SQLite file (one machine) or Redis (a cluster)."""

    kind: Literal["sqlite", "redis"] = "sqlite"
    path: Path = Path("var/flux-secu.db")
    """SQLite file (kind sqlite)."""
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Redis server (kind redis): ``redis://[:${REDIS_PASSWORD}@]host:port/db``, ``rediss://`` for TLS,
    ``unix:///path.sock``; put the password in the environment, never in the file. A secret: never in a
    repr, a dump or a log (``redact_url`` shows where it points)."""
    prefix: str = Field("flux-secu", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    """Every Redis key starts with ``{prefix}:``: deployments sharing one Redis use different prefixes."""
    audit_retention_days: float = Field(365.0, ge=1, le=3650)
    """Audit records older than this are removed by the (audited) purge: ``POST /api/audit/purge``."""

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url.split("://", 1)[0].lower() not in ("redis", "rediss", "unix") or "://" not in url:
            # The value may hold a password: the message names the schemes, never the URL.
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class RulesConfig(_Strict):
    min_score: float = Field(0.25, gt=0, lt=1)
    """Per-frame score below which a detection is not considered at all."""
    confirm_hits: int = Field(3, ge=1, le=100)
    confirm_window: int = Field(5, ge=1, le=100)
    clear_after_s: float = Field(3.0, gt=0, le=3600)
    recheck_after_s: float = Field(10.0, gt=0, le=600)
    """After the warning, look again this long later: still there -> escalate, gone -> deterred."""
    merge_window_s: float = Field(30.0, ge=0, le=3600)
    """A presence confirmed on another camera of the site within this long of the last sighting
    joins that incident instead of opening a new one."""
    recheck_window_s: float = Field(2.0, gt=0, le=60)
    """At the recheck, a person seen within this long counts as still there."""

    @model_validator(mode="after")
    def _hits_fit_window(self) -> RulesConfig:
        if self.confirm_hits > self.confirm_window:
            raise ValueError("confirm_hits must not exceed confirm_window")
        return self


NormalisedPoint = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]


class MotionConfig(_Strict):
    enabled: bool = True
    width: int = Field(160, ge=32, le=1920)
    pixel_threshold: int = Field(18, ge=1, le=255)
    min_area: float = Field(0.0015, gt=0, lt=1)
    """Share of the (unmasked) image that must change for a frame to count as motion."""
    recalibrate_area: float = Field(0.6, gt=0, le=1)
    """A change over this share of the image at once (IR switch, lightning, headlights) is a new scene:
    the gate adopts it as its background instead of firing."""
    hold_s: float = Field(2.0, ge=0, le=60)
    heartbeat_s: float = Field(2.0, gt=0, le=600)
    """A still scene is still analysed this often, so a motionless intruder is not forgotten."""
    quiet_after_s: float = Field(10.0, ge=0, le=3600)
    """After this long with no motion and nothing suspect, decode key frames only (``video/vigilance.py``);
    0: always decode every frame. An entry is then noticed up to one GOP later."""
    quiet_heartbeat_s: float = Field(10.0, gt=0, le=600)
    """How often a quiet camera's key frame goes to the detector anyway."""
    quiet_max_gop_s: float = Field(2.0, gt=0, le=30)
    """A camera whose key frames are further apart than this never goes quiet."""
    ignore: list[list[NormalisedPoint]] = []
    """Polygons (normalised 0-1 coordinates) whose changes never count as motion: road, trees, flags."""

    @field_validator("ignore")
    @classmethod
    def _polygons(cls, value: list[list[NormalisedPoint]]) -> list[list[NormalisedPoint]]:
        for i, polygon in enumerate(value):
            if len(polygon) < 3:
                raise ValueError(f"polygon {i} needs at least 3 points")
        return value


Action = Literal["intrusion", "event", "ignore"]


class ZoneConfig(_Strict):
    """A polygon of the image (normalised 0-1 coordinates) and what each class group means there."""

    id: Identifier
    polygon: list[NormalisedPoint] = Field(min_length=3)
    closed: dict[str, Action] = Field(default_factory=lambda: {"person": "intrusion", "vehicle": "event"})
    """Policy by class group while the site is closed; a group left out is ignored."""
    open: dict[str, Action] = {}
    """Policy by class group during opening hours (by default everything is normal)."""
    min_dwell_s: float = Field(0.0, ge=0, le=3600)
    """An intruder must have been tracked this long in the zone before an incident opens."""
    min_height: float = Field(0.0, ge=0, lt=1)
    """Boxes shorter than this fraction of the image height are ignored here (far away, insects)."""


class HealthConfig(_Strict):
    """Camera health checks (``video/health.py``): each raises a ``camera_fault`` incident, never an
    intrusion, once its condition has held for ``alarm_after_s``, and clears it after ``clear_after_s``."""

    enabled: bool = True
    interval_s: float = Field(1.0, gt=0, le=60)
    """How often a sampled frame is checked (~0.5 ms on a 2-core VM without the view's landmarks)."""
    view_interval_s: float = Field(5.0, gt=0, le=600)
    """How often the view is compared with the reference's landmarks (ORB: ~2.5 ms a check on a 2-core
    VM, five times the other checks together). A moved camera stays moved: every few seconds is enough."""
    alarm_after_s: float = Field(10.0, ge=0, le=3600)
    tamper_after_s: float = Field(2.0, ge=0, le=60)
    """While an intrusion of its site is being verified, a fault is raised once its condition has held
    this long instead (and the view is compared with the reference at every check): a covered or turned
    camera then escalates the intrusion within seconds."""
    clear_after_s: float = Field(5.0, ge=0, le=3600)
    frozen_diff: float = Field(0.3, ge=0, le=255)
    """Frozen: mean absolute difference (grey levels) between checks below this. A live sensor's noise
    alone gives ~1; a stuck encoder repeating its last image gives ~0."""
    black_mean: float = Field(8.0, ge=0, le=255)
    """Black: mean grey level below this (the synthetic night clip averages ~32)."""
    blank_std: float = Field(4.0, ge=0, le=255)
    """Blank: standard deviation of grey levels below this (a uniform grey or blue "no signal" image)."""
    covered_ratio: float = Field(0.3, gt=0, lt=1)
    """Covered or defocused: sharpness (variance of the Laplacian) below this share of the reference's."""
    moved_shift: float = Field(0.05, gt=0, lt=1)
    """Moved: the view shifted from the reference by more than this share of the image width."""
    reference_after_s: float = Field(2.0, ge=0, le=3600)
    """The reference view (sharpness, landmarks) is the first healthy check this long after start."""


Transport = Literal["tcp", "udp"]
_LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https")


class CameraConfig(_Strict):
    id: Identifier
    name: str = ""
    source: str
    """A file, ``rtsp://host[:port]/path`` or ``http(s)://host[:port]/path`` (MJPEG). Put credentials in
    ``username``/``password`` (from ``${ENV}``), or ``${ENV}`` inside the URL; logs always redact them."""
    username: str | None = None
    password: SecretStr | None = None
    """Use ``${ENV_VAR}``; hidden from repr and logs, inserted (URL-encoded) into the URL on open."""
    transport: Transport = "tcp"
    """RTSP only: RTP interleaved in the RTSP TCP connection (firewall- and loss-proof) or RTP over UDP."""
    detect_fps: float = Field(5.0, gt=0, le=60)
    follow_fps: float = Field(1.0, gt=0, le=60)
    """Once the rules have confirmed a presence (the intrusion is raised, the warning on its way), frames
    go to the detector at this rate instead of ``detect_fps``: telling whether the person is still there
    (the recheck, the end of the presence) needs far fewer looks than noticing them. At most
    ``detect_fps``; set it equal to keep analysing every sampled frame."""
    loop: bool = True
    video_loss_after_s: float = Field(5.0, gt=0, le=3600)
    """No frame for this long: a ``video_loss`` camera fault (``video_restored`` when frames come back)."""
    motion: MotionConfig = MotionConfig()
    health: HealthConfig = HealthConfig()
    zones: list[ZoneConfig] = []
    """Checked in order; with none, the whole image is one zone with the default policies."""
    ignore: list[list[NormalisedPoint]] = []
    """Masks whose detections are dropped (public road, neighbours' yards, trees)."""
    privacy_masks: list[Annotated[list[NormalisedPoint], Field(min_length=3)]] = []
    """Regions made unrecognisable in every stored image and clip and in the live view (CNIL: no
    public road, no neighbours). They do not stop detection there: add the same polygon to ``ignore``."""

    @field_validator("source")
    @classmethod
    def _source(cls, value: str, info: ValidationInfo) -> str:
        if is_url(value):
            scheme = value.split("://", 1)[0].lower()
            if scheme not in _LIVE_SCHEMES:
                # The URL may hold a password: name the scheme only.
                raise ValueError(f"unsupported scheme {scheme!r} (use rtsp, rtsps, http, https or a file)")
            return value
        return str(_existing_file(Path(value), info))

    @model_validator(mode="after")
    def _live_fields(self) -> CameraConfig:
        live = is_url(self.source)
        for name in ("username", "password"):
            if name in self.model_fields_set and not live:
                raise ValueError(f"field {name!r} needs a URL source (rtsp:// or http://)")
        if "transport" in self.model_fields_set and not self.source.lower().startswith(("rtsp://", "rtsps://")):
            raise ValueError("field 'transport' applies to rtsp:// sources only")
        if self.password is not None and not self.username:
            raise ValueError("field 'password' needs field 'username'")
        if self.username and "@" in self.source.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("field 'username': the source URL already holds credentials")
        return self

    def url(self) -> str:
        """The source with the credentials inserted: for opening only, never for logging."""
        if not self.username:
            return self.source
        scheme, rest = self.source.split("://", 1)
        secret = "" if self.password is None else ":" + quote(self.password.get_secret_value(), safe="")
        return f"{scheme}://{quote(self.username, safe='')}{secret}@{rest}"


class SpeakerConfig(_Strict):
    """One loudspeaker of a site and the driver that reaches it (see flux_secu.alerts.speakers).

    file: nothing else (records plays under var_dir); command: ``command``; axis: ``url`` (+ ``username``,
    ``password``); sip: ``sip_uri`` (+ ``sip_local_port``, ``username``, ``password`` if the horn asks).
    """

    id: Identifier
    driver: Literal["file", "command", "axis", "sip"] = "file"
    message: str = DEFAULT_WARNING_FR
    zone_messages: dict[str, str] = {}
    """A different message where the intruder was seen, by zone id (e.g. the platform, the office)."""
    min_interval_s: float = Field(20.0, ge=0, le=3600)
    """At most one warning per zone per this interval, whatever the number of incidents."""
    voice: str = "fr"
    audio_file: Path | None = None
    """A recorded WAV played instead of the synthesised ``message``."""
    repeat: int = Field(1, ge=1, le=10)
    volume: float = Field(1.0, ge=0.0, le=2.0)
    """Gain applied to the samples (1.0 = as recorded; above 1 saturates)."""
    timeout_s: float = Field(10.0, gt=0, le=300)
    """How long the device may take beyond the audio's own duration."""
    command: list[str] | None = None
    """command: argv of a local player; ``{wav}`` is replaced by the WAV path, e.g. [aplay, -q, "{wav}"]."""
    url: str | None = None
    """axis: base URL of the speaker, e.g. http://10.0.0.21 (credentials go in username/password)."""
    username: str | None = None
    password: SecretStr | None = None
    """axis/sip: use ${ENV_VAR}, never the literal password."""
    sip_uri: str | None = None
    """sip: the horn, e.g. sip:horn@10.0.0.22 or sip:10.0.0.22:5060 (UDP)."""
    sip_local_port: int = Field(0, ge=0, le=65535)
    """sip: local UDP port for signalling; 0 picks a free one."""

    @field_validator("audio_file")
    @classmethod
    def _audio_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        import wave

        path = _existing_file(value, info)
        try:
            with wave.open(str(path), "rb"):
                pass
        except (OSError, EOFError, wave.Error) as exc:
            raise ValueError(f"not a readable WAV file: {path} ({exc})") from None
        return path

    @model_validator(mode="after")
    def _driver_fields(self) -> SpeakerConfig:
        needs = {"file": (), "command": ("command",), "axis": ("url",), "sip": ("sip_uri",)}
        for name in needs[self.driver]:
            if not getattr(self, name):
                raise ValueError(f"driver {self.driver!r} needs field {name!r}")
        owners = {"command": ("command",), "url": ("axis",), "sip_uri": ("sip",), "sip_local_port": ("sip",),
                  "username": ("axis", "sip"), "password": ("axis", "sip")}
        for name, drivers in owners.items():
            if name in self.model_fields_set and self.driver not in drivers:
                raise ValueError(f"field {name!r} is not used by driver {self.driver!r} "
                                 f"(only by {', '.join(drivers)})")
        if self.password is not None and not self.username:
            raise ValueError("field 'password' needs field 'username'")
        if self.command is not None and not any("{wav}" in part for part in self.command):
            raise ValueError("field 'command' must contain '{wav}' where the WAV path goes")
        if self.url is not None and not re.match(r"^https?://[^/?#@]+([/?#]|$)", self.url):
            raise ValueError("field 'url' must be http://host[:port] or https://host[:port], "
                             "without credentials (use username/password)")
        if self.sip_uri is not None and not re.match(r"^sip:([^@;:]+@)?[^@:;]+(:\d{1,5})?(;.*)?$",
                                                     self.sip_uri):
            raise ValueError("field 'sip_uri' must look like sip:[user@]host[:port]")
        return self


class ContactConfig(_Strict):
    name: str
    channels: list[SecretStr] = Field(min_length=1)
    """apprise URLs: they hold tokens, so they are secrets (never in a repr, a dump, a log)."""


class RotaEntryConfig(_Strict):
    starts: date
    """First day (site local time) this contact is on call; the entry lasts until the next one starts."""
    contact: str


class EscalationConfig(_Strict):
    contacts: list[ContactConfig] = Field(min_length=1)
    """The chain, in calling order (the on-call contact of the rota is moved to the front)."""
    rota: list[RotaEntryConfig] = []
    ack_timeout_s: float = Field(300.0, gt=0)
    """How long a contact has to acknowledge before the next one is notified."""
    rounds: int = Field(2, ge=1, le=20)
    """How many times the whole chain is gone through (re-notification) while nobody acknowledges."""
    police: ContactConfig | None = None
    """Notified at once for a verified intrusion (still there after the warning) and for a panic press."""
    manager: ContactConfig | None = None
    """Site manager: panic presses and the morning report."""
    police_on_verified: bool = True
    report_at: time | None = time(7, 30)
    """Local time from which the report of the night is sent to the manager (until noon); null: never."""

    @model_validator(mode="after")
    def _rota_names_contacts(self) -> EscalationConfig:
        names = {c.name for c in self.contacts}
        for entry in self.rota:
            if entry.contact not in names:
                raise ValueError(f"rota names {entry.contact!r}, which is not one of the contacts")
        return self


ACK_SECRET_MIN_LENGTH = 32
MAX_ACK_LINK_TTL_S = 24 * 3600.0


class NotificationsConfig(_Strict):
    dry_run: bool = False
    """Record notifications under var_dir instead of sending them (demo, rehearsal)."""
    public_url: str = "http://127.0.0.1:8088"
    """Base of the acknowledgement and evidence links put in notifications."""
    ack_secret: SecretStr | None = Field(None, min_length=ACK_SECRET_MIN_LENGTH)
    """HMAC secret of acknowledgement links, sessions and exports (use ${ENV}, at least 32 characters,
    e.g. ``openssl rand -hex 32``); generated and kept in var_dir (mode 0600) when unset."""
    ack_link_ttl_s: float = Field(12 * 3600, gt=0, le=MAX_ACK_LINK_TTL_S)
    """How long an acknowledgement link works (at most 24 h; it also stops once used or the incident
    closed)."""


class EvidenceConfig(_Strict):
    """Snapshots and clips kept for each intrusion (see flux_secu.evidence)."""

    enabled: bool = True
    dir: Path | None = None
    """Where evidence is written (default: ``var_dir/evidence``). On a cluster, a shared folder."""
    before_s: float = Field(5.0, ge=0, le=30)
    after_s: float = Field(10.0, ge=0, le=60)
    width: int = Field(640, ge=160, le=1920)
    """Stored images are downscaled to at most this width."""
    jpeg_quality: int = Field(80, ge=30, le=100)
    retention_days: float = Field(30.0, gt=0, le=30)
    """Evidence older than this is deleted unless its incident is on legal hold (CNIL: 30 days at most)."""

    @field_validator("dir")
    @classmethod
    def _dir_relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)


class PanicDeviceConfig(_Strict):
    """One staff panic button ("Smart Alert"), worn by one agent; it signs its presses with ``secret``."""

    id: Identifier
    agent: str = Field(min_length=1)
    """The agent carrying the button: kept in the proof of every press."""
    secret: SecretStr
    """HMAC-SHA256 key shared with the device (use ``${ENV_VAR}``); hidden from repr and logs."""

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        # A short key can be brute-forced offline from one captured press.
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters long")
        return value


class PanicSiteConfig(_Strict):
    """The panic buttons of one site; presses arrive on topic ``{panic.mqtt.topic_prefix}/{site id}``."""

    devices: list[PanicDeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_devices(self) -> PanicSiteConfig:
        ids = [d.id for d in self.devices]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate panic device id {duplicates[0]!r}")
        return self


class PanicMqttConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("flux-secu/panic", pattern=r"^[^#+]+[^#+/]$")
    """Presses of site S are published to ``{topic_prefix}/S`` (no MQTT wildcards in the prefix)."""
    client_id: str = "flux-secu-panic-ingress"
    """Fixed, with a persistent session: presses sent while the ingress restarts are delivered after."""
    username: str | None = None
    password: SecretStr | None = None


class PanicHttpConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    """Loopback by default: expose it through the TLS reverse proxy, not directly."""
    port: int = Field(8088, ge=0, le=65535)
    """0 picks a free port (tests)."""


class PanicConfig(_Strict):
    """Global settings of the panic-button ingress; the devices are listed per site (``sites[].panic``)."""

    max_skew_s: float = Field(120.0, gt=0, le=3600)
    """A press is refused when its timestamp is further than this from the server's clock."""
    mqtt: PanicMqttConfig = PanicMqttConfig()
    http: PanicHttpConfig = PanicHttpConfig()


class ClosureConfig(_Strict):
    """An exceptional closure; times without an offset are in the site's timezone."""

    start: datetime
    end: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> ClosureConfig:
        if (self.start.tzinfo is None) != (self.end.tzinfo is None):
            raise ValueError("give an offset on both start and end, or on neither")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class SiteConfig(_Strict):
    id: Identifier
    name: str
    timezone: str | None = None
    opening_hours: OpeningHours = OpeningHours()
    seasonal_hours: list[SeasonalHoursConfig] = []
    """Summer (or winter) hours: on a day one of these contains (the first that does), its hours apply
    instead of ``opening_hours``."""
    holidays: list[date] = []
    closures: list[ClosureConfig] = []
    cameras: list[CameraConfig] = Field(min_length=1)
    speakers: list[SpeakerConfig] = []
    escalation: EscalationConfig
    panic: PanicSiteConfig | None = None
    """The site's staff panic buttons; none when left out."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}") from None
    return value


# --- operator API and web interface (api/) ------------------------------------------------------------

ROLES = ("viewer", "operator", "admin")
"""viewer: sees cameras, incidents and evidence; operator: also acknowledges, arms/disarms, exports;
admin: also reads the audit log and sets legal holds."""


class ApiUserConfig(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\s|<>&\"']+$")
    role: Literal["viewer", "operator", "admin"]
    password_hash: SecretStr
    """An argon2 hash (``flux-secu user hash``), best from the environment: ``${FLUX_HASH_ZOE}``."""

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("$argon2"):
            raise ValueError("must be an argon2 hash ($argon2id$...), made with `flux-secu user hash`")
        return value


class ApiConfig(_Strict):
    """The HTTP API and web interface: the front door at ``notifications.public_url``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Loopback by default: expose it through the TLS reverse proxy, not directly."""
    port: int = Field(8088, ge=0, le=65535)
    """0 picks a free port (tests)."""
    users: list[ApiUserConfig] = []
    session_ttl_s: float = Field(12 * 3600, gt=0)
    login_max_failures: int = Field(5, ge=1)
    """Failed logins allowed per (client address, user name) within ``login_window_s``, before each
    further try from there waits twice as long as the one before (at most ``login_window_s``). Another
    address never locks a user out; an address is also capped over all names (20x this)."""
    login_window_s: float = Field(300.0, gt=0, le=86400)
    login_concurrency: int = Field(2, ge=1, le=64)
    """Password checks run at once (argon2 takes tens of MiB each); more logins wait (up to 10 s), then
    get 429."""
    secure_cookies: bool | None = None
    """Session cookie ``Secure`` (HTTPS only). Default: on unless ``host`` is a loopback address
    (local development); behind the TLS reverse proxy keep it on."""
    trusted_proxies: list[str] = []
    """Addresses or networks of the reverse proxies whose ``X-Forwarded-For`` is believed (the
    client address of throttling and audit). Empty: the header is ignored, the peer address counts."""
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 2**20)
    """Largest request body any route accepts (413 beyond)."""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @property
    def cookies_secure(self) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        import ipaddress

        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"

    @model_validator(mode="after")
    def _unique_users(self) -> ApiConfig:
        names = [u.name for u in self.users]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate user {duplicates[0]!r}")
        return self


# --- end of operator API ------------------------------------------------------------------------------


class Config(_Strict):
    timezone: str = "Europe/Paris"
    var_dir: Path = Path("var")
    model: ModelConfig
    inference: InferenceConfig = InferenceConfig()
    camera_hosts: CameraHostsConfig = CameraHostsConfig()
    store: StoreConfig = StoreConfig()
    rules: RulesConfig = RulesConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    panic: PanicConfig = PanicConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    api: ApiConfig | None = None
    """The operator API and web interface; when set it is the HTTP front door (panic webhook and
    acknowledgement links included) and the panic ingress keeps MQTT only."""
    sites: list[SiteConfig] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("var_dir")
    @classmethod
    def _var_relative(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @model_validator(mode="after")
    def _zone_groups_exist(self) -> Config:
        groups = set(self.model.class_groups)
        for si, site in enumerate(self.sites):
            for ci, camera in enumerate(site.cameras):
                for zi, zone in enumerate(camera.zones):
                    for period in ("closed", "open"):
                        unknown = set(getattr(zone, period)) - groups
                        if unknown:
                            raise ValueError(
                                f"sites[{si}].cameras[{ci}].zones[{zi}].{period}: unknown class group(s) "
                                f"{', '.join(sorted(unknown))} "
                                f"(model.class_groups has {', '.join(sorted(groups))})"
                            )
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        for kind, ids in (
            ("site", [s.id for s in self.sites]),
            ("camera", [c.id for s in self.sites for c in s.cameras]),
        ):
            seen: set[str] = set()
            for ident in ids:
                if ident in seen:
                    raise ValueError(f"duplicate {kind} id {ident!r}")
                seen.add(ident)
        return self

    @property
    def evidence_dir(self) -> Path:
        return self.evidence.dir if self.evidence.dir is not None else self.var_dir / "evidence"

    def site_timezone(self, site: SiteConfig) -> ZoneInfo:
        return ZoneInfo(site.timezone or self.timezone)

    def camera(self, camera_id: str) -> tuple[SiteConfig, CameraConfig]:
        for site in self.sites:
            for camera in site.cameras:
                if camera.id == camera_id:
                    return site, camera
        known = ", ".join(c.id for s in self.sites for c in s.cameras)
        raise KeyError(f"unknown camera {camera_id!r} (known: {known})")


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _expand_env(node: Any, loc: tuple[int | str, ...]) -> Any:
    if isinstance(node, dict):
        return {k: _expand_env(v, (*loc, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, (*loc, i)) for i, v in enumerate(node)]
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{_format_loc(loc)}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(substitute, node)
    return node


def parse_config(data: Any, base_dir: Path) -> Config:
    """Validate an already-parsed YAML document; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): expected a mapping of settings")
    expanded = _expand_env(data, ())
    try:
        return Config.model_validate(expanded, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line, ``field.path: reason; ...``: the form of every :class:`ConfigError` message."""
    parts = []
    for err in exc.errors():
        reason = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        parts.append(f"{_format_loc(tuple(err['loc']))}: {reason}")
    return "; ".join(parts)


def read_yaml(path: Path) -> Any:
    """The parsed document of a YAML file; raises :class:`ConfigError` naming the file or the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"(file) {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"(yaml) {where}: {problem}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises :class:`ConfigError` with a one-line message."""
    path = Path(path)
    return parse_config(read_yaml(path), path.resolve().parent)
