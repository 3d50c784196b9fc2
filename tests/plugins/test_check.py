"""The ``check`` gate: values from a real HTTP server, a real SQLite file and real commands;
each measurement passed, failed or inconclusive, and an inconclusive gate waiting (SPEC §7)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed, Waiting
from runbook_engine.format import gates
from runbook_engine.plugins.check import CheckAction
from tests.servers.http import HttpServer

pytestmark = pytest.mark.servers

RETRIES = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: action-test}
phases:
  - id: only
    steps:
      - {id: s, action: check, retries: {attempts: 3, delay: 10ms, backoff: 1},
         with: {command: 'true', condition: value < 1}}
"""


def run(params: dict[str, Any], ctx: Any) -> Any:
    return CheckAction().run(params, ctx)


def measured(make_ctx: Any) -> list[dict[str, Any]]:
    return [dict(d) for kind, d in make_ctx.events if kind == "check.measured"]


def waits(params: dict[str, Any], make_ctx: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    """The gate is inconclusive: its waiting reason, and the evaluation it recorded."""
    with pytest.raises(Waiting) as exc:
        run(params, make_ctx(**kw))
    record = json.loads(make_ctx.records.data[gates.WAITING])
    assert record["run"] == "run-test" and record["attempt"] == 1 and record["token"]
    (event,) = [d for kind, d in make_ctx.events if kind == "check.waiting"]
    assert event["token"] == record["token"] and event["measurements"] == record["measurements"]
    return exc.value.message, record


def test_command_gate_passes_and_emits_every_measurement(make_ctx: Any) -> None:
    params = {"command": "echo 0.01", "condition": "value < 0.02", "count": 3, "interval": "0s"}
    out = run(params, make_ctx())
    assert {k: out[k] for k in ("values", "passed", "failed", "inconclusive", "outcome")} == {
        "values": [0.01, 0.01, 0.01],
        "passed": 3,
        "failed": 0,
        "inconclusive": 0,
        "outcome": "passed",
    }
    expected = [
        {
            "index": i,
            "value": 0.01,
            "passed": True,
            "outcome": "passed",
            "condition": "value < 0.02",
            "attempt": 1,
        }
        for i in range(3)
    ]
    assert measured(make_ctx) == expected
    assert out["measurements"] == expected
    assert gates.WAITING not in make_ctx.records.data


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
    out = exc.value.outputs
    assert (out["values"], out["passed"], out["failed"], out["outcome"]) == (
        [0.01, 0.05, 0.01, 0.06],
        2,
        2,
        "failed",
    )
    assert exc.value.retryable is False  # a gate that measured a failure is not re-measured
    assert [e["passed"] for e in measured(make_ctx)] == [True, False, True, False]
    assert len(http_server.requests_to("/metrics")) == 4  # stopped early: no 5th measurement


def test_url_gate_with_a_list_index_path(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.metric = 7
    params = {"url": f"{http_server.url}/metrics", "json_path": "$.items[0].value"}
    out = run({**params, "condition": "value == 7"}, make_ctx())
    assert (out["values"], out["outcome"]) == ([7], "passed")


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
    assert (out["values"], out["passed"], out["outcome"]) == ([0.01], 1, "passed")
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
        "failure_limit": 1,
    }
    ctx = make_ctx(template_context={"vars": {"budget": 10}})
    out = run(params, ctx)
    assert (out["values"], out["passed"], out["failed"]) == ([4, 4, 4], 2, 1)


# -- inconclusive: every source, never a pass or a fail -------------------------------------


def _sqlite(tmp_path: Path, *rows: Any) -> str:
    db = tmp_path / "e.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x REAL)")
        conn.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows])
    return f"sqlite:///{db}"


def test_a_null_from_a_query_is_inconclusive(tmp_path: Path, make_ctx: Any) -> None:
    params = {"dsn": _sqlite(tmp_path), "query": "SELECT max(x) FROM t", "condition": "value < 1"}
    why, record = waits(params, make_ctx)
    assert why.startswith(
        "gate inconclusive: 0 passed, 0 failed, 1 inconclusive of 1 measurement(s) "
        "(failure_limit 0, inconclusive_limit 0): #1 —: inconclusive (the query on sqlite:///"
    )
    assert why.endswith("e.db gave NULL)")
    (m,) = record["measurements"]
    assert (m["value"], m["passed"], m["outcome"]) == (None, False, "inconclusive")
    assert measured(make_ctx) == [m]
    assert (record["passed"], record["failed"], record["inconclusive"]) == (0, 0, 1)


