"""Speaker drivers against real components: espeak-ng for speech, real local commands, an HTTP server
speaking VAPIX ``transmit.cgi`` with Digest/Basic authentication over a socket, and sipp as the
auto-answer SIP horn (RTP received on a UDP socket of the test)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flux_secu.alerts import audio
from flux_secu.alerts.speakers import (
    AxisSpeakerDriver,
    CommandSpeakerDriver,
    FileSpeakerDriver,
    SipSpeakerDriver,
    SpeakerError,
    make_driver,
    warning_wav,
)
from flux_secu.alerts.tts import synthesise
from flux_secu.config import ConfigError, SpeakerConfig

from .conftest import build_config

WARNING = "Attention. Quittez le site."
PASSWORD = "pa55-w0rd-for-tests"


@pytest.fixture(scope="module")
def french_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesise(WARNING, "fr", tmp_path_factory.mktemp("tts"))


def _tone(path: Path, seconds: float = 0.2, rate: int = 16000, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    audio.write_wav(path, 0.5 * np.sin(2 * np.pi * freq * t), rate)
    return path


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


# -- audio helpers ----------------------------------------------------------------------------------------

def test_ulaw_known_g711_values() -> None:
    # Negative inputs in one's complement, as the ITU-T G.191 reference coder does (-100 -> 0x73).
    pcm = np.array([0, -1, 32767, -32768, 1000, -1000, 100, -100], dtype=np.int16)
    assert list(audio.ulaw_encode(pcm)) == [0xFF, 0x7F, 0x80, 0x00, 0xCE, 0x4E, 0xF2, 0x73]
    decoded = audio.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xEF, 0x6F, 0xF0]))
    assert list(decoded) == [0, 0, 32124, -32124, 132, -132, 120]


def test_ulaw_round_trip_error_stays_within_the_segment_step() -> None:
    pcm = np.arange(-32635, 32636, 7, dtype=np.int16)
    back = audio.ulaw_decode(audio.ulaw_encode(pcm)).astype(np.int32)
    err = np.abs(back - pcm.astype(np.int32))
    # µ-law steps grow with the magnitude: 8 near zero, 1024 in the top segment (error <= half a step + 4).
    assert err[np.abs(pcm) < 100].max() <= 8
    assert err.max() <= 516


def test_tone_is_resampled_to_8k_and_encoded() -> None:
    rate = 22050
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = audio.resample(tone, rate)
    assert len(out) == 8000
    encoded = audio.ulaw_encode(audio.to_int16(out))
    assert len(encoded) == 8000
    decoded = audio.ulaw_decode(encoded).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(decoded))
    assert abs(int(np.argmax(spectrum)) - 1000) <= 1  # 1 Hz bins over one second
    assert _rms(decoded) == pytest.approx(0.5 / np.sqrt(2) * 32767, rel=0.03)
    # Above the new Nyquist frequency (4 kHz): filtered out, not folded back.
    high = audio.resample((0.5 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32), rate)
    assert _rms(high) < 0.01


def test_gain_clips_and_wav_reading_mixes_channels(tmp_path: Path) -> None:
    assert list(audio.apply_gain(np.array([0.8, -0.8, 0.2], dtype=np.float32), 2.0)) == pytest.approx(
        [1.0, -1.0, 0.4])
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.array([16384, 0, -16384, -16384] * 10, dtype="<i2").tobytes())
    samples, rate = audio.read_wav(path)
    assert rate == 8000 and len(samples) == 20
    assert samples[:2] == pytest.approx([0.25, -0.5])
    once = audio.telephone_ulaw(path)
    twice = audio.telephone_ulaw(path, repeat=2)
    assert len(twice) == 2 * len(once) + round(audio.REPEAT_GAP_S * 8000)
    with pytest.raises(audio.AudioError):
        audio.read_wav(tmp_path / "stereo.txt")


# -- config and factory ----------------------------------------------------------------------------------

def _with_speaker(tmp_path: Path, speaker: dict[str, Any]) -> SpeakerConfig:
    def edit(data: dict[str, Any]) -> None:
        data["sites"][0]["speakers"] = [{"id": "hp-1", **speaker}]

    return build_config(tmp_path, edit).sites[0].speakers[0]


@pytest.mark.parametrize(
    ("speaker", "reason"),
    [
        ({"driver": "axis"}, "driver 'axis' needs field 'url'"),
        ({"driver": "sip"}, "driver 'sip' needs field 'sip_uri'"),
        ({"driver": "command"}, "driver 'command' needs field 'command'"),
        ({"driver": "command", "command": ["aplay"]}, "must contain '{wav}'"),
        ({"driver": "file", "url": "http://10.0.0.1"}, "field 'url' is not used by driver 'file'"),
        ({"driver": "axis", "url": "http://root:pw@10.0.0.1"}, "without credentials"),
        ({"driver": "sip", "sip_uri": "horn@10.0.0.1"}, "sip:[user@]host[:port]"),
        ({"driver": "axis", "url": "http://10.0.0.1", "password": "x"}, "needs field 'username'"),
        ({"driver": "voip", "url": "http://10.0.0.1"}, "driver"),
        ({"volume": 3}, "less than or equal to 2"),
        ({"audio_file": "missing.wav"}, "file not found"),
    ],
)
def test_speaker_config_errors_name_the_field(tmp_path: Path, speaker: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError, match=r"sites\[0\]\.speakers\[0\]") as err:
        _with_speaker(tmp_path, speaker)
    assert reason in str(err.value)


def test_make_driver_builds_each_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXIS_PASSWORD_FOR_TESTS", PASSWORD)
    file_cfg = _with_speaker(tmp_path, {})
    driver = make_driver(file_cfg, tmp_path / "var", site_id="site-test")
    assert isinstance(driver, FileSpeakerDriver)
    assert driver.out_dir == tmp_path / "var" / "speakers" / "site-test" / "hp-1"
    command = _with_speaker(tmp_path, {"driver": "command", "command": ["aplay", "-q", "{wav}"]})
    assert isinstance(make_driver(command, tmp_path), CommandSpeakerDriver)
    axis = _with_speaker(tmp_path, {"driver": "axis", "url": "http://127.0.0.1:9", "username": "root",
                                    "password": "${AXIS_PASSWORD_FOR_TESTS}", "volume": 1.5})
    assert axis.password is not None and axis.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(axis) and PASSWORD not in str(axis.model_dump())
    axis_driver = make_driver(axis, tmp_path)
    assert isinstance(axis_driver, AxisSpeakerDriver) and axis_driver.password == PASSWORD
    sip = _with_speaker(tmp_path, {"driver": "sip", "sip_uri": "sip:horn@127.0.0.1:5062"})
    assert isinstance(make_driver(sip, tmp_path), SipSpeakerDriver)


def test_recorded_audio_file_replaces_speech(tmp_path: Path) -> None:
    recorded = _tone(tmp_path / "enregistre.wav")
    cfg = _with_speaker(tmp_path, {"audio_file": "enregistre.wav"})
    assert warning_wav(cfg, tmp_path / "var") == recorded
    assert not (tmp_path / "var" / "tts").exists()


# -- command driver ------------------------------------------------------------------------------------

_RECORD = ("import sys, wave\n"
           "w = wave.open(sys.argv[1])\n"
           "import array; a = array.array('h', w.readframes(w.getnframes()))\n"
           "open(sys.argv[2], 'a').write(f'{w.getnframes()} {max(abs(x) for x in a)}\\n')\n")


def test_command_driver_runs_the_player_per_repeat_with_volume(tmp_path: Path, french_wav: Path) -> None:
    marker = tmp_path / "played.txt"
    driver = CommandSpeakerDriver("hp", [sys.executable, "-c", _RECORD, "{wav}", str(marker)],
                                  volume=0.5, timeout_s=10, work_dir=tmp_path / "cache")
    play = driver.play("inc-1", french_wav, repeat=2)
    lines = marker.read_text().splitlines()
    assert len(lines) == 2
    samples, _ = audio.read_wav(french_wav)
    frames, peak = (int(v) for v in lines[0].split())
    assert frames == len(samples)
    assert peak == pytest.approx(0.5 * np.abs(samples).max() * 32767, rel=0.02)
    assert play.wav.parent == tmp_path / "cache" and play.repeat == 2
    # sox as the "player": it reads the WAV for real.
    assert CommandSpeakerDriver("hp", ["sox", "{wav}", "-n", "stat"]).play("inc-2", french_wav, 1)


def test_command_driver_failures_raise(tmp_path: Path) -> None:
    wav = _tone(tmp_path / "t.wav", seconds=0.1)
    with pytest.raises(SpeakerError, match=r"\(command sox\): exit status 2: sox FAIL .*No such file"):
        CommandSpeakerDriver("hp", ["sox", "{wav}", "/nonexistent/in.wav", "-n"]).play("i", wav, 1)
    with pytest.raises(SpeakerError, match=r"exit status 3: boom"):
        CommandSpeakerDriver("hp", [sys.executable, "-c",
                                    "import sys; print('boom', file=sys.stderr); sys.exit(3)",
                                    "{wav}"]).play("i", wav, 1)
    with pytest.raises(SpeakerError, match=r"command not found"):
        CommandSpeakerDriver("hp", ["/nonexistent/aplay", "{wav}"]).play("i", wav, 1)
    started = time.monotonic()
    with pytest.raises(SpeakerError, match=r"did not finish within"):
        CommandSpeakerDriver("hp", [sys.executable, "-c", "import time; time.sleep(30)", "{wav}"],
                             timeout_s=0.3).play("i", wav, 1)
    assert time.monotonic() - started < 5


# -- Axis driver (VAPIX over a real HTTP server) ----------------------------------------------------------

class _AxisState:
    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.realm = "AXIS_ACCC8E012345"
        self.nonces: set[str] = set()
        self.bodies: list[bytes] = []
        self.requests: list[tuple[int, str | None]] = []  # (body length, Authorization header)


def _digest_params(header: str) -> dict[str, str]:
    return {k.lower(): v1 or v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', header)}


def _axis_handler(state: _AxisState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _authorised(self) -> bool:
            header = self.headers.get("Authorization")
            if header is None:
                return False
            if state.scheme == "basic":
                expected = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
                return header == f"Basic {expected}"
            if not header.startswith("Digest "):
                return False
            p = _digest_params(header[7:])
            if (p.get("nonce") not in state.nonces or p.get("uri") != self.path
                    or p.get("realm") != state.realm):
                return False
            ha1 = hashlib.md5(f"{p['username']}:{state.realm}:{PASSWORD}".encode()).hexdigest()
            ha2 = hashlib.md5(f"POST:{p['uri']}".encode()).hexdigest()
            expected = hashlib.md5(
                f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}".encode()).hexdigest()
            return p.get("username") == "root" and p.get("qop") == "auth" and p.get("response") == expected

        def _reply(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append((len(body), self.headers.get("Authorization")))
            if self.path != "/axis-cgi/audio/transmit.cgi":
                self._reply(404)
                return
            if not self._authorised():
                if state.scheme == "basic":
                    challenge = f'Basic realm="{state.realm}"'
                else:
                    nonce = os.urandom(12).hex()
                    state.nonces.add(nonce)
                    challenge = f'Digest realm="{state.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'
                self._reply(401, {"WWW-Authenticate": challenge})
                return
            if self.headers.get("Content-Type") != "audio/basic":
                self._reply(415)
                return
            if body:
                state.bodies.append(body)
            self._reply(204)

    return Handler


@pytest.fixture(params=["digest", "basic"])
def axis_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, _AxisState]]:
    state = _AxisState(request.param)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _axis_handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_axis_driver_transmits_the_french_warning_as_ulaw(axis_server: tuple[str, _AxisState],
                                                         french_wav: Path) -> None:
    url, state = axis_server
    driver = AxisSpeakerDriver("hp", url, username="root", password=PASSWORD, volume=0.8, timeout_s=5)
    play = driver.play("inc-1", french_wav, repeat=2)
    assert play.repeat == 2 and play.wav == french_wav
    assert len(state.bodies) == 1
    body = state.bodies[0]
    samples, rate = audio.read_wav(french_wav)
    duration = len(samples) / rate
    assert len(body) == pytest.approx(duration * 8000 * 2 + audio.REPEAT_GAP_S * 8000, abs=2)
    assert body == audio.telephone_ulaw(french_wav, repeat=2, gain=0.8)
    decoded = audio.ulaw_decode(body)
    assert _rms(decoded) > 1000  # speech, not silence
    half = (len(body) - round(audio.REPEAT_GAP_S * 8000)) // 2
    assert body[:half] == body[-half:]  # the message, twice
    # The audio crossed the wire once, authenticated: an empty POST fetched the challenge first.
    assert [length for length, _ in state.requests] == [0, len(body)]
    assert state.requests[1][1] is not None
    assert state.requests[1][1].startswith("Digest " if state.scheme == "digest" else "Basic ")


def test_axis_driver_wrong_password_raises_without_leaking_it(axis_server: tuple[str, _AxisState],
                                                             french_wav: Path) -> None:
    url, state = axis_server
    driver = AxisSpeakerDriver("hp", url, username="root", password="not-" + PASSWORD, timeout_s=5)
    with pytest.raises(SpeakerError, match=r"authentication refused \(HTTP 401\)") as err:
        driver.play("inc-1", french_wav, repeat=1)
    assert PASSWORD not in str(err.value) and "\n" not in str(err.value)
    assert state.bodies == []
    with pytest.raises(SpeakerError, match=r"authentication required"):
        AxisSpeakerDriver("hp", url, timeout_s=5).play("inc-1", french_wav, repeat=1)


def test_axis_driver_server_down_raises(french_wav: Path) -> None:
    port = _free_port(socket.SOCK_STREAM)
    driver = AxisSpeakerDriver("hp", f"http://127.0.0.1:{port}/?password=hunter2", username="root",
                               password=PASSWORD, timeout_s=2)
    with pytest.raises(SpeakerError, match=r"unreachable: .*refused") as err:
        driver.play("inc-1", french_wav, repeat=1)
    assert "hunter2" not in str(err.value) and PASSWORD not in str(err.value)


# -- SIP driver against sipp -------------------------------------------------------------------------------

_SIP_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
"""
_REPLY = """  <send{attrs}>
    <![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:]{tag}
      [last_Call-ID:]
      [last_CSeq:]
{extra}      Content-Length: {length}
{body}    ]]>
  </send>
"""
_ANSWER_SDP = """
      v=0
      o=horn 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {rtp_port} RTP/AVP 0
      a=rtpmap:0 PCMU/8000
"""
_TAG = ";tag=[pid]horn[call_number]"


