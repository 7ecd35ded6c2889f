"""Video sources: open a file or a stream, pace a file in real time, loop it, decode key frames only.

PyAV (FFmpeg) reads files, RTSP (over TCP or UDP) and HTTP MJPEG alike and hands over packets, so a
source can decode every frame or only the key frames (``keyframes_only``: ~5x cheaper per packet,
for a still scene) and switch between the two at any time. ``grab()`` returns one ``Grabbed`` per
video packet, decoded or not (a video-loss watchdog counts them); the colour conversion is paid only
for the pictures that ``retrieve()`` keeps. A live source has an open and a read timeout, so a dead
camera never blocks its reader for long (FFmpeg's own default is to wait forever on a silent UDP
stream). FFmpeg's log stays off (PyAV's default): it could print a URL with its password.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import av
import cv2
import numpy as np
import numpy.typing as npt
from av.codec.context import ThreadType
from av.container import InputContainer
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from flux_secu.config import is_url
from flux_secu.redact import redact_url

# The packets kept since the last key frame, to re-decode on a switch back to every frame: a 10 s GOP
# at 30 fps. A stream without key frames that often (intra refresh) waits for its next key frame instead.
MAX_GOP_PACKETS = 300


class SourceError(Exception):
    """The source cannot be opened or read; the message never contains credentials."""


@dataclass(frozen=True, slots=True)
class Grabbed:
    """One video packet read: its position in the source, its loop number, whether it is a key frame,
    whether a picture is waiting for ``retrieve()``, and whether it was re-decoded on a switch from key
    frames only back to every frame (``catch_up``: earlier than the last position, not paced)."""

    pos_s: float
    loop: int
    keyframe: bool
    decoded: bool
    catch_up: bool = False


@dataclass(slots=True, eq=False)
class _Slot:
    """A packet fed to the decoder, until its picture (or its lack of one) is known."""

    packet: Packet
    pos_s: float
    resolved: bool = False
    decoded: bool = False
    frame: VideoFrame | None = None  # until the next packet is returned: the GOP keeps no picture
    emitted: bool = False
    catch_up: bool = False
    hidden: bool = False  # re-decoded on a switch but returned before: never returned again


class VideoSource:
    """A file (optionally looped, optionally paced in real time) or a live URL.

    ``realtime=True`` paces a file at its own frame rate, as a camera would deliver it;
    ``realtime=False`` reads as fast as the machine allows (evaluation).

    ``decode_threads`` caps FFmpeg's decoding threads for this source (None: FFmpeg's automatic
    frame and slice threads, one per core). A live camera wants 1: a box decodes tens of streams at
    once, so each stream's own frame threads only add threads, buffered frames (memory, and a frame
    of delay per thread) and hand-off costs; a replay read as fast as possible wants the default.

    ``keyframes_only`` may change between two ``grab()`` calls. Back to every frame in the middle of
    a GOP, the decoder is flushed and given again the packets since the last key frame (the P-frames
    that follow reference them); the pictures of the packets it had skipped come first, flagged
    ``catch_up``.

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
        self._container: InputContainer | None = None
        self._packets: Iterator[Packet] = iter(())
        self._codec: VideoCodecContext | None = None
        self.keyframes_only = False
        """Decode key frames only; may change between two grab() calls (applied at the next one)."""
        self._skipping = False  # what the decoder does now: keyframes_only applies at the next grab()
        self._slots: deque[_Slot] = deque()  # fed, not yet returned, in decoding order
        self._pending: deque[_Slot] = deque()  # fed, picture not yet known
        self._in_flight: list[int] = []  # the pts of the pending packets, to see those the decoder dropped
        # Since the last key frame ([] before the first one, None when too long to keep).
        self._gop: list[_Slot] | None = []
        self._await_key = False
        self._lag = 0  # packets the decoder holds before its picture comes out (threads, reordering)
        self._current: _Slot | None = None
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
        options: dict[str, str] = {}
        if self.source.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.transport
        timeout = (self.open_timeout_s, self.read_timeout_s) if self.is_live else None
        try:
            container = av.open(self.source, options=options, timeout=timeout)
        except (av.FFmpegError, OSError, ValueError):
            raise SourceError(f"cannot open video source {self.name}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"cannot open video source {self.name}")
        stream: VideoStream = container.streams.video[0]
        codec = stream.codec_context
        codec.thread_count = 0 if self.decode_threads is None else self.decode_threads
        codec.thread_type = "AUTO"
        self._skipping = self.keyframes_only
        codec.skip_frame = "NONKEY" if self._skipping else "DEFAULT"
        self._container, self._codec = container, codec
        self._packets = container.demux(stream)
        rate = stream.guessed_rate or stream.average_rate
        fps = float(rate) if rate else 0.0
        self.fps = fps if 0 < fps < 240 else 25.0
        self._await_key = False
        self._slots.clear()
        self._pending.clear()
        self._in_flight.clear()
        self._gop = []
        self._lag = 0
        self._current = None
        self._index = 0
        self._start_mono = self._monotonic()

    def grab(self) -> Grabbed | None:
        """Read the next video packet; None at the end of a non-looping file."""
        if self._codec is None:
            raise SourceError(f"video source {self.name} is closed")
        if self.keyframes_only != self._skipping:
            self._switch()
        while not self._slots or not self._slots[0].resolved:
            if not self._feed_next():
                self._drain()
                if self._slots:
                    break
                if self.is_live:
                    raise SourceError(f"video source {self.name} stopped sending frames")
                if not self.loop:
                    return None
                self._loop_index += 1
                self.open()
                if not self._feed_next():
                    raise SourceError(f"video file {self.name} has no readable frame")
        slot = self._slots.popleft()
        slot.emitted = True
        if self._current is not None:
            self._current.frame = None
        self._current = slot
        if self.realtime and not slot.catch_up:
            delay = self._start_mono + slot.pos_s - self._monotonic()
            if delay > 0:
                self._sleep(delay)
        keyframe = slot.frame.key_frame if slot.frame is not None else slot.packet.is_keyframe
        return Grabbed(pos_s=slot.pos_s, loop=self._loop_index, keyframe=bool(keyframe),
                       decoded=slot.decoded, catch_up=slot.catch_up)

    def retrieve(self) -> npt.NDArray[np.uint8]:
        """The picture of the last packet grabbed, BGR (H, W, 3); only when ``decoded``."""
        slot = self._current
        if slot is None or slot.frame is None:
            raise SourceError(f"video source {self.name}: no picture for this packet")
        frame = slot.frame
        if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
            # The usual camera format: OpenCV converts it in 0.22-0.26 ms per 640x360 frame on one
            # thread (as the camera actors run it), FFmpeg's swscale (to_ndarray bgr24) in 0.57-0.68 ms.
            yuv = frame.to_ndarray(format="yuv420p")
            return np.asarray(cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420), dtype=np.uint8)
        return frame.to_ndarray(format="bgr24")  # full-range JPEG (yuvj4xxp), odd sizes, other formats

    def wall_ts(self, pos_s: float) -> float:
        """Wall-clock time of a position: when a live packet was read, when a paced file's frame was
        due (so a frame read late, in a burst, keeps the time it was captured)."""
        return time.time() - (self._monotonic() - (self._start_mono + pos_s))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container, self._codec = None, None
            self._packets = iter(())

    # Decoding

    def _feed_next(self) -> bool:
        """Read and decode the next video packet; False at the end of the stream."""
        try:
            while True:
                packet = next(self._packets, None)
                if packet is None:
                    return False
                if packet.size:  # the demuxer ends with an empty packet per stream
                    break
        except (av.FFmpegError, OSError):
            raise SourceError(f"video source {self.name} stopped sending frames") from None
        # A live stream's own frame rate is often unknown (MJPEG) or wrong (a camera that lowers it at
        # night): its position is the arrival time, what sampling to detect_fps needs.
        pos_s = self._monotonic() - self._start_mono if self.is_live else self._index / self.fps
        self._index += 1
        slot = _Slot(packet, pos_s)
        self._slots.append(slot)
        if packet.is_keyframe:
            self._gop = [slot]
            self._await_key = False
        elif self._gop and len(self._gop) < MAX_GOP_PACKETS:
            self._gop.append(slot)
        elif self._gop:
            self._gop = None
        if self._await_key or (self._skipping and not packet.is_keyframe):
            slot.resolved = True  # skipped (or no reference to decode it from): not even parsed
            return True
        self._decode(slot)
        if self._skipping and self._pending:
            # The decoder holds the key frame (frame threads, or a reorder buffer that only decoded
            # pictures move on): take it out now rather than at the next key frame. Nothing to keep.
            self._flush()
        return True

    def _decode(self, slot: _Slot | None) -> None:
        """Feed one packet (None: drain) and give the pictures out to the pending slots, in order."""
        assert self._codec is not None
        if slot is not None:
            self._pending.append(slot)
            if slot.packet.pts is not None:
                self._in_flight.append(slot.packet.pts)
        try:
            frames = self._codec.decode(None if slot is None else slot.packet)
        except av.InvalidDataError:
            frames = []  # a damaged packet: no picture for it, the stream goes on
        except av.FFmpegError:
            raise SourceError(f"video source {self.name}: cannot decode") from None
        for frame in frames:
            if frame.pts is not None:
                if frame.pts not in self._in_flight:  # its packet was given up on too early
                    self._lag += 1
                    continue
                # Pictures come out in presentation order: the packets before it gave none.
                for pts in [p for p in self._in_flight if p < frame.pts]:
                    self._in_flight.remove(pts)
                    self._resolve(None)
                self._in_flight.remove(frame.pts)
            self._resolve(frame)
        if slot is not None:
            codec = self._codec
            threads = codec.thread_count - 1 if ThreadType.FRAME in codec.thread_type else 0
            self._lag = max(self._lag, threads + codec.reorder_depth)
            while len(self._pending) > self._lag:  # skipped, or dropped by the decoder
                if self._in_flight:
                    self._in_flight.remove(min(self._in_flight))
                self._resolve(None)

    def _resolve(self, frame: VideoFrame | None) -> None:
        if not self._pending:
            return  # more pictures than packets (never seen): nowhere to show it
        slot = self._pending.popleft()
        slot.resolved, slot.decoded = True, frame is not None
        slot.frame = None if slot.hidden else frame

    def _drain(self) -> None:
        """End of the stream or a decoder flush: every picture out, the pending packets gave none."""
        if self._pending:
            self._decode(None)
        while self._pending:
            self._resolve(None)
        self._in_flight.clear()

    def _flush(self) -> None:
        """Every picture out of the decoder, and a decoder ready for new packets (without references)."""
        assert self._codec is not None
        self._drain()
        self._codec.flush_buffers()

    def _switch(self) -> None:
        assert self._codec is not None
        self._skipping = self.keyframes_only
        self._codec.skip_frame = "NONKEY" if self._skipping else "DEFAULT"
        if self._skipping:
            self._flush()  # the pictures in the decoder come out now, not after the next key frame
            return
        if self._gop is None:
            self._await_key = True  # the GOP is too long to keep: wait for the next key frame
            return
        if not self._gop:
            return  # no key frame since the decoder started: nothing to reference yet
        # The P-frames to come reference pictures that the decoder skipped, or forgot when flushed:
        # decode again from the key frame.
        self._flush()
        gop = self._gop
        queued = [slot for slot in self._slots if slot not in gop]
        redo: list[_Slot] = []
        for old in gop:
            new = _Slot(old.packet, old.pos_s)
            if old.emitted:
                new.emitted = new.hidden = old.decoded  # returned already: feeds the decoder only
                new.catch_up = not old.decoded
            redo.append(new)
        self._gop = redo
        self._slots = deque(queued + [slot for slot in redo if not slot.hidden])
        for slot in redo:
            self._decode(slot)


