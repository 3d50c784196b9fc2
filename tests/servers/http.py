"""A real HTTP server on 127.0.0.1 for webhooks, metrics endpoints and failure injection.

``http_server`` starts a ``ThreadingHTTPServer`` on a free port in a thread and stops it at
teardown.  It records every request; ``GET /metrics`` serves
``{"metrics": {"error_rate": V}, "items": [{"value": V}]}`` where V is ``server.metric`` (or the
next of ``server.metric_values`` while any are left); ``respond(path, ...)`` plans replies for
a path: a status, a JSON or text body, a delay, or a connection dropped without a reply.
Anything else gets ``200 {"ok": true}``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Planned:
    status: int = 200
    body: bytes = b'{"ok": true}'
    content_type: str = "application/json"
    delay: float = 0.0
    drop: bool = False
    times: int | None = None  # None: every request


@dataclass
class HttpServer:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    metric: Any = 0.0
    metric_values: list[Any] = field(default_factory=list)
    planned: dict[str, list[Planned]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def respond(
        self,
        path: str,
        status: int = 200,
        *,
        json_body: Any = None,
        text: str | None = None,
        delay: float = 0.0,
        drop: bool = False,
        times: int | None = None,
    ) -> None:
        """Plan the reply to ``path`` (the next ``times`` requests, or all of them)."""
        if text is not None:
            body, ctype = text.encode(), "text/plain; charset=utf-8"
        else:
            body, ctype = (
                json.dumps(json_body if json_body is not None else {}).encode(),
                ("application/json"),
            )
        plan = Planned(status, body, ctype, delay, drop, times)
        with self.lock:
            self.planned.setdefault(path, []).append(plan)

    def requests_to(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def _next_plan(self, path: str) -> Planned | None:
        with self.lock:
            plans = self.planned.get(path, [])
            while plans:
                plan = plans[0]
                if plan.times is None:
                    return plan
                if plan.times > 0:
                    plan.times -= 1
                    return plan
                plans.pop(0)
            return None

    def _metric(self) -> Any:
        with self.lock:
            return self.metric_values.pop(0) if self.metric_values else self.metric

    def start(self) -> HttpServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests read ``requests``

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with owner.lock:
                    owner.requests.append(Recorded(self.command, path, dict(self.headers), body))
                plan = owner._next_plan(path)
                if plan is None and path == "/metrics" and self.command == "GET":
                    value = owner._metric()
                    payload = {"metrics": {"error_rate": value}, "items": [{"value": value}]}
                    plan = Planned(body=json.dumps(payload).encode())
                plan = plan or Planned()
                if plan.delay and owner.stopping.wait(plan.delay):
                    return
                if plan.drop:
                    self.close_connection = True
                    return  # no status line: the client sees the connection closed
                self.send_response(plan.status)
                self.send_header("Content-Type", plan.content_type)
                self.send_header("Content-Length", str(len(plan.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(plan.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        server = ThreadingHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer().start()
    try:
        yield server
    finally:
        server.stop()
