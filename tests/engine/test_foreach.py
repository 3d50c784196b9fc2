"""foreach (SPEC §7, §11): one call per member with an idempotency key, durable member records,
failures per member, max_failed, Retry-After, a crash in the middle, resolve --member, and a
rollback per member."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.engine.helpers import (
    RUNBOOK,
    Output,
    journal,
    status_json,
    wait_until,
    write_subs_runbook,
)

N = 400


def _base(rows: int = N) -> None:
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT)")
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, 'en')",
            [(i, f"c{i}@example.com") for i in range(1, rows + 1)],
        )


def _runbook(url: str, **step: Any) -> None:
    move: dict[str, Any] = {
        "id": "move",
        "action": "http",
        "marks": "moved",
        "foreach": {"cohort": "subs", "concurrency": 8},
        "retries": {"attempts": 1},
        "rollback": "none",
        "with": {
            "method": "POST",
            "url": url + "/migrate",
            "json": {"customer": "{{ member.key }}"},
        },
    }
    move.update(step)
    write_subs_runbook(
        "fe", [move], [{"id": "pilot", "size": "10%"}, {"id": "all", "size": "rest"}]
    )


def _ledger(sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect("file:.runbook/fe/state.db?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_one_call_per_member_with_its_idempotency_key(runbook, provider) -> None:
    _base()
    _runbook(provider.url)
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert sum(provider.calls.values()) == N and len(provider.calls) == N  # one call each
    assert provider.unkeyed == 0
    key = next(iter(provider.calls))
    run, step, attempt, _member = key.split("/")
    assert run == status_json(runbook, "r.yaml")["run"]["id"] and attempt == "1"
    assert step.startswith("move[")
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [("moved", N)]
    assert "400 subs: 0 verified, 400 moved, 0 failed, 0 pending" in r.out


def test_failed_members_are_failed_with_the_error_and_the_step_fails_past_max_failed(
    runbook, provider
) -> None:
    _base()
    provider.fail = {k for k in range(1, N + 1) if k % 20 == 0}  # 5 % of them
    _runbook(provider.url, foreach={"cohort": "subs", "concurrency": 4, "max_failed": 2})
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert "members failed (max_failed 2 = 2)" in r.out
    failed = _ledger("SELECT key, reason FROM entity WHERE state = 'failed' ORDER BY key")
    assert failed and all(k % 20 == 0 and "returned 500" in why for k, why in failed)
    # it stopped handing out members: the pilot failed before the rest was called
    assert sum(provider.customers.values()) < N
    # a re-run calls the members not yet done (the failed ones included), never the done ones
    provider.fail = set()
    before = Counter_of(provider)
    r = runbook("apply", "r.yaml", "--yes")
    again = {c for c, n in provider.customers.items() if n > before.get(c, 0)}
    assert again and all(before.get(c, 0) == 0 or c % 20 == 0 for c in again)
    assert _ledger("SELECT count(*) FROM entity WHERE state = 'moved'") == [(N,)]


def Counter_of(p: Any) -> dict[Any, int]:
    return dict(p.customers)


def test_a_429_with_retry_after_is_honoured(runbook, provider) -> None:
    _base(rows=20)
    provider.limited = {3, 4}
    _runbook(provider.url)
    t0 = time.monotonic()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert time.monotonic() - t0 >= 1.0  # it waited as asked
    assert provider.customers[3] == 2 and provider.moved >= {3, 4}


def _wait_calls(provider: Any, n: int, proc: subprocess.Popen[Any]) -> None:
    wait_until(lambda: sum(provider.customers.values()) >= n, f"{n} calls", proc)


def test_a_crash_in_the_middle_of_2000_members_loses_none_and_calls_none_twice_unkeyed(
    provider,
) -> None:
    _base(rows=2000)
    provider.delay = 0.002
    _runbook(provider.url, foreach={"cohort": "subs", "concurrency": 16})
    for cut in (300, 1200):
        proc = subprocess.Popen(
            [RUNBOOK, "apply", "r.yaml", "--yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_calls(provider, cut, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    r = subprocess.run(
        [RUNBOOK, "apply", "r.yaml", "--yes"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert provider.moved == set(range(1, 2001))  # none lost
    assert provider.unkeyed == 0
    # a member called more than once was called again with its own key (the provider
    # de-duplicates on it): as many keys as members, each member under one key
    assert len(provider.calls) == 2000
    twice = [k for k, n in provider.calls.items() if n > 1]
    assert len(twice) <= 2 * 16  # at most the calls in flight at each crash
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [("moved", 2000)]


def test_a_crash_with_a_non_idempotent_action_leaves_members_unknown_until_resolved(
    runbook,
) -> None:
    _base(rows=300)
    step = {
        "action": "shell",
        "with": {"command": "echo {{ member.key }} >> moved.txt; sleep 0.05"},
    }
    _runbook("http://unused", **step)
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(6000):  # up to a minute on a loaded machine
        if Path("moved.txt").exists() and len(Path("moved.txt").read_text().split()) > 100:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the calls in flight (orphaned shells) finish their line first
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 3, r.output  # members cut by the crash: the operator decides
    assert "member call(s) were cut by a crash" in r.out
    unknown = [k for (k,) in _ledger("SELECT key FROM entity WHERE state = 'unknown'")]
    assert unknown
    done = {int(x) for x in Path("moved.txt").read_text().split()}
    for k in unknown:  # the operator checks each one
        r = runbook(
            "resolve", "r.yaml", _step_of(k), "--member", str(k),
            "--as", "succeeded" if k in done else "pending",
        )  # fmt: skip
        assert r.code == 0, r.output
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    lines = Path("moved.txt").read_text().split()
    assert sorted(map(int, lines)) == list(range(1, 301))  # each member exactly once
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [("moved", 300)]


def _step_of(key: Any) -> str:
    (wave,) = _ledger(f"SELECT wave FROM entity WHERE key = {int(key)}")[0]
    return f"move[{wave}]"


def test_a_foreach_rollback_runs_once_per_member_done_with_its_own_key(runbook, provider) -> None:
    _base(rows=100)
    undo = {
        "action": "http",
        "with": {
            "method": "DELETE",
            "url": provider.url + "/migrate",
            "json": {"customer": "{{ member.key }}"},
        },
    }
    _runbook(provider.url, rollback=undo)
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert provider.deleted == {k: 1 for k in range(1, 101)} and not provider.moved
    rollback_keys = [k for k in provider.calls if "#rollback" in k]
    assert len(rollback_keys) == 100
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [("compensated", 100)]


def test_replace_after_a_finished_run_stays_inside_it(runbook, provider) -> None:
    """SPEC §11: `--replace` keeps RUN and ATTEMPT; a re-run of the step calls only members not
    yet done in that attempt (here: none), with the same idempotency keys."""
    _base(rows=40)
    _runbook(provider.url)
    assert runbook("apply", "r.yaml", "--yes").code == 0
    run_id = status_json(runbook, "r.yaml")["run"]["id"]
    calls = dict(provider.calls)
    r = runbook("apply", "r.yaml", "--yes", "--replace", "move[pilot]")
    assert r.code == 0, r.output
    assert f"run {run_id} resumed" in r.out
    doc = status_json(runbook, "r.yaml")
    assert doc["run"]["id"] == run_id and doc["run"]["status"] == "succeeded"
    assert provider.calls == calls  # no member called again, no new key
    assert _ledger("SELECT DISTINCT attempt FROM transition WHERE state = 'moved'") == [(1,)]
    runs = {rec["run"] for rec in journal(".runbook", "fe") if rec["t"] == "run"}
    assert runs == {run_id}


def test_a_second_interrupt_leaves_the_calls_in_flight_and_calls_nobody_else(provider) -> None:
    """Ctrl-C twice in the middle of a foreach whose calls take 60 s: the apply exits at once
    (exit 130) without waiting for the calls in flight, calls no other member, and leaves
    those members `started`; the next apply sends them again with their own key."""
    _base(rows=40)
    provider.delay = 60.0
    _runbook(provider.url, foreach={"cohort": "subs", "concurrency": 2})
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = Output(proc)
    _wait_calls(provider, 2, proc)
    proc.send_signal(signal.SIGINT)
    output.wait_for("interrupted: starting nothing new")  # the first one was taken
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    out, err = output.finish(timeout=60)
    assert proc.returncode == 130, out + err
    assert time.monotonic() - start < 30.0  # the calls in flight (60 s) were not waited for
    in_flight = dict(provider.calls)
    assert len(in_flight) == 2 and sum(provider.customers.values()) == 2  # nobody else
    provider.delay = 0.0
    r = subprocess.run(
        [RUNBOOK, "apply", "r.yaml", "--yes"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert provider.moved == set(range(1, 41)) and provider.unkeyed == 0
    assert all(provider.calls[k] == 2 for k in in_flight)  # sent again with the same key
    assert len(provider.calls) == 40
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [("moved", 40)]


def test_a_declined_member_4xx_is_not_retried_and_fails_alone(runbook, provider) -> None:
    """A client error (422: a card declined) is the same answer next time: not sent again by
    the step's retries; the member fails with the status, the others move."""
    _base(rows=20)
    provider.declined = {5}
    _runbook(
        provider.url,
        foreach={"cohort": "subs", "concurrency": 4, "max_failed": 5},
        retries={"attempts": 3, "delay": "0s"},
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output  # the run is not clean: one member failed
    assert provider.customers[5] == 1  # not retried
    assert _ledger("SELECT state, reason FROM entity WHERE key = 5") == [
        ("failed", f"POST {provider.url}/migrate returned 422 Unprocessable Entity, expected 2xx")
    ]
    assert _ledger("SELECT count(*) FROM entity WHERE state = 'moved'") == [(19,)]


def test_retry_after_zero_does_not_make_a_loop_of_requests(runbook, provider) -> None:
    """Audit: `429` + `Retry-After: 0` made 1,014 requests in 3 s. The least wait is 1 s."""
    _base(rows=1)
    provider.always_limited = {1}
    provider.retry_after = 0
    _runbook(provider.url, timeout="3s")
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert 1 <= provider.customers[1] <= 4
    assert _ledger("SELECT state FROM entity") == [("failed",)]


def test_keys_and_header_values_beyond_latin_1(runbook, provider) -> None:
    """Audit: a member key `k☃` failed with an internal error (its Idempotency-Key could not
    be encoded); a header value beyond ISO-8859-1 or with a control character fails that member
    with the reason, never an internal error."""
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, email TEXT, name TEXT)")
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, ?)",
            [("k☃", "a@x.org", "Ana"), ("k2", "b@x.org", "Łukasz"), ("k3", "c@x.org", "E\x1bve")],
        )
    _runbook(provider.url, foreach={"cohort": "subs", "concurrency": 2, "max_failed": 5})
    doc = yaml.safe_load(Path("r.yaml").read_text())
    doc["phases"][0]["steps"][0]["with"]["headers"] = {"X-Name": "{{ member.name }}"}
    doc["cohorts"]["subs"]["source"]["query"] = "SELECT id, email, name FROM customers"
    doc["cohorts"]["subs"]["attributes"] = ["email", "name"]
    Path("r.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert "internal error" not in r.output
    reasons = dict(_ledger("SELECT key, reason FROM entity WHERE state = 'failed'"))
    assert set(reasons) == {"k2", "k3"}
    assert "cannot be sent in an HTTP header" in reasons["k2"]
    assert "a control character" in reasons["k3"]
    (sent,) = [h["Idempotency-Key"] for h in provider.headers]
    assert sent.endswith("/k%E2%98%83") and sent.isascii()
    assert _ledger("SELECT state FROM entity WHERE key = 'k☃'") == [("moved",)]
