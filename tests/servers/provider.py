"""A fake payment provider on 127.0.0.1: a real HTTP server that moves one customer per call,
counts the calls per ``Idempotency-Key``, fails the customers it is told to, rate-limits with
``429`` + ``Retry-After`` on a first call when asked, and can answer slowly. Started by the
``provider`` fixture in a thread, stopped at teardown."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Provider:
    fail: set[Any] = field(default_factory=set)  # customers answered 500
    limited: set[Any] = field(default_factory=set)  # customers answered 429 the first time
    retry_after: int = 1
    declined: set[Any] = field(default_factory=set)  # customers answered 422 (permanent)
    always_limited: set[Any] = field(default_factory=set)  # answered 429 every time
    headers: list[dict[str, str]] = field(default_factory=list)  # every request's headers
    delay: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)  # per Idempotency-Key
    customers: Counter[Any] = field(default_factory=Counter)  # per customer in the body
    moved: set[Any] = field(default_factory=set)
    deleted: Counter[Any] = field(default_factory=Counter)
    unkeyed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)  # cuts the delays short
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(
        self, method: str, key: str | None, doc: dict[str, Any]
    ) -> tuple[int, dict[str, str]]:
        customer = doc.get("customer")
        with self.lock:
            if key is None:
                self.unkeyed += 1
            else:
                self.calls[key] += 1
            self.customers[customer] += 1
            first = self.customers[customer] == 1
        if self.delay:
            self.stopping.wait(self.delay)
        if customer in self.always_limited or (customer in self.limited and first):
            return 429, {"Retry-After": str(self.retry_after)}
        if customer in self.declined:
            return 422, {}
        if customer in self.fail:
            return 500, {}
        with self.lock:
            if method == "DELETE":
                self.deleted[customer] += 1
                self.moved.discard(customer)
            else:
                self.moved.add(customer)
        return 200, {}


def _handler(p: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self, method: str) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b"{}"
            if len(raw) < n:  # the client died mid-request: nothing arrived to act on
                self.close_connection = True
                return
            try:
                doc = json.loads(raw or b"{}")
            except ValueError:
                self.send_error(400, "body is not JSON")
                return
            with p.lock:
                p.headers.append(dict(self.headers.items()))
            status, headers = p.handle(method, self.headers.get("Idempotency-Key"), doc)
            body = json.dumps({"ok": status == 200}).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self._any("POST")

        def do_DELETE(self) -> None:
            self._any("DELETE")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog (socketserver's 5 resets bursts of connections)


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    server = _Server(("127.0.0.1", 0), _handler(p))
    server.daemon_threads = True
    p.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield p
    finally:
        p.stopping.set()  # a slow answer still under way does not outlive the test
        server.shutdown()
        server.server_close()
