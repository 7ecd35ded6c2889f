"""Real servers a camera reads from in the tests: gst-rtsp-server (its own process), an HTTP MJPEG
server, and a port that answers random bytes (a misconfigured or hostile device)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")


class RtspServer:
    """``tests/rtsp_server.py`` under Debian's python3 (python3-gi is not in the venv); the same port
    across restarts, as a camera that reboots."""

    def __init__(self, clip: Path, log: Path) -> None:
        self.clip, self.log = clip, log
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def url(self, path: str = "/cam", userinfo: str = "") -> str:
        return f"rtsp://{userinfo}127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        if not Path(SYSTEM_PYTHON).is_file():
            pytest.fail(f"{SYSTEM_PYTHON} not found (make system-deps installs python3-gi for it)")
        deadline = time.monotonic() + 10
        while True:  # a restart on the same port may find it still held for a moment
            with self.log.open("a") as log:
                self.proc = subprocess.Popen(
                    [SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.clip), "--port", str(self.port)],
                    stdout=subprocess.PIPE, stderr=log, text=True)
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            line = self.proc.stdout.readline() if ready else ""
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                return
            self.proc.kill()
            self.proc.wait()
            if time.monotonic() > deadline:
                pytest.fail(f"gst-rtsp-server did not start: see {self.log}")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture()
def rtsp_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RtspServer]:
    clip = getattr(request, "param", None) or _clip()
    server = RtspServer(clip, tmp_path / "rtsp-server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _clip() -> Path:
    from .conftest import ONE_BY_ONE_CLIP

    return ONE_BY_ONE_CLIP


def jpeg_frames(clip: Path, count: int) -> list[bytes]:
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        assert ok
        frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    return frames


class MjpegServer:
    """An HTTP camera: ``multipart/x-mixed-replace`` JPEGs at ``fps``, as IP cameras serve MJPEG.
    With ``password`` set, it asks for HTTP basic authentication. While ``frozen`` is set it keeps
    the connection open and sends nothing: a camera that hangs (its reader's read blocks)."""

    def __init__(self, frames: list[bytes], fps: float = 10.0, auth: str | None = None) -> None:
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if auth is not None and self.headers.get("Authorization") != f"Basic {auth}":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not outer.stopped.is_set():
                        if outer.frozen.is_set():
                            time.sleep(0.05)
                            continue
                        jpeg = frames[i % len(frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        i += 1
                        time.sleep(1 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.stopped = threading.Event()
        self.frozen = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/video.mjpg"

    def close(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class GarbageServer:
    """Accepts TCP connections and answers random bytes, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn, contextlib.suppress(OSError):
                conn.sendall(os.urandom(8192))

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
