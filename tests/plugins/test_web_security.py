"""SPEC §9 for what goes over the wire: redirects never carry credentials to another host,
header values never carry a line break, values in a URL's path and query are encoded.
Real servers: two ThreadingHTTPServers on two loopback addresses, a real SMTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.masking import Masker
from runbook_engine.plugins.check import CheckAction
from runbook_engine.plugins.http import HttpAction
from runbook_engine.plugins.notify.action import NotifyAction
from tests.engine.helpers import journal, runbook_yaml
from tests.servers.http import HttpServer

pytestmark = pytest.mark.servers

TOKEN = "tok-9f8e7d"


class Recorder:
    """A real HTTP server on ``host`` that answers ``/go`` with a redirect to ``target`` and
    anything else with JSON; it keeps every request's path and headers."""

    def __init__(self, host: str, target: str | None = None) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.seen.append((self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if self.path.startswith("/go") and target:
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"value": 1, "ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def two_hosts() -> Iterator[tuple[Recorder, Recorder, Recorder]]:
    """(elsewhere, here, same): ``here`` redirects /go to ``elsewhere`` (another address and
    port), ``same`` redirects /go to its own /landing (the same origin)."""
    elsewhere = Recorder("127.0.0.2")
    here = Recorder("127.0.0.1", f"{elsewhere.url}/landing")
    same = Recorder("127.0.0.1", "/landing")
    try:
        yield elsewhere, here, same
    finally:
        for s in (elsewhere, here, same):
            s.stop()


def _masked_ctx(make_ctx: Any) -> Any:
    return make_ctx(masker=Masker({"api": TOKEN}))


CREDENTIALS = {
    "Authorization": "Bearer abc",
    "Cookie": "session=s1",
    "X-Api-Key": TOKEN,  # holds a declared secret
    "X-Wave": "pilot",
}


def _landing(server: Recorder) -> dict[str, str]:
    (hit,) = [h for p, h in server.seen if p == "/landing"]
    return {k.lower(): v for k, v in hit.items()}


def test_http_redirect_to_another_host_drops_authorization_cookie_and_secret_headers(
    two_hosts: tuple[Recorder, Recorder, Recorder], make_ctx: Any
) -> None:
    elsewhere, here, same = two_hosts
    out = HttpAction().run({"url": f"{here.url}/go", "headers": CREDENTIALS}, _masked_ctx(make_ctx))
    assert out["status"] == 200
    got = _landing(elsewhere)
    assert "authorization" not in got and "cookie" not in got and "x-api-key" not in got
    assert got["x-wave"] == "pilot"  # ordinary headers still follow
    # the first host did get them: they were meant for it
    first = {k.lower(): v for k, v in here.seen[0][1].items()}
    assert first["authorization"] == "Bearer abc" and first["x-api-key"] == TOKEN
    # a redirect within the same origin keeps them
    HttpAction().run({"url": f"{same.url}/go", "headers": CREDENTIALS}, _masked_ctx(make_ctx))
    kept = _landing(same)
    assert kept["authorization"] == "Bearer abc" and kept["cookie"] == "session=s1"


def test_check_url_redirect_to_another_host_drops_authorization(
    two_hosts: tuple[Recorder, Recorder, Recorder], make_ctx: Any
) -> None:
    elsewhere, here, _same = two_hosts
    params = {
        "url": f"{here.url}/go",
        "json_path": "value",
        "condition": "value == 1",
        "headers": CREDENTIALS,
    }
    out = CheckAction().run(params, _masked_ctx(make_ctx))
    assert out["passed"] == 1
    got = _landing(elsewhere)
    assert not {"authorization", "cookie", "x-api-key"} & set(got)


def test_webhook_redirect_to_another_host_drops_authorization(
    two_hosts: tuple[Recorder, Recorder, Recorder], make_ctx: Any
) -> None:
    elsewhere, here, _same = two_hosts
    params = {
        "channel": "webhook",
        "url": f"{here.url}/go",
        "message": "wave pilot done",
        "headers": CREDENTIALS,
    }
    # a POST answered by 302 is re-sent as a GET by urllib: the landing sees no credential
    NotifyAction().run(params, _masked_ctx(make_ctx))
    got = _landing(elsewhere)
    assert not {"authorization", "cookie", "x-api-key"} & set(got)


def test_http_header_with_a_line_break_is_refused_before_sending(
    http_server: HttpServer, make_ctx: Any
) -> None:
    with pytest.raises(ActionFailed) as info:
        HttpAction().run(
            {"url": f"{http_server.url}/x", "headers": {"X-Customer": "a\r\nX-Admin: yes"}},
            make_ctx(),
        )
    assert "header 'X-Customer': a line break (CR or LF) in a header is refused" in str(info.value)
    assert info.value.retryable is False
    assert http_server.requests == []  # nothing went out


def _apply(runbook: Any, tmp: Path, doc: str) -> Any:
    (tmp / "r.yaml").write_text(doc)
    return runbook("apply", "r.yaml", "--yes")


def test_values_in_a_url_path_and_query_are_percent_encoded(
    http_server: HttpServer, runbook: Any
) -> None:
    nasty = "a/../admin?x=1&y=2#frag"
    doc = runbook_yaml(
        vars={"api": http_server.url, "key": nasty},
        phases=[
            {
                "id": "p",
                "steps": [
                    {
                        "id": "call",
                        "action": "http",
                        "with": {"url": "{{ vars.api }}/customers/{{ vars.key }}?q={{ vars.key }}"},
                        "rollback": "none",
                    },
                    {
                        "id": "raw",
                        "action": "http",
                        "with": {"url": "{{ vars.api }}/{{ 'literal/path' | raw }}"},
                        "rollback": "none",
                    },
                ],
            }
        ],
    )
    r = _apply(runbook, Path.cwd(), doc)
    assert r.code == 0, r.output
    paths = [req.path for req in http_server.requests]
    assert paths == ["/customers/a%2F..%2Fadmin%3Fx%3D1%26y%3D2%23frag", "/literal/path"]


def test_email_header_injection_fails_that_recipient_only(runbook: Any) -> None:
    doc = runbook_yaml(
        phases=[
            {
                "id": "p",
                "steps": [
                    {
                        "id": "tell",
                        "action": "notify",
                        "with": {
                            "channel": "outbox",
                            "outbox": "out",
                            "to": [
                                {"address": "ok@example.com", "name": "Ana"},
                                {
                                    "address": "evil@example.com",
                                    "name": "Eve\r\nBcc: everyone@example.com",
                                },
                            ],
                            "subject": "Hello {{ recipient.name }}",
                            "message": "hi",
                        },
                        "rollback": "none",
                    }
                ],
            }
        ],
    )
    r = _apply(runbook, Path.cwd(), doc)
    assert r.code == 1
    assert (
        "1 of 2 recipient(s) refused: evil@example.com (the To header would contain a line "
        "break (CR or LF): refused)"
    ) in r.output
    files = list(Path("out").glob("*.eml"))
    assert len(files) == 1
    assert b"Bcc" not in files[0].read_bytes() and b"To: Ana <ok@example.com>" in (
        files[0].read_bytes()
    )
    step = [e for e in journal(".runbook", "t") if e.get("t") == "step" and e.get("id") == "tell"]
    assert step[-1]["status"] == "failed"
