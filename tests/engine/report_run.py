"""A realistic small migration, really applied, for the report tests: a backup, a flaky step
that succeeds on its second attempt, customer notices to an outbox, an approval, then three
waves of copy -> verify -> health gate; the last wave's gate fails, fires the contingency of its
risk and rolls its wave back.  About two seconds, no server needed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.engine.helpers import write

HOSTILE = "<script>alert('x')</script>"

CUSTOMERS_SQL = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, status TEXT)"


def legacy_db(path: str = "legacy.db", rows: int = 200) -> None:
    with sqlite3.connect(path) as db:
        db.execute(CUSTOMERS_SQL)
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, ?)",
            [(i, f"Customer {i}", "cancelled" if _churns(i) else "active") for i in range(rows)],
        )


def _churns(i: int) -> bool:
    """None in the pilot, 1 in 100 in the early wave, 4 in 100 in the last one."""
    return i == 42 or (i % 100 >= 90 and i % 3 == 0)


def migration(path: str = "m.yaml", name: str = "acme-migration") -> Path:
    where = (
        "id % 100 >= {{ wave.previous.vars.percent if wave.previous else 0 }}"
        " AND id % 100 < {{ wave.vars.percent }}"
    )
    undo = (
        "DELETE FROM customers WHERE id % 100 >= "
        "{{ wave.previous.vars.percent if wave.previous else 0 }} AND id % 100 < "
        "{{ wave.vars.percent }}"
    )
    flaky = "n=$(cat tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > tries; test $n -ge 2"
    rollout: dict[str, Any] = {
        "id": "rollout",
        "waves": [
            {"id": "pilot", "vars": {"percent": 10}},
            {"id": "early", "vars": {"percent": 50}},
            {"id": "all", "vars": {"percent": 100}},
        ],
        "steps": [
            {
                "id": "copy",
                "action": "sql.copy",
                "with": {
                    "source": "{{ vars.legacy_db }}",
                    "target": "{{ vars.new_db }}",
                    "table": "customers",
                    "key": "id",
                    "where": where,
                    "create": True,
                },
                "risks": ["data-loss"],
                "rollback": {
                    "action": "sql.exec",
                    "with": {"dsn": "{{ vars.new_db }}", "sql": undo},
                },
            },
            {
                "id": "verify",
                "action": "sql.verify",
                "with": {
                    "source": "{{ vars.legacy_db }}",
                    "target": "{{ vars.new_db }}",
                    "table": "customers",
                    "key": "id",
                    "where": where,
                },
                "risks": ["data-loss"],
            },
            {
                "id": "health",
                "action": "check",
                "with": {
                    "dsn": "{{ vars.new_db }}",
                    "query": "SELECT avg(CASE WHEN status = 'cancelled' THEN 1.0 ELSE 0 END)"
                    " FROM customers",
                    "condition": "value < 0.02",
                    "interval": "10ms",
                    "count": 3,
                    "failure_limit": 1,
                },
                "risks": ["churn"],
                "on_failure": "rollback-wave",
            },
        ],
    }
    planning = {
        "id": "planning",
        "steps": [
            {
                "id": "backup",
                "action": "shell",
                "with": {"command": "cp legacy.db legacy.bak"},
                "rollback": "none",
            },
            {
                "id": "warm-cache",
                "action": "shell",
                "with": {"command": flaky},
                "retries": {"attempts": 2, "delay": "10ms"},
                "rollback": "none",
            },
            {
                "id": "announce",
                "action": "notify",
                "with": {
                    "channel": "outbox",
                    "outbox": "outbox",
                    "to": ["ana@example.com", "bo@example.com", "cy@example.com"],
                    "subject": "We are moving",
                    "message": "Your account moves to the new platform this week.",
                },
                "rollback": "none",
            },
            {"id": "go-no-go", "action": "approval", "with": {}},
        ],
    }
    return write(
        path,
        name=name,
        vars={"legacy_db": "sqlite:///legacy.db", "new_db": "sqlite:///new.db"},
        risks=[
            {
                "id": "data-loss",
                "description": "customer records lost or altered during copy",
                "likelihood": "low",
                "impact": "critical",
                "mitigation": "backup first; verify every copy",
                "owner": "dba",
                "contingencies": ["page-dba"],
            },
            {
                "id": "churn",
                "description": f"customers cancel after the move {HOSTILE}",
                "likelihood": "medium",
                "impact": "high",
                "mitigation": "gate each wave on the cancellation rate",
                "owner": "support",
                "contingencies": ["tell-support"],
            },
        ],
        contingencies=[
            {
                "id": "page-dba",
                "action": "shell",
                "with": {"command": "echo paged >> pager.txt"},
            },
            {
                "id": "tell-support",
                "action": "notify",
                "with": {
                    "channel": "outbox",
                    "outbox": "support-outbox",
                    "to": ["support@example.com"],
                    "subject": "churn gate failed",
                    "message": "{{ failed_step.id }} failed",
                },
            },
        ],
        phases=[planning, rollout],
    )


def applied(runbook: Any, path: str = "m.yaml") -> Path:
    """The migration applied for real: paused at the approval, approved, then failed in the
    last wave (exit 1) with its wave rolled back."""
    legacy_db()
    file = migration(path)
    r = runbook("apply", path, "--yes")
    assert r.code == 3, r.output
    r = runbook("approve", path, "go-no-go", "--by", "alice", "--comment", f"go {HOSTILE}")
    assert r.code == 0, r.output
    r = runbook("apply", path, "--yes")
    assert r.code == 1, r.output
    return file
