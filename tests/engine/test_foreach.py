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

from tests.engine.helpers import RUNBOOK, journal, status_json

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
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "fe"},
        "vars": {"legacy_db": "sqlite:///legacy.db"},
        "cohorts": {
            "subs": {
                "source": {
                    "dsn": "{{ vars.legacy_db }}",
                    "query": "SELECT id, email FROM customers",
                },
                "key": "id",
                "attributes": ["email"],
                "waves": [{"id": "pilot", "size": "10%"}, {"id": "all", "size": "rest"}],
            }
        },
        "phases": [{"id": "p", "waves": {"cohort": "subs"}, "steps": [move]}],
    }
    Path("r.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


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


def _wait_calls(provider: Any, n: int) -> None:
    for _ in range(600):
        if sum(provider.customers.values()) >= n:
            return
        time.sleep(0.01)


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
        _wait_calls(provider, cut)
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
