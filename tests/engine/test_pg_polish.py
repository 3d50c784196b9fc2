"""Issue 14, the polish of the PostgreSQL lease: an apply racing another's acquire names who
takes it; `approve` and `resolve` beside a writer stalled inside its transaction wait a bounded
time, with a notice, then exit 4 naming the holder (never the lease taken); a failed renewal
is said when it fails and when it recovers. Every command is its own process against a real
server (``tests/servers/postgres.py``, the ``team`` fixture of ``test_state_postgres.py``)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.engine import test_state_postgres as pgt
from tests.engine.helpers import RUNBOOK, Output, runbook_yaml, sh
from tests.engine.test_state_postgres import Team, _two_places, run

team = pgt.team  # the fixture: one database, two operators' roles


def _role_url(team: Team, role: str, app: str | None = None) -> str:
    url = f"postgresql://{role}:{team.roles[role]}@127.0.0.1:{team.port}/{team.db}"
    return url + (f"?application_name={app.replace(' ', '%20')}" if app else "")


def _lease(team: Team, name: str) -> list[tuple[Any, ...]]:
    return team.sql(
        'SELECT epoch, host, pid, "user" FROM runbook.lease WHERE runbook = %s', (name,)
    )


# -- 2: an apply racing another's acquire names who takes it -----------------------------------


def test_pg_apply_racing_another_acquire_names_who_is_taking_the_lease(
    team: Team, tmp_path: Path
) -> None:
    import psycopg

    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    steps = [sh("a", "echo a >> ledger.txt")]
    for d in (ana, bo):
        (d / "r.yaml").write_text(runbook_yaml("race2", phases=[{"id": "p", "steps": steps}]))
    # another operator's process, taking the lease at this instant: its session holds the
    # lease's advisory lock, its holder row not committed (yet)
    app = "runbook lease 2026-12-02T10:00:00Z pid 4242 @laptop-ana"
    with psycopg.connect(_role_url(team, role_a, app), autocommit=True) as racer:
        racer.execute("SELECT pg_advisory_lock(hashtextextended('runbook.lease:race2', 0))")
        got = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
        assert got.returncode == 4, got.stdout + got.stderr
        assert "the state of race2 is being taken right now by " in got.stderr
        assert f"{role_a} ({app})" in got.stderr, got.stderr
        assert "another process right now" not in got.stderr
        assert "Traceback" not in got.stderr and "internal error" not in got.stderr
        assert _lease(team, "race2") == []  # nothing written: no lease row,
        assert team.journal("race2") == []  # no journal
        assert not (bo / "ledger.txt").exists()
    # that process gone without taking it: the next apply takes it
    done = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (bo / "ledger.txt").read_text().split() == ["a"]


# -- 1: approve and resolve beside a writer stalled inside its transaction ----------------------


def _stalled_writer_runbook(*dirs: Path) -> None:
    """An approval step and a gate that waits (inconclusive), beside a step that keeps the
    run (and its lease) going until the file `go` appears."""
    gate = {
        "id": "gate",
        "action": "check",
        "with": {"command": "echo notanumber", "condition": "value == 1", "interval": "0s"},
        "rollback": "none",
        "on_failure": "continue",
    }
    slow = sh(
        "slow",
        "i=0; while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done;"
        " echo slow >> ledger.txt",
    )
    steps = [
        {"id": "ok", "action": "approval"},
        gate,
        sh("after", "echo after >> ledger.txt", needs=["ok"]),
        slow,
    ]
    for d in dirs:
        (d / "r.yaml").write_text(
            runbook_yaml("stall", phases=[{"id": "p", "parallel": True, "steps": steps}])
        )


def _waits(team: Team, name: str, *steps: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        waiting = {
            r.get("id")
            for _, r in team.journal(name)
            if r["t"] == "step" and r.get("status") == "waiting"
        }
        if set(steps) <= waiting:
            return
        assert time.monotonic() < deadline, f"{steps} never waited"
        time.sleep(0.1)


def test_pg_approve_and_resolve_beside_a_stalled_writer_wait_bounded_then_exit_4_naming_it(
    team: Team, tmp_path: Path
) -> None:
    """A holder stopped inside a write keeps the runbook's appenders' lock (its fence takes it
    with the epoch check): `approve` and `resolve` wait for it a bounded time (a notice per
    try), then exit 4 naming the holder; they never take the lease, and write nothing."""
    import psycopg

    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _stalled_writer_runbook(ana, bo)
    # a lease longer than the stall: the stand-in writer also blocks the holder's renewals
    # (an apply whose lease expires unrenewed stops, exit 4: not what is tested here)
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "300s"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _waits(team, "stall", "ok", "gate")
        lease = _lease(team, "stall")
        assert lease == [(1, socket.gethostname(), proc.pid, role_a)]
        before = team.journal("stall")
        with psycopg.connect(team.admin) as stalled:  # inside a write, never committing
            stalled.execute(
                "SELECT (SELECT epoch FROM runbook.lease WHERE runbook = 'stall' FOR SHARE),"
                " pg_advisory_xact_lock(hashtextextended('runbook.journal:' || 'stall', 0))"
            )
            started = time.monotonic()
            approved = run(bo, team.env(role_b), "approve", "r.yaml", "ok")
            resolved = run(bo, team.env(role_b), "resolve", "r.yaml", "gate", "--as", "failed")
            took = time.monotonic() - started
            stalled.rollback()
        holder = f"{role_a}@{socket.gethostname()} pid {proc.pid} since "
        for r in (approved, resolved):
            assert r.returncode == 4, r.stdout + r.stderr
            assert f"runbook: the state of stall is busy: {holder}" in r.stderr, r.stderr
            assert "is inside a write (waited 15s; nothing was recorded); try again" in r.stderr
            assert r.stderr.count("notice: the state of stall is busy: ") == 2, r.stderr
            assert "waiting again (try 2 of 3)" in r.stderr
            assert "waiting again (try 3 of 3)" in r.stderr
            assert "Traceback" not in r.stderr and "internal error" not in r.stderr
        assert took < 170  # bounded (2 x 15 s of waits, generous for a loaded machine)
        assert team.journal("stall") == before  # nothing recorded
        assert _lease(team, "stall") == lease  # the lease never taken
        # the writer gone: both go through at once, and the running apply reads them
        approved = run(bo, team.env(role_b), "approve", "r.yaml", "ok")
        assert approved.returncode == 0, approved.stderr
        assert "notice:" not in approved.stderr
        resolved = run(bo, team.env(role_b), "resolve", "r.yaml", "gate", "--as", "failed")
        assert resolved.returncode == 0, resolved.stderr
        assert _lease(team, "stall") == lease
        (ana / "go").touch()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err  # the gate failed by decision (on_failure: continue)
    assert sorted((ana / "ledger.txt").read_text().split()) == ["after", "slow"]
    approvals = [r for _, r in team.journal("stall") if r["t"] == "approval"]
    assert [a["by"] for a in approvals] == [role_b]


# -- 3: a failed lease renewal is said when it fails and when it recovers ----------------------


def test_pg_failed_lease_renewal_is_a_notice_and_json_event_and_so_is_its_recovery(
    team: Team, tmp_path: Path
) -> None:
    """Renewals blocked (the lease row locked by another session) fail within their
    interval instead of hanging silently: the reporter says so (a JSON `lease` event with
    `renewal_failed`), and says when a renewal succeeds again (`renewal_recovered`); the run
    goes on and ends as usual, its lease never lost."""
    import psycopg

    ana, _bo = _two_places(tmp_path)
    role_a, _role_b = list(team.roles)
    steps = [
        sh("w", "i=0; while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done"),
        sh("after", "echo after >> ledger.txt", needs=["w"]),
    ]
    (ana / "r.yaml").write_text(runbook_yaml("renewal", phases=[{"id": "p", "steps": steps}]))
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "3s", "--format", "json"],
        cwd=ana, env=team.env(role_a), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    output = Output(proc)
    try:
        output.wait_for('"status": "running"')
        lease = _lease(team, "renewal")
        with psycopg.connect(team.admin) as blocker:  # the row locked: renewals cannot write
            blocker.execute("SELECT 1 FROM runbook.lease WHERE runbook = 'renewal' FOR UPDATE")
            output.wait_for('"state": "renewal_failed"')
            blocker.rollback()
        output.wait_for('"state": "renewal_recovered"')
        assert _lease(team, "renewal") == lease  # still ours, same epoch
        (ana / "go").touch()
        out, err = output.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    said = [e for e in events if e.get("event") == "lease"]
    assert [e["state"] for e in said] == ["renewal_failed", "renewal_recovered"], said
    assert said[0]["message"].startswith("the lease renewal failed (")
    assert "the lease expires 3s after its last renewal" in said[0]["message"]
    assert said[1]["message"].startswith("the lease was renewed again after ")
    assert (ana / "ledger.txt").read_text().split() == ["after"]
    assert "lost the lease" not in err
