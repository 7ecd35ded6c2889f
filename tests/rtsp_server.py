"""A real RTSP server (GStreamer's gst-rtsp-server) serving a shipped clip, for the camera tests.

python3-gi exists only for Debian's own interpreter, so this runs as its own process under
``/usr/bin/python3``, never inside the project's virtual environment:

    /usr/bin/python3 tests/rtsp_server.py CLIP [--port 0] [--path /cam]

It prints ``READY <port>`` on stdout once clients can connect, then serves until killed. Every client
gets its own pipeline from the start of the clip (a camera that reconnects starts on a key frame); the
H.264 stream is sent as recorded (no re-encoding: cheap), paced by the server's clock like a camera.
Both transports are offered: RTP over the RTSP TCP connection and RTP over UDP.
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/cam")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    clip = args.clip.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(f'( filesrc location="{clip}" ! qtdemux ! h264parse ! '
                       "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print(f"READY {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