def test_no_rows_from_a_query_is_inconclusive(tmp_path: Path, make_ctx: Any) -> None:
    params = {"dsn": _sqlite(tmp_path, 0.5), "query": "SELECT x FROM t WHERE x > 1"}
    why, _ = waits({**params, "condition": "value < 1"}, make_ctx)
    assert why.endswith("e.db returned no rows)")


def test_a_query_that_fails_is_inconclusive_after_the_retries(
    tmp_path: Path, make_ctx: Any
) -> None:
    params = {"dsn": _sqlite(tmp_path), "query": "SELECT y FROM t", "condition": "value < 1"}
    why, _ = waits(params, make_ctx)
    assert "'SELECT y FROM t' failed: no such column: y" in why
    assert "(after" not in why  # a wrong query is not worth retrying


def test_a_missing_json_path_is_inconclusive(http_server: HttpServer, make_ctx: Any) -> None:
    url = f"{http_server.url}/metrics"
    params = {"url": url, "json_path": "metrics.latency.p99", "condition": "value < 1"}
    why, _ = waits(params, make_ctx)
    assert why.endswith(
        f"#1 —: inconclusive ('metrics.latency.p99' not found in the JSON from {url} "
        "(no 'latency' at $.metrics))"
    )


@pytest.mark.parametrize(("metric", "said"), [(float("nan"), "gave nan"), (None, "gave NULL")])
def test_nan_or_null_in_json_is_inconclusive(
    http_server: HttpServer, make_ctx: Any, metric: Any, said: str
) -> None:
    http_server.metric = metric  # served as JSON NaN / null
    url = f"{http_server.url}/metrics"
    params = {"url": url, "json_path": "metrics.error_rate", "condition": "value < 1"}
    why, _ = waits(params, make_ctx)
    assert why.endswith(f"({url} at metrics.error_rate {said})")


