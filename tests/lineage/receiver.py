"""A Marquez-compatible lineage endpoint for tests: ``POST /api/v1/lineage`` answers 201 (or a chosen
status) and keeps the events, in arrival order; it runs on 127.0.0.1 in a daemon thread."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class MarquezReceiver:
    def __init__(self, status: int = 201) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = self.path == "/api/v1/lineage"
                if ok and status < 300:
                    with receiver._lock:
                        receiver.events.append(json.loads(body))
                self.send_response(status if ok else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="marquez-receiver", daemon=True)
        self.thread.start()

    def received(self) -> list[dict[str, Any]]:
        """A copy of the events so far."""
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
