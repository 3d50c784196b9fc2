"""The ``check`` gate: values from a real HTTP server, a real SQLite file and real commands."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.check import CheckAction
from tests.servers.http import HttpServer

pytestmark = pytest.mark.servers


def run(params: dict[str, Any], ctx: Any) -> Any:
    return CheckAction().run(params, ctx)


def measured(make_ctx: Any) -> list[dict[str, Any]]:
    return [dict(d) for kind, d in make_ctx.events if kind == "check.measured"]


def test_command_gate_passes_and_emits_every_measurement(make_ctx: Any) -> None:
    params = {"command": "echo 0.01", "condition": "value < 0.02", "count": 3, "interval": "0s"}
    out = run(params, make_ctx())
    assert out == {"values": [0.01, 0.01, 0.01], "passed": 3, "failed": 0}
    assert measured(make_ctx) == [
        {"index": i, "value": 0.01, "passed": True, "condition": "value < 0.02"} for i in range(3)
    ]


def test_url_gate_fails_once_past_the_failure_limit(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.metric_values = [0.01, 0.05, 0.01, 0.06, 0.01]
    params = {
        "url": f"{http_server.url}/metrics",
        "json_path": "metrics.error_rate",
        "condition": "value < 0.02",
        "count": 5,
        "interval": 0,
        "failure_limit": 1,
    }
    with pytest.raises(ActionFailed) as exc:
        run(params, make_ctx())
    assert exc.value.message == (
        "check failed: 2 of 4 measurement(s) failed `value < 0.02` (failure_limit 1); "
        "values: [0.01, 0.05, 0.01, 0.06]"
    )
    assert exc.value.outputs == {"values": [0.01, 0.05, 0.01, 0.06], "passed": 2, "failed": 2}
    assert [e["passed"] for e in measured(make_ctx)] == [True, False, True, False]
    assert len(http_server.requests_to("/metrics")) == 4  # stopped early: no 5th measurement


def test_url_gate_with_a_list_index_path(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.metric = 7
    params = {"url": f"{http_server.url}/metrics", "json_path": "$.items[0].value"}
    out = run({**params, "condition": "value == 7"}, make_ctx())
    assert out == {"values": [7], "passed": 1, "failed": 0}


def test_query_gate_on_a_sqlite_file(tmp_path: Path, make_ctx: Any) -> None:
    db = tmp_path / "new.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, status TEXT)")
        rows = [(i, "cancelled" if i % 100 == 0 else "active") for i in range(1, 1001)]
        conn.executemany("INSERT INTO customers VALUES (?, ?)", rows)
    params = {
        "dsn": f"sqlite:///{db}",
        "query": "SELECT avg(CASE WHEN status = 'cancelled' THEN 1.0 ELSE 0 END) FROM customers",
        "condition": "value < 0.02",
    }
    out = run(params, make_ctx())
    assert out == {"values": [0.01], "passed": 1, "failed": 0}
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE customers SET status = 'cancelled' WHERE id <= 50")
    with pytest.raises(ActionFailed, match=r"values: \[0\.06\]"):
        run(params, make_ctx())


def test_values_and_run_context_are_bound_in_the_condition(make_ctx: Any) -> None:
    params = {
        "command": "echo 4",
        "condition": "values | sum <= vars.budget",
        "count": 3,
        "interval": 0,
    }
    ctx = make_ctx(template_context={"vars": {"budget": 10}})
    with pytest.raises(ActionFailed) as exc:
        run(params, ctx)
    assert exc.value.outputs == {"values": [4, 4, 4], "passed": 2, "failed": 1}


def test_a_non_number_from_a_command_names_the_command(make_ctx: Any) -> None:
    with pytest.raises(ActionFailed) as exc:
        run({"command": "echo 'n/a'", "condition": "value < 1"}, make_ctx())
    assert exc.value.message == "check: the value from command `echo 'n/a'` is not a number: 'n/a'"
    assert measured(make_ctx) == []


def test_a_non_number_from_json_names_the_url_and_path(
    http_server: HttpServer, make_ctx: Any
) -> None:
    http_server.metric = "unknown"
    url = f"{http_server.url}/metrics"
    with pytest.raises(ActionFailed) as exc:
        run({"url": url, "json_path": "metrics.error_rate", "condition": "value < 1"}, make_ctx())
    assert exc.value.message == (
        f"check: the value from {url} at metrics.error_rate is not a number: 'unknown'"
    )


def test_a_null_from_a_query_is_not_a_number(tmp_path: Path, make_ctx: Any) -> None:
    db = tmp_path / "e.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x REAL)").connection.close()
    params = {"dsn": f"sqlite:///{db}", "query": "SELECT max(x) FROM t", "condition": "value < 1"}
    with pytest.raises(
        ActionFailed, match=r"the value from the query on sqlite:///.*e\.db .* NULL"
    ):
        run(params, make_ctx())


def test_a_missing_json_path(http_server: HttpServer, make_ctx: Any) -> None:
    url = f"{http_server.url}/metrics"
    with pytest.raises(ActionFailed) as exc:
        run({"url": url, "json_path": "metrics.latency.p99", "condition": "value < 1"}, make_ctx())
    assert exc.value.message == (
        f"check: 'metrics.latency.p99' not found in the JSON from {url} (no 'latency' at $.metrics)"
    )


def test_an_unreachable_metrics_endpoint(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/metrics", 503, text="warming up")
    with pytest.raises(ActionFailed) as exc:
        run(
            {"url": f"{http_server.url}/metrics", "json_path": "a", "condition": "value < 1"},
            make_ctx(),
        )
    assert exc.value.message.endswith("/metrics returned 503 Service Unavailable")
    assert "warming up" in exc.value.details


def test_a_failing_command_shows_its_exit_status_and_stderr(make_ctx: Any) -> None:
    with pytest.raises(ActionFailed) as exc:
        run({"command": "echo 'no such metric' >&2; exit 3", "condition": "value < 1"}, make_ctx())
    assert "exited with status 3" in exc.value.message
    assert "    no such metric" in exc.value.details


def test_a_hung_command_is_killed_with_its_process_group(tmp_path: Path, make_ctx: Any) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 60 & echo $! > {pids}; wait"
    with pytest.raises(ActionFailed, match="timed out; killed"):
        run({"command": command, "condition": "value < 1"}, make_ctx(timeout=1.0))
    child = int(pids.read_text())
    stat = Path(f"/proc/{child}/stat")
    for _ in range(100):  # the kill is delivered at once; reaping by init may lag
        if not stat.exists() or stat.read_text().split(") ", 1)[1].startswith("Z"):
            break
        time.sleep(0.05)
    assert not stat.exists() or stat.read_text().split(") ", 1)[1].startswith("Z")


def test_a_bad_condition_is_not_retried(make_ctx: Any) -> None:
    with pytest.raises(ActionFailed) as exc:
        run({"command": "echo 1", "condition": "value < threshold"}, make_ctx())
    assert exc.value.message.startswith("check: condition `value < threshold`:")
    assert "threshold" in exc.value.message and exc.value.retryable is False


def test_a_gate_longer_than_the_timeout_says_so(make_ctx: Any) -> None:
    params = {"command": "echo 1", "condition": "value == 1", "count": 3, "interval": "1h"}
    with pytest.raises(ActionFailed) as exc:
        run(params, make_ctx(timeout=0.2))
    assert exc.value.message.startswith("check timed out after 1 of 3 measurement(s)")
    assert exc.value.outputs == {"values": [1], "passed": 1, "failed": 0}


def test_validate_accepts_value_in_conditions_and_rejects_two_sources(
    runbook: Any, tmp_path: Path
) -> None:
    head = "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: c}\nphases:\n  - id: p\n"
    good = tmp_path / "good.yaml"
    good.write_text(
        head + "    steps:\n      - {id: g, action: check, with: {command: 'echo 1', "
        "condition: 'value < 2 and values | length > 0', count: 2, interval: 1s}}\n"
    )
    assert runbook("validate", str(good)).code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        head + "    steps:\n      - {id: g, action: check, with: {command: 'echo 1', "
        "url: 'http://x', json_path: a, condition: 'value < 2'}}\n"
    )
    r = runbook("validate", str(bad))
    assert r.code == 2
    assert "bad.yaml:7:38: phases[0].steps[0].with: give only one of" in r.output
