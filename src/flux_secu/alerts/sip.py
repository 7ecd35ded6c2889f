"""One outgoing SIP call over UDP that plays µ-law audio to an auto-answer horn speaker, then hangs up.

Why our own small user agent rather than a SIP library: the job is one short, outbound, send-only call
to a horn that answers by itself (peer-to-peer, no registrar). pyVoIP 1.6.8, the pure-Python candidate,
always REGISTERs before calling (horns set up for direct calls have nothing to register with, and the
stock ``sipp -sn uas`` rejects it), drives audio through ``audioop`` (removed in Python 3.13) and is built
around a long-lived listening phone. The subset needed here is small and testable against ``sipp``:

- INVITE with an SDP offer (PCMU/8000, ``sendonly``), retransmitted over UDP (T1 = 500 ms, doubling)
  until a response arrives; 1xx are waited through; 401/407 are answered once with Digest/Basic
  credentials when they are configured; other final responses are ACKed and reported;
- 200 OK: ACK, then the audio as RTP (payload type 0, 20 ms = 160 bytes per packet, paced in real
  time as a phone would) to the address and port of the answer's SDP; a retransmitted 200 OK is ACKed
  again; a BYE from the speaker during playback is answered and reported;
- BYE when the audio is over, retransmitted until answered.

Not supported: TCP/TLS transports, Record-Route/proxies (the horn is called directly), re-INVITE,
early media, RTCP, SRTP. The caller's timeout bounds the wait for an answer; a call that rings past it is
CANCELled.
"""

from __future__ import annotations

import os
import random
import re
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import ClassVar

from flux_secu.alerts import digest

T1 = 0.5
RTP_PACKET_BYTES = 160  # 20 ms of 8 kHz µ-law
RTP_PACKET_S = 0.020
_URI = re.compile(r"^sip:(?:(?P<user>[^@;]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^:;?]+)(?::(?P<port>\d+))?")


class SipError(Exception):
    """A call that could not be placed or was cut short; ``str()`` is one line."""


@dataclass(frozen=True)
class CallResult:
    answered_s: float
    """Seconds from the first INVITE to the 200 OK."""
    packets: int
    """RTP packets sent."""
    audio_s: float
    remote_media: tuple[str, int]
    bye_answered: bool


@dataclass
class _Message:
    start: str
    headers: list[tuple[str, str]]
    body: str

    _COMPACT: ClassVar[dict[str, str]] = {
        "v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
        "c": "content-type",
    }

    @classmethod
    def parse(cls, data: bytes) -> _Message | None:
        try:
            text = data.decode("utf-8", errors="replace")
        except Exception:  # pragma: no cover - decode with replace does not fail
            return None
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        if not lines or not lines[0]:
            return None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # folded header line
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name = name.strip().lower()
            headers.append((cls._COMPACT.get(name, name), value.strip()))
        return cls(lines[0], headers, body)

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        try:
            return int(self.start.split(" ", 2)[1])
        except (IndexError, ValueError):
            return 0

    @property
    def reason(self) -> str:
        parts = self.start.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0]

    @property
    def cseq(self) -> tuple[int, str]:
        value = self.get("cseq") or "0 ?"
        number, _, method = value.partition(" ")
        try:
            return int(number), method.strip().upper()
        except ValueError:
            return 0, method.strip().upper()


def parse_uri(uri: str) -> tuple[str | None, str, int]:
    """``sip:horn@10.0.0.5:5062`` -> ("horn", "10.0.0.5", 5062); the port defaults to 5060."""
    match = _URI.match(uri.strip())
    if not match:
        raise SipError("not a SIP URI (expected sip:[user@]host[:port])")
    host = match.group("host").strip("[]")
    return match.group("user"), host, int(match.group("port") or 5060)


def _uri_in(header: str) -> str:
    match = re.search(r"<([^>]+)>", header)
    return (match.group(1) if match else header.split(";", 1)[0]).strip()


def _tag(header: str) -> str | None:
    match = re.search(r";\s*tag=([^;>\s]+)", header)
    return match.group(1) if match else None


