"""The ``http`` action against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.masking import Masker
from runbook_engine.plugins.http import BODY_OUTPUT, HttpAction
from tests.servers.http import HttpServer, free_port

pytestmark = pytest.mark.servers


def SecretMask(*values: str) -> Masker:
    return Masker({str(i): v for i, v in enumerate(values)})


def run(params: dict[str, Any], ctx: Any) -> Any:
    return HttpAction().run(params, ctx)


def test_get_returns_status_json_body_and_headers(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/info", json_body={"version": "2.1", "ready": True})
    out = run({"url": f"{http_server.url}/info"}, make_ctx())
    assert out["status"] == 200
    assert out["json"] == {"version": "2.1", "ready": True}
    assert '"version": "2.1"' in out["body"]
    assert out["headers"]["Content-Type"] == "application/json"
    (req,) = http_server.requests_to("/info")
    assert req.method == "GET"
    assert req.headers["User-Agent"].startswith("runbook/")


def test_post_json_with_headers_reaches_the_server(http_server: HttpServer, make_ctx: Any) -> None:
    params = {
        "method": "POST",
        "url": f"{http_server.url}/deploy",
        "headers": {"Authorization": "Bearer tok-123", "X-Wave": "pilot"},
        "json": {"wave": "pilot", "percent": 1},
    }
    out = run(params, make_ctx())
    assert out["status"] == 200 and out["json"] == {"ok": True}
    (req,) = http_server.requests_to("/deploy")
    assert req.method == "POST"
    assert req.json == {"wave": "pilot", "percent": 1}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Authorization"] == "Bearer tok-123"
    assert req.headers["X-Wave"] == "pilot"


def test_raw_body_is_sent_as_is(http_server: HttpServer, make_ctx: Any) -> None:
    run({"method": "PUT", "url": f"{http_server.url}/raw", "body": "a=1\nb=2"}, make_ctx())
    assert http_server.requests_to("/raw")[0].body == b"a=1\nb=2"


def test_unexpected_status_fails_with_status_and_body_excerpt(
    http_server: HttpServer, make_ctx: Any
) -> None:
    http_server.respond("/boom", 500, text="database is on fire\n" + "x" * 5000)
    with pytest.raises(ActionFailed) as exc:
        run({"url": f"{http_server.url}/boom"}, make_ctx())
    err = exc.value
    assert (
        err.message
        == f"GET {http_server.url}/boom returned 500 Internal Server Error, expected 2xx"
    )
    assert "    database is on fire" in err.details
    assert len(err.details) < 1200  # bounded excerpt
    assert err.outputs["status"] == 500


def test_expect_status_accepts_a_listed_code(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/gone", 404, json_body={"error": "no such user"})
    out = run({"url": f"{http_server.url}/gone", "expect_status": [404, 410]}, make_ctx())
    assert out["status"] == 404 and out["json"] == {"error": "no such user"}


def test_expect_status_rejects_a_2xx_not_listed(http_server: HttpServer, make_ctx: Any) -> None:
    with pytest.raises(ActionFailed, match=r"returned 200 OK, expected 201 or 202"):
        run({"url": f"{http_server.url}/x", "expect_status": [201, 202]}, make_ctx())


def test_connection_refused(make_ctx: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(ActionFailed) as exc:
        run({"method": "POST", "url": url, "json": {}}, make_ctx())
    assert exc.value.message == f"POST {url} failed: connection refused"


def test_dropped_connection(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/drop", drop=True)
    with pytest.raises(ActionFailed, match="closed the connection without a reply"):
        run({"url": f"{http_server.url}/drop"}, make_ctx())


def test_slow_reply_times_out_within_the_step_timeout(
    http_server: HttpServer, make_ctx: Any
) -> None:
    http_server.respond("/slow", delay=30)
    with pytest.raises(ActionFailed, match=r"/slow failed: timed out after"):
        run({"url": f"{http_server.url}/slow"}, make_ctx(timeout=0.3))


def test_cancel_stops_waiting(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/slow", delay=30)
    ctx = make_ctx()
    ctx.cancel.set()
    with pytest.raises(ActionFailed, match="failed: interrupted"):
        run({"url": f"{http_server.url}/slow"}, ctx)


def test_secrets_are_masked_in_messages(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/api", 403, text="bad token tok-SECRET-9")
    params = {
        "url": f"{http_server.url}/api?token=tok-SECRET-9",
        "headers": {"Authorization": "Bearer tok-SECRET-9"},
    }
    with pytest.raises(ActionFailed) as exc:
        run(params, make_ctx(masker=SecretMask("tok-SECRET-9")))
    assert "tok-SECRET-9" not in exc.value.message + exc.value.details
    assert "token=***" in exc.value.message and "bad token ***" in exc.value.details
    assert http_server.requests_to("/api")[0].headers["Authorization"] == "Bearer tok-SECRET-9"


def test_long_body_is_bounded_in_outputs(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/big", text="y" * (BODY_OUTPUT * 3))
    out = run({"url": f"{http_server.url}/big"}, make_ctx())
    assert out["json"] is None
    assert len(out["body"]) == BODY_OUTPUT + 1 and out["body"].endswith("…")


def test_json_and_body_together_are_refused(http_server: HttpServer, make_ctx: Any) -> None:
    with pytest.raises(ActionFailed, match="give `json` or `body`, not both"):
        run({"url": http_server.url, "json": {}, "body": "x"}, make_ctx())
    assert http_server.requests == []


def test_validate_locates_a_bad_expect_status(runbook: Any, tmp_path: Path) -> None:
    f = tmp_path / "rb.yaml"
    f.write_text(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: h}\nphases:\n"
        "  - id: p\n    steps:\n"
        "      - id: call\n        action: http\n        rollback: none\n"
        "        with: {url: 'http://127.0.0.1:1/x', expect_status: 99}\n"
    )
    r = runbook("validate", str(f))
    assert r.code == 2
    assert "rb.yaml:10:" in r.output and "with.expect_status" in r.output
