#!/usr/bin/env python3
"""A fake payment provider for the subscription demo: a real HTTP server on 127.0.0.1 that
takes each subscriber's payment method into its vault, one call per subscriber, the way a
payment provider's migration API does. Standard library only.

    python runbooks/examples/fake_provider.py --port-file demo/provider.port

    POST   /v1/customers/KEY/payment-method   move KEY's payment method in: 201 (200 when a
                                              call with the same Idempotency-Key already did)
    DELETE /v1/customers/KEY/payment-method   take it out again (a rollback): 200
    GET    /stats                             what it saw, as JSON (calls per Idempotency-Key,
                                              moved, declined, rate-limited, early retries)

Like a real provider it
- de-duplicates on the ``Idempotency-Key`` header: a call re-sent with the key of a call that
  succeeded moves nothing again and gets the first answer back;
- fails a few customers once: the first call for a customer whose key is a multiple of
  ``--fail-once-every`` (default 97) gets ``503 Service Unavailable`` (no Retry-After), the
  next one succeeds (the runbook's step retries it);
- declines customers, every time, when asked: ``422 card token expired`` (those whose key is
  a multiple of ``--decline-every``, default 0: none, and those named by ``--decline``);
- rate-limits: a token bucket of ``--rate`` calls per second (``--burst`` at once); a call
  over it gets ``429 Too Many Requests`` with ``Retry-After`` (whole seconds). A call with the
  same key that comes back sooner than it was told is counted as an early retry.

The port is chosen free (port 0) unless ``--port`` says; ``--port-file`` receives it once the
server listens (written atomically). SIGTERM or SIGINT stops it: it prints one line of what it
saw and exits 0. With ``--run COMMAND`` it serves only while ``sh -c COMMAND`` runs (the URL in
``$PROVIDER_URL``), stops whatever the command's end and exits with its status: how the
Makefile's demos start and stop it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PATH = "/v1/customers/"
SUFFIX = "/payment-method"


class Vault:
    """What the provider holds and what it saw; every method is thread-safe."""

    def __init__(
        self, decline_every: int, decline: set[str], rate: float, burst: int, fail_once: int = 0
    ) -> None:
        self.fail_once = fail_once
        self.failed: Counter[str] = Counter()  # per customer: answered 503 (once)
        self.decline_every = decline_every
        self.decline = decline
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.refilled = time.monotonic()
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # per Idempotency-Key, every call
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}  # per key, a success's answer
        self.moved: dict[str, str] = {}  # customer -> payment method id in the vault
        self.moves: Counter[str] = Counter()  # per customer: payment methods really moved in
        self.removed: Counter[str] = Counter()  # per customer: taken out again (rollbacks)
        self.declined: Counter[str] = Counter()  # per customer
        self.limited: Counter[str] = Counter()  # per key: answered 429
        self.retry_at: dict[str, float] = {}  # per key: not before (after a 429)
        self.early = 0  # calls that came back before their Retry-After
        self.replayed = 0
        self.unkeyed = 0
        self.requests = 0

    def _declines(self, customer: str) -> bool:
        if customer in self.decline:
            return True
        return (
            self.decline_every > 0
            and customer.isdigit()
            and int(customer) % self.decline_every == 0
        )

    def _token(self, now: float) -> float:
        """0 when a call may go now (a token taken), else the seconds until one is there."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(float(self.burst), self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def call(
        self, method: str, customer: str, key: str | None
    ) -> tuple[int, str, dict[str, Any], dict[str, str]]:
        """(status, reason, JSON body, headers) for one call."""
        now = time.monotonic()
        with self.lock:
            self.requests += 1
            if key is None:
                self.unkeyed += 1
            else:
                self.calls[key] += 1
                if now < self.retry_at.get(key, 0.0):
                    self.early += 1
                if key in self.answers:
                    self.replayed += 1
                    status, body = self.answers[key]
                    return status, "OK", body, {"Idempotent-Replayed": "true"}
            wait = self._token(now)
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                if key is not None:
                    self.limited[key] += 1
                    self.retry_at[key] = now + seconds
                body = {"error": "rate_limited", "retry_after": seconds}
                return 429, "Too Many Requests", body, {"Retry-After": str(seconds)}
            if (
                method == "POST"
                and self.fail_once > 0
                and customer.isdigit()
                and int(customer) % self.fail_once == 0
                and not self.failed[customer]
            ):
                self.failed[customer] += 1
                return 503, "Service Unavailable", {"error": "try_again"}, {}
            if method == "DELETE":
                self.moved.pop(customer, None)
                self.removed[customer] += 1
                status, body = 200, {"customer": customer, "removed": True}
            elif self._declines(customer):
                self.declined[customer] += 1
                return 422, "card token expired", {"error": "card_token_expired"}, {}
            else:
                if customer not in self.moved:
                    self.moves[customer] += 1
                    self.moved[customer] = f"pm_{customer}_{self.moves[customer]}"
                status, body = 201, {"customer": customer, "payment_method": self.moved[customer]}
            if key is not None:
                self.answers[key] = (status, body)
            return status, "Created" if status == 201 else "OK", body, {}

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "calls": dict(self.calls),
                "moved": sorted(self.moved),
                "moves": dict(self.moves),
                "removed": dict(self.removed),
                "declined": dict(self.declined),
                "failed_once": dict(self.failed),
                "limited": dict(self.limited),
                "early_retries": self.early,
                "replayed": self.replayed,
                "unkeyed": self.unkeyed,
            }

    def summary(self) -> str:
        s = self.stats()
        keys, calls = len(s["calls"]), sum(s["calls"].values())
        limited, declined = sum(s["limited"].values()), sum(s["declined"].values())
        twice = sum(1 for n in s["moves"].values() if n > 1)
        return (
            f"fake provider: {s['requests']:,} calls for {keys:,} idempotency keys; "
            f"{len(s['moved']):,} payment methods in the vault ({twice} moved twice), "
            f"{sum(s['removed'].values()):,} taken out again; {len(s['failed_once'])} customers "
            f"failed once (503) and retried; {declined:,} calls declined "
            f"({len(s['declined'])} customers); {limited:,} answered 429 + Retry-After, "
            f"{s['early_retries']} retried early; {s['replayed']} replayed by key; "
            f"{s['unkeyed']} without an Idempotency-Key ({calls:,} with one)"
        )


