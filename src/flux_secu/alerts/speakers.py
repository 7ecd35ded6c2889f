"""Speaker drivers: how a warning reaches a site's loudspeakers.

Every driver has one method, ``play(incident_id, wav, repeat) -> Play``: it plays the WAV ``repeat``
times at the speaker's volume and returns once the device took the command (``command_ts`` is when it
was issued). Any failure raises :class:`SpeakerError` with a one-line reason free of secrets (URLs are
redacted, passwords never appear): the caller reports and escalates it, a warning is never lost silently.

Drivers (``driver:`` in a speaker's config):

- ``file``: records each play as a WAV file plus a line of ``plays.jsonl`` (demos and tests);
- ``command``: runs a local player (``aplay``, ``ffplay``, ``paplay``...) once per repeat, ``{wav}`` in the
  argv replaced by the path of the WAV (a gained copy when ``volume`` is not 1);
- ``axis``: Axis network speaker over VAPIX, ``POST /axis-cgi/audio/transmit.cgi`` with the message as
  ``audio/basic`` (G.711 µ-law, 8 kHz mono); Digest or Basic authentication as the device asks;
- ``sip``: calls an auto-answer SIP horn and plays the message over RTP (see :mod:`flux_secu.alerts.sip`).

Timeouts (``timeout_s``) are counted beyond the audio's own duration: a 9 s message on a player that
blocks while it plays is not cut by a 5 s timeout.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from flux_secu.alerts import audio, digest
from flux_secu.alerts.sip import SipError, call_and_play, parse_uri
from flux_secu.redact import redact_url

if TYPE_CHECKING:
    from flux_secu.config import SpeakerConfig

AXIS_TRANSMIT_PATH = "/axis-cgi/audio/transmit.cgi"


class SpeakerError(Exception):
    """A warning that could not be played; ``str()`` is one line, without secrets."""


@dataclass(frozen=True, slots=True)
class Play:
    speaker: str
    incident_id: str
    wav: Path
    repeat: int
    command_ts: float


class SpeakerDriver(Protocol):
    def play(self, incident_id: str, wav: Path, repeat: int) -> Play: ...


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _UlawCache:
    """µ-law renderings of a WAV, computed once per (file version, repeat, gain)."""

    def __init__(self, gain: float) -> None:
        self.gain = gain
        self._cache: dict[tuple[str, int, int, int], bytes] = {}

    def get(self, wav: Path, repeat: int) -> bytes:
        try:
            stat = wav.stat()
        except OSError as exc:
            raise SpeakerError(f"warning audio missing: {wav.name} ({exc.strerror or exc})") from None
        key = (str(wav), stat.st_mtime_ns, stat.st_size, repeat)
        if key not in self._cache:
            try:
                self._cache[key] = audio.telephone_ulaw(wav, repeat=repeat, gain=self.gain)
            except audio.AudioError as exc:
                raise SpeakerError(str(exc)) from None
            if len(self._cache) > 16:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]


class FileSpeakerDriver:
    def __init__(self, speaker_id: str, out_dir: Path) -> None:
        self.speaker_id = speaker_id
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)

    def play(self, incident_id: str, wav: Path, repeat: int) -> Play:
        command_ts = time.time()
        target = self.out_dir / f"{incident_id}.wav"
        try:
            shutil.copyfile(wav, target)
            play = Play(self.speaker_id, incident_id, target, repeat, command_ts)
            with (self.out_dir / "plays.jsonl").open("a", encoding="utf-8") as log:
                log.write(json.dumps({"incident": incident_id, "wav": str(target), "repeat": repeat,
                                      "command_ts": command_ts}) + "\n")
        except OSError as exc:
            raise SpeakerError(f"speaker {self.speaker_id} (file): {exc.strerror or exc}: "
                               f"{exc.filename or target}") from None
        return play


class CommandSpeakerDriver:
    """Plays through a local command, run once per repeat; a non-zero exit is a failure."""

    def __init__(self, speaker_id: str, argv: list[str], *, volume: float = 1.0, timeout_s: float = 10.0,
                 work_dir: Path | None = None) -> None:
        if not argv:
            raise ValueError("command must not be empty")
        self.speaker_id = speaker_id
        self.argv = list(argv)
        self.volume = volume
        self.timeout_s = timeout_s
        self.work_dir = work_dir

    def _fail(self, reason: str) -> SpeakerError:
        return SpeakerError(f"speaker {self.speaker_id} (command {Path(self.argv[0]).name}): {reason}")

    def _with_volume(self, wav: Path) -> tuple[Path, float]:
        """The WAV to play (a gained copy, cached, when volume is not 1) and its duration."""
        try:
            samples, rate = audio.read_wav(wav)
        except audio.AudioError as exc:
            raise self._fail(str(exc)) from None
        duration = len(samples) / rate
        if abs(self.volume - 1.0) < 1e-6:
            return wav, duration
        stat = wav.stat()
        digest_ = hashlib.sha256(f"{wav}\0{stat.st_mtime_ns}\0{stat.st_size}\0{self.volume}".encode())
        cache_dir = self.work_dir or wav.parent
        target = cache_dir / f"{wav.stem}-vol{self.volume:g}-{digest_.hexdigest()[:10]}.wav"
        if not target.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            audio.write_wav(partial, audio.apply_gain(samples, self.volume), rate)
            partial.replace(target)
        return target, duration

    def play(self, incident_id: str, wav: Path, repeat: int) -> Play:
        command_ts = time.time()
        source, duration = self._with_volume(wav)
        argv = [part.replace("{wav}", str(source)) for part in self.argv]
        for _ in range(max(1, repeat)):
            try:
                result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                        errors="replace", timeout=duration + self.timeout_s)
            except FileNotFoundError:
                raise self._fail("command not found") from None
            except PermissionError:
                raise self._fail("command not executable") from None
            except subprocess.TimeoutExpired:
                raise self._fail(f"did not finish within {duration + self.timeout_s:.1f} s") from None
            if result.returncode != 0:
                detail = (result.stderr or result.stdout).strip().splitlines()
                last = f": {_one_line(detail[-1])}" if detail else ""
                raise self._fail(f"exit status {result.returncode}{last}")
        return Play(self.speaker_id, incident_id, source, repeat, command_ts)


class AxisSpeakerDriver:
    """Axis network speaker (VAPIX audio API): the whole message, repeats included, in one
    ``POST /axis-cgi/audio/transmit.cgi`` as ``audio/basic`` (µ-law 8 kHz mono).

    With credentials, an empty POST first fetches the device's challenge (as curl does), so the audio is
    sent once, already authenticated; the device's scheme is answered (Digest, Axis' default, or Basic).
    """

    def __init__(self, speaker_id: str, url: str, *, username: str | None = None,
                 password: str | None = None, volume: float = 1.0, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(url)}")
        self.speaker_id = speaker_id
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path.rstrip("/") + AXIS_TRANSMIT_PATH
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self.audio = _UlawCache(volume)

    def _fail(self, reason: str) -> SpeakerError:
        return SpeakerError(f"speaker {self.speaker_id} (axis {redact_url(self.url)}): {reason}")

    def _post(self, body: bytes, authorization: str | None, timeout: float) -> tuple[int, str, list[str]]:
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Content-Type": "audio/basic", "Content-Length": str(len(body)),
                   "User-Agent": "flux-secu"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status, response.reason, response.headers.get_all("WWW-Authenticate") or []
        finally:
            conn.close()

    def play(self, incident_id: str, wav: Path, repeat: int) -> Play:
        body = self.audio.get(wav, repeat)
        command_ts = time.time()
        timeout = self.timeout_s + len(body) / audio.TELEPHONE_RATE
        try:
            authorization = None
            if self.username:
                status, reason, challenges = self._post(b"", None, self.timeout_s)
                if status == 401:
                    try:
                        challenge = digest.choose(digest.parse_challenges(challenges))
                        authorization = digest.authorization(challenge, self.username, self.password or "",
                                                             "POST", self.path)
                    except digest.AuthError as exc:
                        raise self._fail(str(exc)) from None
                elif not 200 <= status < 300:
                    raise self._fail(f"HTTP {status} {_one_line(reason, 60)}")
            status, reason, _ = self._post(body, authorization, timeout)
        except (OSError, http.client.HTTPException) as exc:
            text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise self._fail(f"unreachable: {_one_line(text, 120)}") from None
        if status == 401:
            raise self._fail("authentication refused (HTTP 401)" if self.username
                             else "authentication required (HTTP 401) and no username configured")
        if not 200 <= status < 300:
            raise self._fail(f"HTTP {status} {_one_line(reason, 60)}")
        return Play(self.speaker_id, incident_id, wav, repeat, command_ts)


class SipSpeakerDriver:
    """Auto-answer SIP horn: one call per warning, the message (repeats included) over RTP, then BYE.
    ``play`` blocks for the audio's duration: RTP is paced in real time."""

    def __init__(self, speaker_id: str, uri: str, *, local_port: int = 0, username: str | None = None,
                 password: str | None = None, volume: float = 1.0, timeout_s: float = 10.0) -> None:
        try:
            user, host, port = parse_uri(uri)
        except SipError as exc:
            raise ValueError(str(exc)) from None
        self.speaker_id = speaker_id
        self.uri = uri
        self.display_uri = f"sip:{user.split(':', 1)[0] + '@' if user else ''}{host}:{port}"
        """The URI without a password some devices accept in it (sip:user:password@host)."""
        self.local_port = local_port
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self.audio = _UlawCache(volume)
        self.last_packets = 0
        """RTP packets of the last play (for logs and tests)."""

    def play(self, incident_id: str, wav: Path, repeat: int) -> Play:
        ulaw = self.audio.get(wav, repeat)
        command_ts = time.time()
        try:
            result = call_and_play(self.uri, ulaw, local_port=self.local_port, username=self.username,
                                   password=self.password, timeout_s=self.timeout_s)
        except SipError as exc:
            raise SpeakerError(f"speaker {self.speaker_id} ({self.display_uri}): {exc}") from None
        self.last_packets = result.packets
        return Play(self.speaker_id, incident_id, wav, repeat, command_ts)