def _parse_sdp(body: str) -> tuple[str, int, list[str]]:
    """(connection address, audio port, payload types) of an SDP answer."""
    session_addr = media_addr = None
    port, formats = 0, []
    in_audio = False
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            fields = line[2:].split()
            in_audio = bool(fields) and fields[0] == "audio" and port == 0
            if in_audio and len(fields) >= 3:
                try:
                    port = int(fields[1].split("/")[0])
                except ValueError:
                    raise SipError(f"bad SDP media line: {line[:80]}") from None
                formats = fields[3:]
        elif line.startswith("c="):
            fields = line[2:].split()
            if len(fields) >= 3:
                address = fields[2].split("/")[0]
                if in_audio:
                    media_addr = address
                elif port == 0:
                    session_addr = address
    address = media_addr or session_addr
    if not address or port == 0:
        raise SipError("answer has no usable audio stream in its SDP")
    return address, port, formats


def _local_ip_towards(host: str, port: int) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, port))  # UDP connect sends nothing: it only picks the route
        return str(probe.getsockname()[0])
    finally:
        probe.close()


def _bind_rtp_socket(local_ip: str) -> socket.socket:
    """A UDP socket on an even port, as RTP wants (RTCP would be the odd one above)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(20):
        try:
            sock.bind((local_ip, random.randrange(20000, 40000, 2)))
            return sock
        except OSError:
            continue
    sock.bind((local_ip, 0))
    return sock


class _Call:
    def __init__(self, uri: str, *, local_port: int, username: str | None, password: str | None,
                 timeout_s: float, user_agent: str) -> None:
        self.uri = uri.strip()
        _, host, port = parse_uri(self.uri)
        try:
            self.remote = (socket.gethostbyname(host), port)
        except OSError as exc:
            raise SipError(f"cannot resolve SIP host {host}: {exc.strerror or exc}") from None
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        self.local_ip = _local_ip_towards(*self.remote)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((self.local_ip, local_port))
        except OSError as exc:
            self.sock.close()
            raise SipError(f"cannot bind local SIP port {local_port}: {exc.strerror or exc}") from None
        self.local_port = self.sock.getsockname()[1]
        self.call_id = f"{os.urandom(8).hex()}@{self.local_ip}"
        self.from_tag = os.urandom(4).hex()
        self.cseq = 0
        self.to_tag: str | None = None
        self.remote_target = self.uri
        self.dialog_addr = self.remote
        self.rtp: socket.socket | None = None

    # -- messages ------------------------------------------------------------------------------------
    def _branch(self) -> str:
        return "z9hG4bK" + os.urandom(6).hex()

    def _request(self, method: str, request_uri: str, cseq: int, branch: str, *,
                 extra: list[str] | None = None, body: str = "", content_type: str | None = None) -> bytes:
        to = f"<{self.uri}>" + (f";tag={self.to_tag}" if self.to_tag and method != "CANCEL" else "")
        lines = [
            f"{method} {request_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local_ip}:{self.local_port};branch={branch};rport",
            "Max-Forwards: 70",
            f'From: "flux-secu" <sip:flux-secu@{self.local_ip}>;tag={self.from_tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:flux-secu@{self.local_ip}:{self.local_port}>",
            f"User-Agent: {self.user_agent}",
            *(extra or []),
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        payload = body.encode("utf-8")
        lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload

    def _respond(self, request: _Message, addr: tuple[str, int], status: int, reason: str) -> None:
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in request.get_all("via")]
        for name in ("from", "to", "call-id", "cseq"):
            value = request.get(name)
            if value is not None:
                lines.append(f"{name.title() if name != 'call-id' else 'Call-ID'}: {value}")
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"), addr)

    def _sdp_offer(self, rtp_port: int) -> str:
        session = random.randrange(1, 2**31)
        return "\r\n".join([
            "v=0",
            f"o=flux-secu {session} {session} IN IP4 {self.local_ip}",
            "s=flux-secu warning",
            f"c=IN IP4 {self.local_ip}",
            "t=0 0",
            f"m=audio {rtp_port} RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "a=ptime:20",
            "a=sendonly",
            "",
        ])

    def _ack(self, cseq: int, branch: str, request_uri: str) -> bytes:
        return self._request("ACK", request_uri, cseq, branch)

    # -- receiving -----------------------------------------------------------------------------------
    def _receive(self, until: float) -> tuple[_Message, tuple[str, int]] | None:
        """Next SIP message of this call before the monotonic time ``until`` (requests of the dialog and
        responses with our Call-ID); stray datagrams are dropped."""
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                return None
            data, addr = self.sock.recvfrom(65535)
            message = _Message.parse(data)
            if message is None or message.get("call-id") != self.call_id:
                continue
            return message, addr

    def _handle_request(self, message: _Message, addr: tuple[str, int]) -> bool:
        """Answer a request from the speaker; True when it hung up (BYE)."""
        method = message.method.upper()
        if method == "ACK":
            return False
        if method == "BYE":
            self._respond(message, addr, 200, "OK")
            return True
        self._respond(message, addr, 200 if method in ("OPTIONS", "INFO", "NOTIFY") else 405,
                      "OK" if method in ("OPTIONS", "INFO", "NOTIFY") else "Method Not Allowed")
        return False

    # -- the call ------------------------------------------------------------------------------------
    def invite(self) -> tuple[_Message, float]:
        """Send the INVITE until answered; returns the 200 OK and the seconds it took."""
        self.rtp = _bind_rtp_socket(self.local_ip)
        offer = self._sdp_offer(self.rtp.getsockname()[1])
        started = time.monotonic()
        deadline = started + self.timeout_s
        auth_header: str | None = None
        tried_auth = False
        while True:
            self.cseq += 1
            branch = self._branch()
            invite = self._request("INVITE", self.uri, self.cseq, branch,
                                   extra=[auth_header] if auth_header else None,
                                   body=offer, content_type="application/sdp")
            interval, next_send, provisional = T1, time.monotonic(), False
            final: _Message | None = None
            while final is None:
                now = time.monotonic()
                if now >= deadline:
                    if provisional:  # ringing: stop it
                        self.sock.sendto(self._request("CANCEL", self.uri, self.cseq, branch), self.remote)
                    raise SipError(f"no answer within {self.timeout_s:g} s"
                                   + (" (rang, not auto-answer?)" if provisional else ""))
                if not provisional and now >= next_send:
                    self.sock.sendto(invite, self.remote)
                    next_send = now + interval
                    interval = min(interval * 2, 4.0)
                received = self._receive(min(deadline, next_send) if not provisional else deadline)
                if received is None:
                    continue
                message, addr = received
                if not message.is_response:
                    self._handle_request(message, addr)
                    continue
                if message.cseq != (self.cseq, "INVITE"):
                    continue
                if message.status < 200:
                    provisional = True
                else:
                    final = message
            to_header = final.get("to") or ""
            self.to_tag = _tag(to_header)
            if 200 <= final.status < 300:
                contact = final.get("contact")
                if contact:
                    self.remote_target = _uri_in(contact)
                    try:
                        _, host, port = parse_uri(self.remote_target)
                        self.dialog_addr = (socket.gethostbyname(host), port)
                    except (SipError, OSError):
                        self.remote_target, self.dialog_addr = self.uri, self.remote
                return final, time.monotonic() - started
            # Non-2xx: the ACK belongs to the INVITE transaction (same branch, same To tag).
            self.sock.sendto(self._ack(self.cseq, branch, self.uri), self.remote)
            self.to_tag = None
            if final.status in (401, 407) and self.username and self.password is not None and not tried_auth:
                header = "www-authenticate" if final.status == 401 else "proxy-authenticate"
                try:
                    challenge = digest.choose(digest.parse_challenges(final.get_all(header)))
                    value = digest.authorization(challenge, self.username, self.password, "INVITE", self.uri)
                except digest.AuthError as exc:
                    raise SipError(f"cannot authenticate: {exc}") from None
                name = "Authorization" if final.status == 401 else "Proxy-Authorization"
                auth_header = f"{name}: {value}"
                tried_auth = True
                continue
            if final.status in (401, 407):
                why = " (credentials rejected)" if tried_auth else " (no credentials configured)"
                raise SipError(f"call refused: {final.status} {final.reason}" + why)
            rejected = " (credentials rejected?)" if tried_auth and final.status == 403 else ""
            raise SipError(f"call refused: {final.status} {final.reason}".strip() + rejected)

    def stream(self, ok: _Message, ulaw: bytes) -> tuple[int, tuple[str, int], bool]:
        """ACK the answer and send the audio; returns (packets, remote media, hung up by the speaker)."""
        assert self.rtp is not None
        ack = self._ack(self.cseq, self._branch(), self.remote_target)
        self.sock.sendto(ack, self.dialog_addr)
        address, port, formats = _parse_sdp(ok.body)
        if "0" not in formats:
            raise SipError(f"speaker does not accept PCMU (offered back: {' '.join(formats) or 'none'})")
        if address in ("0.0.0.0", ""):
            raise SipError("speaker put the call on hold (c=0.0.0.0)")
        try:
            media = (socket.gethostbyname(address), port)
        except OSError:
            raise SipError(f"cannot resolve media address {address}") from None
        ssrc = random.getrandbits(32)
        seq = random.getrandbits(16)
        ts = random.getrandbits(32)
        remainder = len(ulaw) % RTP_PACKET_BYTES
        if remainder:
            ulaw += b"\xff" * (RTP_PACKET_BYTES - remainder)  # pad with µ-law silence
        start = time.monotonic()
        sent = 0
        for offset in range(0, len(ulaw), RTP_PACKET_BYTES):
            due = start + sent * RTP_PACKET_S
            while True:
                received = self._receive(due)
                if received is None:
                    break
                message, addr = received
                if message.is_response:
                    if message.cseq == (self.cseq, "INVITE") and 200 <= message.status < 300:
                        self.sock.sendto(ack, self.dialog_addr)  # our ACK was lost: 200 OK again
                    continue
                if self._handle_request(message, addr):
                    return sent, media, True
            header = struct.pack("!BBHII", 0x80, (0x80 if sent == 0 else 0x00), (seq + sent) & 0xFFFF,
                                 (ts + sent * RTP_PACKET_BYTES) & 0xFFFFFFFF, ssrc)
            self.rtp.sendto(header + ulaw[offset:offset + RTP_PACKET_BYTES], media)
            sent += 1
        # Let the last packet play out before hanging up.
        end = start + sent * RTP_PACKET_S
        while (received := self._receive(end)) is not None:
            message, addr = received
            if not message.is_response and self._handle_request(message, addr):
                return sent, media, True
        return sent, media, False

    def bye(self) -> bool:
        """Hang up; True when the speaker answered the BYE."""
        self.cseq += 1
        branch = self._branch()
        bye = self._request("BYE", self.remote_target, self.cseq, branch)
        deadline = time.monotonic() + min(self.timeout_s, 8.0)
        interval, next_send = T1, time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                self.sock.sendto(bye, self.dialog_addr)
                next_send = time.monotonic() + interval
                interval = min(interval * 2, 4.0)
            received = self._receive(min(deadline, next_send))
            if received is None:
                continue
            message, addr = received
            if not message.is_response:
                if self._handle_request(message, addr):
                    return True  # both hung up at once
                continue
            if message.cseq == (self.cseq, "BYE") and message.status >= 200:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
        if self.rtp is not None:
            self.rtp.close()


def call_and_play(uri: str, ulaw: bytes, *, local_port: int = 0, username: str | None = None,
                  password: str | None = None, timeout_s: float = 5.0,
                  user_agent: str = "flux-secu") -> CallResult:
    """Call ``uri``, play ``ulaw`` (8 kHz G.711 µ-law) once it answers, hang up. Blocks for the audio's
    duration (RTP is paced in real time). Raises :class:`SipError`."""
    call = _Call(uri, local_port=local_port, username=username, password=password, timeout_s=timeout_s,
                 user_agent=user_agent)
    try:
        try:
            ok, answered_s = call.invite()
            packets, media, hung_up = call.stream(ok, ulaw)
        except SipError:
            if call.to_tag is not None:  # answered, then something was wrong: do not leave it open
                call.bye()
            raise
        except OSError as exc:
            raise SipError(f"network error: {exc.strerror or exc}") from None
        if hung_up:
            raise SipError(f"speaker hung up after {packets * RTP_PACKET_S:.1f} s of "
                           f"{len(ulaw) / 8000:.1f} s")
        bye_answered = call.bye()
        return CallResult(answered_s, packets, packets * RTP_PACKET_S, media, bye_answered)
    finally:
        call.close()