def _answer(rtp_port: int) -> str:
    """Ring, answer with SDP pointing at the test's RTP socket, take the ACK, wait for the BYE."""
    return (_REPLY.format(attrs="", status="180 Ringing", tag=_TAG, extra="", length=0, body="")
            + _REPLY.format(attrs=' retrans="500"', status="200 OK", tag=_TAG,
                            extra="      Contact: <sip:[local_ip]:[local_port]>\n"
                                  "      Content-Type: application/sdp\n",
                            length="[len]", body=_ANSWER_SDP.format(rtp_port=rtp_port))
            + '  <recv request="ACK"/>\n  <recv request="BYE"/>\n'
            + _REPLY.format(attrs="", status="200 OK", tag="", extra="", length=0, body=""))


def _scenario(kind: str, rtp_port: int) -> str:
    xml = _SIP_HEAD.format(name=f"flux-secu {kind} horn")
    if kind == "answer":
        xml += '  <recv request="INVITE"/>\n' + _answer(rtp_port)
    elif kind == "busy":
        xml += ('  <recv request="INVITE"/>\n'
                + _REPLY.format(attrs="", status="486 Busy Here", tag=_TAG, extra="", length=0, body="")
                + '  <recv request="ACK"/>\n')
    elif kind == "auth":
        challenge = '      WWW-Authenticate: Digest realm="horn.local", nonce="[pid]x[call_number]"\n'
        xml += ('  <recv request="INVITE"/>\n'
                + _REPLY.format(attrs="", status="401 Unauthorized", tag=_TAG, extra=challenge, length=0,
                                body="")
                + '  <recv request="ACK"/>\n'
                + '  <recv request="INVITE">\n    <action>\n'
                + f'      <verifyauth assign_to="authok" username="horn" password="{PASSWORD}"/>\n'
                + '    </action>\n  </recv>\n'
                + '  <nop hide="true" test="authok" next="good"/>\n'
                + _REPLY.format(attrs="", status="403 Forbidden", tag=_TAG, extra="", length=0, body="")
                + '  <recv request="ACK" next="end"/>\n  <label id="good"/>\n'
                + _answer(rtp_port) + '  <label id="end"/>\n')
    return xml + '  <timewait milliseconds="100"/>\n</scenario>\n'