def warning_wav(config: SpeakerConfig, var_dir: Path) -> Path:
    """The speaker's warning as a WAV: its recorded ``audio_file``, or its message synthesised once
    (cached under ``var_dir/tts``)."""
    if config.audio_file is not None:
        return config.audio_file
    from flux_secu.alerts.tts import synthesise

    return synthesise(config.message, config.voice, var_dir / "tts")


def make_driver(config: SpeakerConfig, var_dir: Path, *, site_id: str | None = None) -> SpeakerDriver:
    """The driver a speaker's config asks for. Files the drivers write (the ``file`` driver's plays, the
    ``command`` driver's gained copies) go under ``var_dir/speakers/[site_id/]speaker_id``."""
    out_dir = var_dir / "speakers" / site_id / config.id if site_id else var_dir / "speakers" / config.id
    password = config.password.get_secret_value() if config.password is not None else None
    if config.driver == "file":
        return FileSpeakerDriver(config.id, out_dir)
    if config.driver == "command":
        assert config.command is not None
        return CommandSpeakerDriver(config.id, config.command, volume=config.volume,
                                    timeout_s=config.timeout_s, work_dir=out_dir)
    if config.driver == "axis":
        assert config.url is not None
        return AxisSpeakerDriver(config.id, config.url, username=config.username, password=password,
                                 volume=config.volume, timeout_s=config.timeout_s)
    if config.driver == "sip":
        assert config.sip_uri is not None
        return SipSpeakerDriver(config.id, config.sip_uri, local_port=config.sip_local_port,
                                username=config.username, password=password, volume=config.volume,
                                timeout_s=config.timeout_s)
    raise ValueError(f"unknown speaker driver {config.driver!r}")
