"""A loopback webhook receiver for tests: records each accepted POST and answers scripted faults."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookSink:
    """A loopback webhook at ``url`` (ending in ``path``): records each accepted POST as (path,
    headers, JSON body) in ``received``; ``fail(status, n)`` answers the next ``n`` requests with
    ``status`` instead. ``requests`` counts every POST, accepted or not."""

    def __init__(self, path: str = "/hook") -> None:
        self.received: list[tuple[str, dict[str, str], Any]] = []
        self.requests = 0
        self._faults: list[tuple[int, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests += 1
                status, headers = outer._faults.pop(0) if outer._faults else (200, {})
                if status == 200:
                    outer.received.append((self.path, dict(self.headers.items()), json.loads(body)))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def bodies(self) -> list[Any]:
        """The JSON body of each accepted POST, in arrival order."""
        return [body for _, _, body in self.received]

    def fail(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self._faults.extend((status, headers) for _ in range(count))

    def groups(self) -> list[tuple[str, str]]:
        """(groupKey, status) of each accepted body (Alertmanager's webhook JSON), in arrival order."""
        return [(b["groupKey"], b["status"]) for b in self.bodies]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
