"""A real HTTP server on loopback that takes apprise's ``json://`` notifications (the on-call contact's
end), for the tests and the alert latency benchmark."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """An HTTP server that records the JSON bodies apprise posts, by path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any], float]] = []
        self.failing: set[str] = set()
        """Paths that answer 503 (a gateway down): their posts go to ``refused``, not ``posts``."""
        self.refused: list[str] = []
        self.on_post: Callable[[str], None] | None = None
        """Called with the path once a post is accepted, before the answer (a fault to inject then)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path in outer.failing:
                    outer.refused.append(self.path)
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.posts.append((self.path, json.loads(body), time.time()))
                if outer.on_post is not None:
                    outer.on_post(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [p for p, _, _ in self.posts]

    def wait_for(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.time() + timeout
        while len(self.posts) < count and time.time() < deadline:
            time.sleep(0.05)
        assert len(self.posts) >= count, self.paths()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
