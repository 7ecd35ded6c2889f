"""Video sources: open a file or a stream, pace a file in real time, loop it, reopen on failure.

OpenCV (FFmpeg inside) reads files, RTSP (over TCP or UDP) and HTTP MJPEG alike. ``grab()`` decodes;
the colour conversion is paid only for frames that ``retrieve()`` keeps, which is what sampling to
detect_fps saves. A live source has an open and a read timeout, so a dead camera never blocks its
reader for long (FFmpeg's own default is to wait forever on a silent UDP stream).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from flux_secu.config import is_url
from flux_secu.redact import redact_url

# OpenCV passes options to FFmpeg's demuxer only through this variable, read when a capture opens.
_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_options_lock = threading.Lock()


class SourceError(Exception):
    """The source cannot be opened or read; the message never contains credentials."""


@dataclass(frozen=True, slots=True)
class Grabbed:
    """A decoded frame waiting to be retrieved: its position in the source and its loop number."""

    pos_s: float
    loop: int


class VideoSource:
    """A file (optionally looped, optionally paced in real time) or a live URL.

    ``realtime=True`` paces a file at its own frame rate, as a camera would deliver it;
    ``realtime=False`` reads as fast as the machine allows (evaluation).

    ``decode_threads`` caps FFmpeg's decoding threads for this source (None: FFmpeg's default, one
    per core). A live camera wants 1: a box decodes tens of streams at once, so each stream's own
    frame threads only add threads, buffered frames (memory, and a frame of delay per thread) and
    hand-off costs; a replay read as fast as possible wants the default.

    ``source`` may hold credentials (it is what FFmpeg opens); ``name`` is the redacted form, the
    only one that appears in messages. ``transport`` applies to RTSP: ``tcp`` interleaves RTP in
    the RTSP connection (no loss, crosses NAT and firewalls), ``udp`` sends RTP in datagrams.
    """

    def __init__(
        self,
        source: str,
        *,
        loop: bool = False,
        realtime: bool = True,
        decode_threads: int | None = None,
        transport: Literal["tcp", "udp"] = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.is_live = is_url(source)
        self.loop = loop and not self.is_live
        self.realtime = realtime and not self.is_live
        self.decode_threads = decode_threads
        self.transport = transport
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self._sleep, self._monotonic = sleep, monotonic
        self._cap: cv2.VideoCapture | None = None
        self._loop_index = 0
        self._index = 0
        self._start_mono = 0.0
        self.fps = 0.0
        self.open()

    @property
    def name(self) -> str:
        return redact_url(self.source)

    def open(self) -> None:
        self.close()
        params = [] if self.decode_threads is None else [cv2.CAP_PROP_N_THREADS, self.decode_threads]
        if self.is_live:
            params += [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(self.open_timeout_s * 1000),
                       cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(self.read_timeout_s * 1000)]
        with _options_lock:
            previous = os.environ.get(_FFMPEG_OPTIONS)
            if self.source.lower().startswith(("rtsp://", "rtsps://")):
                os.environ[_FFMPEG_OPTIONS] = f"rtsp_transport;{self.transport}"
            try:
                cap = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
            finally:
                if previous is None:
                    os.environ.pop(_FFMPEG_OPTIONS, None)
                else:
                    os.environ[_FFMPEG_OPTIONS] = previous
        if not cap.isOpened():
            raise SourceError(f"cannot open video source {self.name}")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 240 else 25.0
        self._index = 0
        self._start_mono = self._monotonic()

    def grab(self) -> Grabbed | None:
        """Decode the next frame; None at the end of a non-looping file."""
        if self._cap is None:
            raise SourceError(f"video source {self.name} is closed")
        if not self._cap.grab():
            if self.is_live:
                raise SourceError(f"video source {self.name} stopped sending frames")
            if not self.loop:
                return None
            self._loop_index += 1
            self.open()
            if not self._cap.grab():
                raise SourceError(f"video file {self.name} has no readable frame")
        # A live stream's own frame rate is often unknown (MJPEG) or wrong (a camera that lowers it at
        # night): its position is the arrival time, what sampling to detect_fps needs.
        pos_s = self._monotonic() - self._start_mono if self.is_live else self._index / self.fps
        self._index += 1
        if self.realtime:
            delay = self._start_mono + pos_s - self._monotonic()
            if delay > 0:
                self._sleep(delay)
        return Grabbed(pos_s=pos_s, loop=self._loop_index)

    def retrieve(self) -> npt.NDArray[np.uint8]:
        assert self._cap is not None
        ok, frame = self._cap.retrieve()
        if not ok or frame is None:
            raise SourceError(f"video source {self.name}: cannot convert the decoded frame")
        return np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
