"""Video sources against real servers: gst-rtsp-server over TCP and UDP, an HTTP MJPEG camera with
basic authentication, and a port that answers random bytes. No Ray: the source alone."""

from __future__ import annotations

import base64
import time

import psutil
import pytest

from flux_secu.config import CameraConfig
from flux_secu.video.source import SourceError, VideoSource

from .camera_helpers import GarbageServer, MjpegServer, RtspServer, jpeg_frames, rtsp_server
from .conftest import LOWLIGHT_CLIP

__all__ = ["rtsp_server"]  # the fixture


def _read_for(source: VideoSource, seconds: float) -> list[float]:
    positions = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        grabbed = source.grab()
        assert grabbed is not None
        positions.append(grabbed.pos_s)
    return positions


def _udp_sockets() -> int:
    return len(psutil.Process().net_connections(kind="udp"))


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_over_tcp_and_udp(rtsp_server: RtspServer, transport: str) -> None:
    udp_before = _udp_sockets()
    source = VideoSource(rtsp_server.url(), transport=transport, read_timeout_s=5)  # type: ignore[arg-type]
    try:
        # RTP over UDP needs datagram sockets of its own (RTP and RTCP); interleaved in TCP, none.
        assert (_udp_sockets() - udp_before >= 2) == (transport == "udp")
        positions = _read_for(source, 2.0)
        assert source.retrieve().shape == (432, 768, 3)
    finally:
        source.close()
    # The server paces the clip at 10 fps: the arrival times span the reading time, whatever burst
    # of frames buffered while the stream opened comes first.
    assert len(positions) >= 15
    assert positions[-1] - positions[0] >= 1.5


def test_http_mjpeg_camera_with_credentials() -> None:
    server = MjpegServer(jpeg_frames(LOWLIGHT_CLIP, 10), fps=10,
                         auth=base64.b64encode(b"viewer:s3cret").decode())
    try:
        camera = CameraConfig(id="mjpeg", source=server.url(), username="viewer", password="s3cret")
        source = VideoSource(camera.url(), read_timeout_s=3)
        try:
            positions = _read_for(source, 1.5)
            assert source.retrieve().shape == (360, 640, 3)
        finally:
            source.close()
        assert 8 <= len(positions) <= 20  # 10 fps, timed on arrival (MJPEG declares no frame rate)
        wrong = CameraConfig(id="mjpeg", source=server.url(), username="viewer", password="wrong")
        with pytest.raises(SourceError) as err:
            VideoSource(wrong.url(), open_timeout_s=3)
        assert "wrong" not in str(err.value) and "viewer:***@" in str(err.value)
    finally:
        server.close()


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_random_bytes_on_the_port_are_a_clear_error_without_the_password(
        scheme: str, capfd: pytest.CaptureFixture[str]) -> None:
    garbage = GarbageServer()
    try:
        with pytest.raises(SourceError, match=rf"^cannot open video source {scheme}://admin:\*\*\*@127"):
            VideoSource(f"{scheme}://admin:hunter2@127.0.0.1:{garbage.port}/stream", open_timeout_s=3)
        assert garbage.connections >= 1
    finally:
        garbage.close()
    out, err = capfd.readouterr()
    assert "hunter2" not in out + err  # nor in what FFmpeg itself printed
