"""Video sources against real servers: gst-rtsp-server over TCP and UDP, an HTTP MJPEG camera with
basic authentication, and a port that answers random bytes; files: every frame, key frames only,
switching back in the middle of a GOP, looping and pacing. No Ray: the source alone."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import psutil
import pytest

from flux_secu.config import CameraConfig
from flux_secu.video.source import Grabbed, SourceError, VideoSource

from .camera_helpers import GarbageServer, MjpegServer, RtspServer, jpeg_frames, rtsp_server
from .conftest import LOWLIGHT_CLIP, ONE_BY_ONE_CLIP

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
            source.keyframes_only = True  # every JPEG is a key frame: nothing skipped
            grabbed = source.grab()
            assert grabbed is not None and grabbed.keyframe and grabbed.decoded
            assert source.retrieve().shape == (360, 640, 3)
        finally:
            source.close()
        assert 8 <= len(positions) <= 20  # 10 fps, timed on arrival (MJPEG declares no frame rate)
        wrong = CameraConfig(id="mjpeg", source=server.url(), username="viewer", password="wrong")
        with pytest.raises(SourceError) as err:
            VideoSource(wrong.url(), open_timeout_s=3)
        assert "wrong" not in str(err.value) and "://***@" in str(err.value)
    finally:
        server.close()


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_random_bytes_on_the_port_are_a_clear_error_without_the_password(
        scheme: str, capfd: pytest.CaptureFixture[str]) -> None:
    garbage = GarbageServer()
    try:
        with pytest.raises(SourceError, match=rf"^cannot open video source {scheme}://\*\*\*@127"):
            VideoSource(f"{scheme}://admin:hunter2@127.0.0.1:{garbage.port}/stream", open_timeout_s=3)
        assert garbage.connections >= 1
    finally:
        garbage.close()
    out, err = capfd.readouterr()
    assert "hunter2" not in out + err  # nor in what FFmpeg itself printed


# Files: an H.264 clip with a 2 s GOP (key frames at 0, 50, 100, 150) and no B-frames, as cameras send.
GOP = 50
FRAMES = 200


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = tmp_path_factory.mktemp("clips") / "gop50.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(ONE_BY_ONE_CLIP), "-vf", "fps=25",
                    "-frames:v", str(FRAMES), "-an", "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0", "-bf", "0",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    return clip


@pytest.fixture(scope="module")
def reference(gop_clip: Path) -> list[npt.NDArray[np.uint8]]:
    """Every picture of the clip, by a source that decodes every frame."""
    source = VideoSource(str(gop_clip), realtime=False, decode_threads=1)
    frames = []
    while source.grab() is not None:
        frames.append(source.retrieve())
    source.close()
    assert len(frames) == FRAMES
    return frames


def _close(image: npt.NDArray[np.uint8], reference: npt.NDArray[np.uint8]) -> bool:
    """The same decoded picture: only the YUV to BGR conversions differ (rounding, chroma upsampling)."""
    diff = np.abs(image.astype(np.int16) - reference)
    return image.shape == reference.shape and float(diff.mean()) < 1.5 and int(diff.max()) <= 32


def _grab(source: VideoSource) -> Grabbed:
    grabbed = source.grab()
    assert grabbed is not None
    return grabbed


@pytest.mark.parametrize("threads", [1, None])
def test_file_every_frame_as_opencv_reads_it(gop_clip: Path, reference: list[npt.NDArray[np.uint8]],
                                               threads: int | None) -> None:
    source = VideoSource(str(gop_clip), realtime=False, decode_threads=threads)
    opencv = cv2.VideoCapture(str(gop_clip))
    try:
        assert source.fps == 25.0 and not source.is_live
        for i, picture in enumerate(reference):
            grabbed = _grab(source)
            assert (grabbed.pos_s, grabbed.loop, grabbed.decoded) == (i / 25, 0, True)
            assert not grabbed.catch_up
            assert grabbed.keyframe == (i % GOP == 0)
            image = source.retrieve()
            assert image.dtype == np.uint8 and image.shape == (432, 768, 3)
            assert np.array_equal(image, picture)
            assert _close(image, opencv.read()[1])  # the same picture, but for the BGR conversion
        assert source.grab() is None and not opencv.read()[0]
    finally:
        source.close()
        opencv.release()


@pytest.mark.parametrize("threads", [1, None])
def test_keyframes_only_decodes_only_key_frames(gop_clip: Path, reference: list[npt.NDArray[np.uint8]],
                                                threads: int | None) -> None:
    source = VideoSource(str(gop_clip), realtime=False, decode_threads=threads)
    source.keyframes_only = True
    try:
        decoded = []
        for i in range(FRAMES):  # one Grabbed per packet, decoded or not, in order
            grabbed = _grab(source)
            assert grabbed.pos_s == i / 25 and grabbed.keyframe == grabbed.decoded
            if grabbed.decoded:
                decoded.append(i)
                assert np.array_equal(source.retrieve(), reference[i])
            else:
                with pytest.raises(SourceError, match="no picture"):
                    source.retrieve()
        assert decoded == [0, 50, 100, 150]
        assert source.grab() is None
    finally:
        source.close()


@pytest.mark.parametrize("threads", [1, None])
def test_back_to_every_frame_mid_gop_catches_up_without_corruption(
        gop_clip: Path, reference: list[npt.NDArray[np.uint8]], threads: int | None) -> None:
    source = VideoSource(str(gop_clip), realtime=False, decode_threads=threads)
    source.keyframes_only = True
    try:
        for _ in range(64):  # packets 0..63: key frame 50 decoded, 51..63 skipped
            _grab(source)
        source.keyframes_only = False
        seen = []
        for _ in range(13 + 20):
            grabbed = _grab(source)
            i = round(grabbed.pos_s * 25)
            seen.append((i, grabbed.catch_up))
            assert grabbed.decoded
            assert np.array_equal(source.retrieve(), reference[i]), f"picture {i} differs"
        # The skipped packets' pictures first (not the key frame again), then the stream goes on.
        assert seen == [(i, True) for i in range(51, 64)] + [(i, False) for i in range(64, 84)]
        # Key frames only again and back twice, a packet apart (the decoder is flushed each time; with
        # frame threads it may have read a packet ahead, already decoded): each packet comes once, a
        # skipped one comes again (catch_up) when every frame is back, and each picture is right.
        grabs = []
        for keyframes_only in (True, False, True, False, True):
            source.keyframes_only = keyframes_only
            grabs.append(_grab(source))
            assert grabs[-1].decoded or keyframes_only
            if grabs[-1].decoded:
                assert np.array_equal(source.retrieve(), reference[round(grabs[-1].pos_s * 25)])
        last_switch = len(grabs)
        while (grabs[-1].pos_s * 25) < 99.5:
            grabs.append(_grab(source))
            if grabs[-1].decoded:
                assert np.array_equal(source.retrieve(), reference[round(grabs[-1].pos_s * 25)])
        assert grabs[-1].decoded and grabs[-1].keyframe  # key frame 100
        # Skipped from the switch on, but for the packets that frame threads had read ahead.
        assert sum(g.decoded for g in grabs[last_switch + 2:-1]) == 0
        in_order = [round(g.pos_s * 25) for g in grabs if not g.catch_up]
        assert in_order == list(range(84, 101))
        skipped = {round(g.pos_s * 25) for g in grabs if not g.catch_up and not g.decoded}
        assert {round(g.pos_s * 25) for g in grabs if g.catch_up} <= skipped
    finally:
        source.close()


def test_without_the_catch_up_the_pictures_would_be_corrupted(
        gop_clip: Path, reference: list[npt.NDArray[np.uint8]]) -> None:
    """What the catch-up avoids: P-frames decoded after skipped ones reference pictures never decoded."""
    with av.open(str(gop_clip)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        stream.codec_context.skip_frame = "NONKEY"
        pictures = []
        for i, packet in enumerate(p for p in container.demux(stream) if p.size):
            if i == 64:
                stream.codec_context.skip_frame = "DEFAULT"
            pictures += [(i, cv2.cvtColor(f.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420))
                         for f in stream.codec_context.decode(packet)]
            if i == 70:
                break
    naive = dict(pictures)[70].astype(np.int16)
    assert np.abs(naive - reference[70]).max() > 10  # smeared where the person moves; caught up: 0


def test_file_loops_and_is_paced_per_packet(gop_clip: Path) -> None:
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    source = VideoSource(str(gop_clip), loop=True, realtime=True, sleep=sleep, monotonic=lambda: now[0])
    source.keyframes_only = True  # skipped packets are paced too: a watchdog sees the camera's rate
    try:
        grabbed = [_grab(source) for _ in range(FRAMES + 60)]
    finally:
        source.close()
    assert [g.loop for g in grabbed] == [0] * FRAMES + [1] * 60
    assert [g.pos_s for g in grabbed] == [i / 25 for i in range(FRAMES)] + [i / 25 for i in range(60)]
    assert [i for i, g in enumerate(grabbed) if g.decoded] == [0, 50, 100, 150, 200, 250]
    # Each packet waits for its own position, from the start of its loop.
    assert len(sleeps) == FRAMES - 1 + 59 and sum(sleeps) == pytest.approx((FRAMES - 1 + 59) / 25)


def test_missing_file_and_closed_source_are_clear_errors(gop_clip: Path) -> None:
    with pytest.raises(SourceError, match=r"^cannot open video source /nonexistent/clip\.mp4$"):
        VideoSource("/nonexistent/clip.mp4")
    source = VideoSource(str(gop_clip), realtime=False)
    source.close()
    with pytest.raises(SourceError, match="is closed"):
        source.grab()