def test_a_non_number_from_json_is_inconclusive(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.metric = "unknown"
    url = f"{http_server.url}/metrics"
    params = {"url": url, "json_path": "metrics.error_rate", "condition": "value < 1"}
    why, _ = waits(params, make_ctx)
    assert why.endswith(
        f"({url} at metrics.error_rate gave a value that is not a number: 'unknown')"
    )


def test_an_unreachable_endpoint_is_inconclusive_after_the_retries(
    http_server: HttpServer, make_ctx: Any
) -> None:
    http_server.respond("/metrics", 503, text="warming up")
    url = f"{http_server.url}/metrics"
    params = {"url": url, "json_path": "a", "condition": "value < 1"}
    why, _ = waits(params, make_ctx, runbook_text=RETRIES)
    assert why.endswith(
        f"(check: GET {url} returned 503 Service Unavailable: warming up (after 3 attempts))"
    )
    assert len(http_server.requests_to("/metrics")) == 3  # the step's retries, per reading


def test_a_retried_reading_that_recovers_counts(http_server: HttpServer, make_ctx: Any) -> None:
    http_server.respond("/metrics", 503, text="warming up", times=2)
    http_server.metric = 0.5
    params = {"url": f"{http_server.url}/metrics", "json_path": "metrics.error_rate"}
    out = run({**params, "condition": "value < 1"}, make_ctx(runbook_text=RETRIES))
    assert (out["values"], out["outcome"]) == ([0.5], "passed")
    assert len(http_server.requests_to("/metrics")) == 3


def test_empty_output_of_a_command_is_inconclusive(make_ctx: Any) -> None:
    why, _ = waits({"command": "printf ''", "condition": "value < 1"}, make_ctx)
    assert why.endswith("#1 —: inconclusive (command `printf ''` printed nothing)")


def test_a_non_number_from_a_command_is_inconclusive(make_ctx: Any) -> None:
    why, _ = waits({"command": "echo 'n/a'", "condition": "value < 1"}, make_ctx)
    assert why.endswith("(command `echo 'n/a'` gave a value that is not a number: 'n/a')")


def test_a_failing_command_is_inconclusive_with_its_stderr(make_ctx: Any) -> None:
    params = {"command": "echo 'no such metric' >&2; exit 3", "condition": "value < 1"}
    why, _ = waits(params, make_ctx, runbook_text=RETRIES)
    assert why.endswith("exited with status 3: no such metric (after 3 attempts))")


def test_a_hung_command_is_killed_with_its_process_group(tmp_path: Path, make_ctx: Any) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 60 & echo $! > {pids}; wait"
    # time enough for the shell to start on a loaded machine; the command would run 60 s
    why, _ = waits({"command": command, "condition": "value < 1"}, make_ctx, timeout=3.0)
    assert "timed out; killed" in why
    child = int(pids.read_text())
    stat = Path(f"/proc/{child}/stat")

    def dead() -> bool:  # the kill is delivered at once; reaping by init may lag
        try:
            return stat.read_text().split(") ", 1)[1].startswith("Z")
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 60
    while not dead() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dead()


def test_a_condition_that_cannot_be_evaluated_is_inconclusive(make_ctx: Any) -> None:
    why, record = waits({"command": "echo 1", "condition": "value < threshold"}, make_ctx)
    assert "inconclusive (condition `value < threshold`:" in why and "threshold" in why
    assert record["measurements"][0]["value"] == 1  # measured, but not tested


# -- the outcome rule ------------------------------------------------------------------------


def test_inconclusive_within_the_limit_passes(tmp_path: Path, make_ctx: Any) -> None:
    script = tmp_path / "m.sh"
    script.write_text(
        'n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; [ "$n" = 1 ] || echo 0.5\n'
    )
    params = {"command": f"cd {tmp_path}; sh m.sh", "condition": "value < 1", "count": 3}
    out = run({**params, "interval": 0, "inconclusive_limit": 1}, make_ctx())
    assert [m["outcome"] for m in out["measurements"]] == ["passed", "inconclusive", "passed"]
    assert (out["passed"], out["inconclusive"], out["outcome"]) == (2, 1, "passed")


def test_failed_measurements_decide_over_inconclusive_ones(tmp_path: Path, make_ctx: Any) -> None:
    script = tmp_path / "m.sh"
    script.write_text(
        'n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; [ "$n" = 0 ] || echo 5\n'
    )
    params = {"command": f"cd {tmp_path}; sh m.sh", "condition": "value < 1", "count": 3}
    with pytest.raises(ActionFailed) as exc:
        run({**params, "interval": 0}, make_ctx())
    assert exc.value.outputs["outcome"] == "failed"
    assert [m["outcome"] for m in exc.value.outputs["measurements"]] == ["inconclusive", "failed"]
    assert gates.WAITING not in make_ctx.records.data


def test_a_gate_longer_than_the_timeout_says_so(make_ctx: Any) -> None:
    params = {"command": "echo 1", "condition": "value == 1", "count": 3, "interval": "1h"}
    with pytest.raises(ActionFailed) as exc:
        run(params, make_ctx(timeout=3.0))  # time enough for one `echo 1` on a loaded machine
    assert exc.value.message.startswith("check timed out after 1 of 3 measurement(s)")
    assert exc.value.outputs["values"] == [1] and exc.value.outputs["passed"] == 1


# -- a person's decision: bound to the evaluation it was made on -----------------------------


def _decide(make_ctx: Any, record: dict[str, Any], decision: str, **over: Any) -> None:
    decided = {
        "token": record["token"],
        "run": record["run"],
        "attempt": record["attempt"],
        "decision": decision,
        "by": "maria",
        "on_behalf_of": None,
        "comment": "seen",
        "at": "2026-12-02T10:00:00.000Z",
        **over,
    }
    make_ctx.records.put({gates.decision_key(record["token"]): json.dumps(decided)})


def test_a_decision_ends_the_gate_without_measuring_again(tmp_path: Path, make_ctx: Any) -> None:
    calls = tmp_path / "calls"
    params = {"command": f"echo x >> {calls}; printf ''", "condition": "value < 1"}
    _, record = waits(params, make_ctx)
    _decide(make_ctx, record, "passed")
    out = run(params, make_ctx())
    assert out["outcome"] == "passed (decided by maria)"
    assert out["decision"]["token"] == record["token"] and out["decision"]["comment"] == "seen"
    assert out["measurements"] == record["measurements"]
    assert calls.read_text().split() == ["x"]  # measured once, by the first run only
    _decide(make_ctx, record, "failed")
    with pytest.raises(ActionFailed) as exc:
        run(params, make_ctx())
    assert exc.value.message.startswith(
        "failed by the decision of maria on an inconclusive evaluation: seen (#1 —: inconclusive"
    )
    assert exc.value.outputs["outcome"] == "failed (decided by maria)"
    assert exc.value.retryable is False


@pytest.mark.parametrize(
    ("ctx_kw", "decision_kw"),
    [
        ({"run_id": "run-later"}, {}),  # another run
        ({"template_context": {"wave": {"attempt": 2}}}, {}),  # another wave attempt
        ({}, {"attempt": 2}),  # a decision that names another attempt
    ],
)
def test_a_decision_never_applies_to_another_evaluation(
    tmp_path: Path, make_ctx: Any, ctx_kw: dict[str, Any], decision_kw: dict[str, Any]
) -> None:
    calls = tmp_path / "calls"
    params = {"command": f"echo x >> {calls}; printf ''", "condition": "value < 1"}
    _, record = waits(params, make_ctx)
    _decide(make_ctx, record, "passed", **decision_kw)
    kw = dict(ctx_kw)
    run_id = kw.pop("run_id", None)
    ctx = make_ctx(**kw)
    if run_id is not None:
        ctx.run_id = run_id
    with pytest.raises(Waiting):
        run(params, ctx)
    assert calls.read_text().split() == ["x", "x"]  # measured again


def test_a_decision_the_step_already_ended_with_is_not_used_again(
    tmp_path: Path, make_ctx: Any
) -> None:
    from runbook_engine.run.context import StepView

    calls = tmp_path / "calls"
    params = {"command": f"echo x >> {calls}; printf ''", "condition": "value < 1"}
    _, record = waits(params, make_ctx)
    _decide(make_ctx, record, "failed")
    with pytest.raises(ActionFailed) as exc:
        run(params, make_ctx())
    ended = exc.value.outputs  # what the step's state holds after it failed by the decision

    class Steps:
        def __getitem__(self, name: str) -> StepView:
            assert name == "s"
            return StepView("s", "failed", ended)

    with pytest.raises(Waiting):  # an apply after the failure measures again
        run(params, make_ctx(template_context={"steps": Steps()}))
    assert calls.read_text().split() == ["x", "x"]


# -- validation ------------------------------------------------------------------------------


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


COHORT_GATES = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: v}
vars: {legacy_db: "sqlite:///legacy.db"}
cohorts:
  customers:
    source: {dsn: "{{ vars.legacy_db }}", query: "SELECT id FROM customers"}
    key: id
    waves: [{id: all, size: rest}]