def handler(vault: Vault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for clients that want it
        # headers and body go out in two writes: without TCP_NODELAY the body waits for the
        # client's delayed ACK (40 ms a call)
        disable_nagle_algorithm = True

        def _answer(self, status: int, reason: str, body: Any, headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status, reason)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _customer(self) -> str | None:
            path = self.path.split("?", 1)[0]
            if path.startswith(PATH) and path.endswith(SUFFIX):
                customer = path[len(PATH) : -len(SUFFIX)]
                return customer if customer and "/" not in customer else None
            return None

        def _move(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            customer = self._customer()
            if customer is None:
                self._answer(404, "Not Found", {"error": "not_found"}, {})
                return
            self._answer(*vault.call(method, customer, self.headers.get("Idempotency-Key")))

        def do_POST(self) -> None:
            self._move("POST")

        def do_DELETE(self) -> None:
            self._move("DELETE")

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._answer(200, "OK", vault.stats(), {})
            else:
                self._answer(404, "Not Found", {"error": "not_found"}, {})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class Server(ThreadingHTTPServer):
    """A thread per connection; a listen backlog of 256 (socketserver's 5 resets a burst of
    concurrent connects)."""

    request_queue_size = 256
    daemon_threads = True


def _write_port(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def _serve_during(server: Server, vault: Vault, command: str, port: int) -> int:
    """The server in a thread while ``command`` runs; stopped whatever the command's end (a
    failure, Ctrl-C), then one line of what it saw."""
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    serving.daemon = True
    serving.start()
    env = {**os.environ, "PROVIDER_URL": f"http://127.0.0.1:{port}"}
    code = 1
    try:
        code = subprocess.call(["sh", "-c", command], env=env)
    except KeyboardInterrupt:
        code = 130
    finally:
        server.shutdown()
        server.server_close()
        print(vault.summary(), flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fake_provider.py", description="A fake payment provider for the subscription demo."
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument(
        "--fail-once-every", type=int, default=97, metavar="N",
        help="answer 503 to the first call for customers whose key is a multiple of N (default 97; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--decline-every", type=int, default=0, metavar="N",
        help="decline customers whose key is a multiple of N, every time (default 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--decline", default="", metavar="KEYS", help="comma-separated customer keys to decline"
    )
    parser.add_argument(
        "--rate", type=float, default=400.0,
        help="calls per second before 429 + Retry-After (default 400; 0: no limit)",
    )  # fmt: skip
    parser.add_argument("--burst", type=int, default=100, help="calls at once (default 100)")
    parser.add_argument(
        "--run", metavar="COMMAND",
        help="serve while COMMAND runs (sh -c, with PROVIDER_URL set), then stop; "
        "exit with COMMAND's status",
    )  # fmt: skip
    args = parser.parse_args(argv)
    decline = {k.strip() for k in args.decline.split(",") if k.strip()}
    vault = Vault(args.decline_every, decline, args.rate, max(1, args.burst), args.fail_once_every)
    server = Server(("127.0.0.1", args.port), handler(vault))
    port = int(server.server_address[1])
    if args.run is not None:
        return _serve_during(server, vault, args.run, port)

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file is not None:
        _write_port(args.port_file, port)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    print(vault.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