class _Sipp:
    def __init__(self, tmp_path: Path, kind: str) -> None:
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.port = _free_port()
        self.dir = tmp_path
        xml = tmp_path / f"{kind}.xml"
        xml.write_text(_scenario(kind, self.rtp.getsockname()[1]))
        self.stats = tmp_path / f"{kind}-stats.csv"
        self.log = (tmp_path / f"{kind}-sipp.log").open("w")
        self.proc = subprocess.Popen(
            ["sipp", "-sf", str(xml), "-i", "127.0.0.1", "-p", str(self.port), "-m", "1",
             "-mi", "127.0.0.1", "-mp", str(_free_port()), "-nostdin", "-timeout", "20", "-timeout_error",
             "-trace_stat", "-stf", str(self.stats), "-trace_msg", "-message_file",
             str(tmp_path / f"{kind}-messages.log")],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self) -> None:
        needle = f"0100007F:{self.port:04X}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if needle in Path("/proc/net/udp").read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"sipp did not start: {Path(self.log.name).read_text()[-500:]}")

    @property
    def uri(self) -> str:
        return f"sip:horn@127.0.0.1:{self.port}"

    def finish(self) -> tuple[int, dict[str, str]]:
        """sipp's exit status and its last statistics row (it exits after one call, ``-m 1``)."""
        rc = self.proc.wait(timeout=15)
        header, *rows = self.stats.read_text().splitlines()
        return rc, dict(zip(header.split(";"), rows[-1].split(";"), strict=False))

    def rtp_packets(self) -> list[bytes]:
        self.rtp.setblocking(False)
        packets = []
        while True:
            try:
                packets.append(self.rtp.recv(2048))
            except BlockingIOError:
                return packets

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.rtp.close()
        self.log.close()