def check_video_file(path: str) -> int:
    """Read a video file's packets (no decoding but the first pictures) and return how many it has;
    :class:`SourceError` with the file and the reason when it is not a video or is cut short.

    Demuxing a whole file takes milliseconds where decoding it takes seconds: a replay (``evaluate``)
    checks its clip this way before starting anything, so a file that cannot be replayed ends the
    command at once instead of being retried as a camera would be. A file cut mid-way has fewer
    packets than its index declares (or no index at all, when it was written at the end).
    """
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise SourceError(f"{path}: not a video file that can be read ({str(reason).lower()})") from None
    try:
        if not container.streams.video:
            raise SourceError(f"{path}: has no video stream")
        stream: VideoStream = container.streams.video[0]
        declared = stream.frames or 0
        packets, pictures = 0, 0
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                packets += 1
                if not pictures and packets <= 30:  # the first pictures: is the codec readable at all?
                    with contextlib.suppress(av.InvalidDataError):
                        pictures += len(stream.codec_context.decode(packet))
        except (av.FFmpegError, OSError):
            raise SourceError(f"{path}: damaged after {packets} frames") from None
        if packets == 0:
            raise SourceError(f"{path}: has no video frame")
        if not pictures:
            with contextlib.suppress(av.FFmpegError):
                pictures = len(stream.codec_context.decode(None))
            if not pictures:
                raise SourceError(f"{path}: no picture can be decoded from its first frames")
        if declared and packets < declared:
            raise SourceError(f"{path}: truncated ({packets} of its {declared} frames are in the file)")
        return packets
    finally:
        container.close()