phases:
  - id: plain
    steps:
      - {id: g1, action: check, with: {command: "echo 1", condition: "value < baseline", metric: rate, min_samples: 5}}
  - id: rollout
    waves: {cohort: customers}
    steps:
      - {id: g2, action: check, marks: moved, with: {cohort: customers, command: "echo 1", condition: "value < 1"}}
      - {id: g3, action: check, with: {cohort: customers, dsn: "sqlite:///m.db", query: "SELECT 1, 1", metric: median, condition: "value < baseline"}}
      - {id: g4, action: check, with: {cohort: customers, dsn: "sqlite:///m.db", query: "SELECT 1, 1", metric: rate, min_samples: 200, baseline_dsn: "sqlite:///b.db", baseline_query: "SELECT 2, 2", inconclusive_limit: 1, approvers: [maria], allow_self: false, condition: "value <= baseline + 0.01 and n >= 10 and n_baseline >= 10"}}
"""


def test_validate_locates_what_a_cohort_gate_may_and_may_not_say(
    runbook: Any, tmp_path: Path
) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(COHORT_GATES)
    r = runbook("validate", str(path))
    assert r.code == 2
    problems = [
        line[len(f"{path}:") :] for line in r.err.splitlines() if line.startswith(f"{path}:")
    ]
    assert problems == [
        "13:70: phases[0].steps[0].with.condition: baseline: known only to a cohort gate "
        "(`cohort: NAME` in `with`, in a phase of that cohort's waves)",
        "13:98: phases[0].steps[0].with.metric: `metric` needs `cohort`",
        "13:117: phases[0].steps[0].with.min_samples: `min_samples` needs `cohort`",
        "17:40: phases[1].steps[0].marks: a gate marks no member: `marks` does not apply to "
        "step 'g2' (check)",
        "17:82: phases[1].steps[0].with.command: a cohort gate reads (key, number) rows with "
        "`query` and `dsn`, not `command`",
        "18:112: phases[1].steps[1].with.metric: expected one of mean, sum, count, rate, got "
        "'median'; did you mean 'mean'?",
        " invalid (6 problem(s))",
    ]  # g4, which says everything a cohort gate may, is valid
