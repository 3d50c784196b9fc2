"""Holes found on PostgreSQL in the one-statement checkpoint, in when a busy apply reads the
decisions written beside it, and in `notify` to a cohort (issue 14). Each test says what was
wrong and what is right; each failed on the code the review found, and is closed now. Real
PostgreSQL only (``tests/servers/postgres.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.state import pg
from tests.engine.helpers import RUNBOOK, runbook_yaml, sh

pytestmark = pytest.mark.servers


def _sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _journal(url: str, name: str) -> list[tuple[int, dict[str, Any]]]:
    rows = _sql(url, "SELECT seq, rec FROM runbook.journal WHERE runbook = %s ORDER BY seq",
                (name,))  # fmt: skip
    return [(int(s), json.loads(r)) for s, r in rows]


def _advisory_waiters(url: str) -> int:
    got = _sql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND wait_event = 'advisory' AND datname = current_database()",
    )
    return int(got[0][0])


def _until(what: str, cond: Any, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 120
    while not cond():
        assert proc is None or proc.poll() is None, f"the apply ended before {what}"
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def test_an_approval_chained_before_the_runs_last_records_is_read_before_it_ends_paused(
    pg_dsn: str, tmp_path: Path
) -> None:
    """`read_decisions` reads the decisions at the top of the loop's last iteration, before
    that iteration's checkpoint (``flush``); the loop then ends with no read after it. An
    approval that commits between that read and the end (here: queued on the journal's
    appenders' lock right behind the checkpoint, so that it is chained right after it and
    before the run's closing records) is never read: the run ends exit 3 "paused", `go`
    waiting, although the journal holds its approval before the run's pause.

    Wrong: exit 3, `go` waiting, the approval chained before the run's closing record.
    Right: a decision chained before the run's closing record is read by the run (the last
    read comes after its last checkpoint, or the closing write reads what was appended
    since): `go` goes on and the run ends succeeded (exit 0)."""
    import psycopg

    pg.init(pg_dsn)
    steps = [
        {"id": "go", "action": "approval", "with": {"message": "go?", "allow_self": True}},
        sh("q", "while [ ! -e release ]; do sleep 0.05; done"),
    ]
    (tmp_path / "r.yaml").write_text(
        runbook_yaml("fin", phases=[{"id": "p", "parallel": True, "steps": steps}])
    )
    env = {**os.environ, "RUNBOOK_STATE": pg_dsn}
    env.pop("RUNBOOK_FAULT", None)
    apply = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    holder = psycopg.connect(pg_dsn, autocommit=True)
    approve: subprocess.Popen[str] | None = None
    try:

        def waiting() -> bool:
            return any(
                r["t"] == "step" and r.get("id") == "go" and r.get("status") == "waiting"
                for _, r in _journal(pg_dsn, "fin")
            )

        _until("`go` waits", waiting, apply)
        # the journal's appenders' lock held: the run's next checkpoint (q's success) waits
        holder.execute(
            "SELECT pg_advisory_lock(hashtextextended('runbook.journal:' || %s, 0))", ("fin",)
        )
        (tmp_path / "release").touch()
        _until("the run's checkpoint waits", lambda: _advisory_waiters(pg_dsn) == 1, apply)
        # the run read the decisions before this checkpoint; `approve` queues behind it
        approve = subprocess.Popen(
            [RUNBOOK, "approve", "r.yaml", "go"], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _until("approve waits behind it", lambda: _advisory_waiters(pg_dsn) == 2)
        holder.execute(
            "SELECT pg_advisory_unlock(hashtextextended('runbook.journal:' || %s, 0))", ("fin",)
        )
        a_out, a_err = approve.communicate(timeout=120)
        out, err = apply.communicate(timeout=120)
    finally:
        holder.close()
        for p in (apply, approve):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert approve.returncode == 0, a_out + a_err
    assert "approved" in a_out
    records = _journal(pg_dsn, "fin")
    (approved_at,) = [s for s, r in records if r["t"] == "approval" and r.get("step") == "go"]
    closing = [s for s, r in records if r["t"] == "run" and r.get("status") != "running"]
    assert closing and approved_at < closing[-1]  # the approval is chained before the end
    audit = subprocess.run([RUNBOOK, "audit", "r.yaml"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr  # the chain holds
    assert apply.returncode == 0, out + err