@pytest.fixture()
def sipp(tmp_path: Path) -> Iterator[Any]:
    started: list[_Sipp] = []

    def start(kind: str) -> _Sipp:
        horn = _Sipp(tmp_path, kind)
        started.append(horn)
        return horn

    yield start
    for horn in started:
        horn.close()


def _check_rtp(packets: list[bytes], expected: bytes) -> None:
    assert len(packets) == -(-len(expected) // 160)
    heads = [struct.unpack("!BBHII", p[:12]) for p in packets]
    assert all(v == 0x80 for v, *_ in heads)  # RTP v2, no padding/extension/CSRC
    assert [m_pt for _, m_pt, *_ in heads] == [0x80] + [0x00] * (len(packets) - 1)  # PT 0, marker first
    seqs = [h[2] for h in heads]
    stamps = [h[3] for h in heads]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert all((b - a) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(stamps))
    assert len({h[4] for h in heads}) == 1
    payload = b"".join(p[12:] for p in packets)
    assert all(len(p) == 172 for p in packets)
    assert payload[: len(expected)] == expected and set(payload[len(expected):]) <= {0xFF}


@pytest.mark.slow
def test_sip_driver_calls_the_horn_and_streams_the_warning(sipp: Any, french_wav: Path) -> None:
    horn = sipp("answer")
    driver = SipSpeakerDriver("hp", horn.uri, volume=1.2, timeout_s=5)
    started = time.monotonic()
    play = driver.play("inc-1", french_wav, repeat=2)
    elapsed = time.monotonic() - started
    expected = audio.telephone_ulaw(french_wav, repeat=2, gain=1.2)
    assert elapsed == pytest.approx(len(expected) / 8000, abs=0.5)  # paced in real time
    assert play.repeat == 2
    rc, stats = horn.finish()
    assert rc == 0
    assert stats["SuccessfulCall(C)"] == "1" and stats["FailedCall(C)"] == "0"
    packets = horn.rtp_packets()
    _check_rtp(packets, expected)
    assert driver.last_packets == len(packets)
    assert _rms(audio.ulaw_decode(expected)) > 1000


@pytest.mark.slow
def test_sip_driver_answers_the_horns_digest_challenge(sipp: Any, tmp_path: Path) -> None:
    wav = _tone(tmp_path / "bip.wav", seconds=0.3)
    horn = sipp("auth")
    SipSpeakerDriver("hp", horn.uri, username="horn", password=PASSWORD, timeout_s=5).play("inc-1", wav, 1)
    rc, stats = horn.finish()
    assert rc == 0 and stats["SuccessfulCall(C)"] == "1"
    _check_rtp(horn.rtp_packets(), audio.telephone_ulaw(wav))

    horn = sipp("auth")
    with pytest.raises(SpeakerError, match=r"403 Forbidden \(credentials rejected\?\)") as err:
        SipSpeakerDriver("hp", horn.uri, username="horn", password="wrong", timeout_s=5).play("inc-2", wav, 1)
    assert "wrong" not in str(err.value)
    horn.finish()
    assert horn.rtp_packets() == []


@pytest.mark.slow
def test_sip_driver_busy_or_absent_horn_raises(sipp: Any, tmp_path: Path) -> None:
    wav = _tone(tmp_path / "bip.wav", seconds=0.3)
    horn = sipp("busy")
    with pytest.raises(SpeakerError, match=r"call refused: 486 Busy Here"):
        SipSpeakerDriver("hp", horn.uri, timeout_s=5).play("inc-1", wav, 1)
    rc, _ = horn.finish()
    assert rc == 0  # sipp got its ACK for the 486
    assert horn.rtp_packets() == []

    started = time.monotonic()
    with pytest.raises(SpeakerError, match=r"no answer within 0.8 s"):
        SipSpeakerDriver("hp", f"sip:horn@127.0.0.1:{_free_port()}", timeout_s=0.8).play("inc-2", wav, 1)
    assert time.monotonic() - started < 2
