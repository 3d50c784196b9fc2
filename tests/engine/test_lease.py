"""The lease of a state on a directory (SPEC §8, §11; issue 14): a second apply is exit 4
naming the holder and the lease's age; a dead holder is taken over at once, an expired one
after its lease, each with a notice naming it; a holder that lost its lease is fenced (exit 4,
nothing it writes after the takeover reaches the state); `runbook lock`; `status` shows a lost
holder; `unlock --force` advances the epoch; approve and resolve never take the lease.

The holders are real processes (``subprocess``) stopped with real signals. No timed
assertion: every wait polls a condition with a generous deadline.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.engine.helpers import RUNBOOK, ledger_lines, sh, status_json, write

STATE = Path(".runbook/t")
ME = pwd.getpwuid(os.getuid()).pw_name
HOST = socket.gethostname()


def _until(what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _lease_row() -> dict[str, Any]:
    con = sqlite3.connect(f"file:{STATE / 'state.db'}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        row = con.execute("SELECT * FROM lease WHERE id = 1").fetchone()
        return dict(row)
    finally:
        con.close()


def _journal_rows() -> list[tuple[int, str]]:
    con = sqlite3.connect(f"file:{STATE / 'state.db'}?mode=ro", uri=True)
    try:
        return [
            (int(s), str(r)) for s, r in con.execute("SELECT seq, rec FROM journal ORDER BY seq")
        ]
    finally:
        con.close()


def _lock_json(runbook: Any) -> dict[str, Any]:
    r = runbook("lock", "r.yaml", "--format", "json")
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.out)["lease"]
    return doc


def _slow_runbook(seconds: int = 30) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("slow", f"touch started; sleep {seconds}"),
                    sh("after", "echo after >> ledger.txt", needs=["slow"]),
                ],
            }
        ],
    )


@contextmanager
def _holder(*extra: str) -> Iterator[subprocess.Popen[str]]:
    """An apply of r.yaml in its own process, once its first step has started."""
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _until(
            "the first step to start", lambda: Path("started").exists() or proc.poll() is not None
        )
        assert proc.poll() is None, proc.communicate()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=120)


def test_a_second_apply_is_exit_4_naming_the_holder_and_the_lease_age(runbook) -> None:
    _slow_runbook()
    with _holder() as first:
        r = runbook("apply", "r.yaml", "--yes")
        assert r.code == 4
        assert f"{ME}@{HOST} pid {first.pid} since 20" in r.err
        assert "its lease is live (held for " in r.err and "renewed " in r.err
        assert "lease 30s" in r.err and "runbook lock FILE" in r.err
        # the refused apply wrote nothing: the lease is still the first one's
        row = _lease_row()
        assert (row["epoch"], row["pid"], row["released"]) == (1, first.pid, None)
        # `runbook lock` names the holder and the lease's age, exit 0
        r = runbook("lock", "r.yaml")
        assert r.code == 0
        assert f"lease held by {ME}@{HOST} pid {first.pid} since 20" in r.out
        assert "live: held for " in r.out and "renewed " in r.out
        doc = _lock_json(runbook)
        assert doc["state"] == "live" and doc["epoch"] == 1 and doc["lost_since"] is None
        assert doc["holder"]["pid"] == first.pid and doc["holder"]["user"] == ME
        assert doc["age"] >= 0 and doc["seconds"] == 30.0
        # status shows who holds it, never "lost"
        run = status_json(runbook, "r.yaml")["run"]
        assert run["holder"]["pid"] == first.pid and run["holder"]["lost_since"] is None
        assert "holder lost" not in runbook("status", "r.yaml").out


def test_a_killed_holder_is_lost_in_status_and_lock_and_taken_over_at_once(runbook) -> None:
    _slow_runbook()
    with _holder() as first:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # status: never plainly running
    run = status_json(runbook, "r.yaml")["run"]
    assert run["status"] == "running"
    holder = run["holder"]
    assert (holder["host"], holder["pid"], holder["user"]) == (HOST, first.pid, ME)
    assert holder["started"] and holder["lost_since"] and holder["alive"] is False
    line = runbook("status", "r.yaml").out.splitlines()[0]
    assert f"running (holder lost since {holder['lost_since']}" in line
    assert f"pid {first.pid}" in line
    # lock: lost, exit 0
    r = runbook("lock", "r.yaml")
    assert r.code == 0 and f"pid {first.pid}" in r.out
    assert "lost: its process is gone from this host" in r.out
    assert _lock_json(runbook)["state"] == "lost"
    # the next apply takes it over at once (the lease is 30 s: no waiting for it)
    r = runbook("apply", "r.yaml", "--yes")
    assert f"took over the lease of {ME}@{HOST} pid {first.pid}" in r.out
    assert "its process is gone from this host" in r.out
    assert r.code == 3  # `slow` was running when killed: unknown, so paused
    row = _lease_row()
    assert row["epoch"] == 2 and row["pid"] == os.getpid() and row["released"]
    assert not list(STATE.glob("lease-*"))  # the dead holder's file swept, its own removed
    assert runbook("lock", "r.yaml").out.startswith("t: nobody holds the lease (last held by")


def test_a_stopped_holder_is_taken_over_after_expiry_and_fenced_when_resumed(runbook) -> None:
    _slow_runbook(seconds=4)
    with _holder("--lease", "2s") as first:
        first.send_signal(signal.SIGSTOP)
        # still holding its flock, but not renewing: expired once 2 s pass on the file's clock
        _until("the lease to expire", lambda: _lock_json(runbook)["state"] == "expired")
        r = runbook("lock", "r.yaml")
        assert r.code == 0 and "expired: held for " in r.out and "holder lost since" in r.out
        assert status_json(runbook, "r.yaml")["run"]["holder"]["lost_since"]
        second = subprocess.run(
            [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "2s"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert f"took over the lease of {ME}@{HOST} pid {first.pid}" in second.stdout
        assert "its lease expired" in second.stdout and "it is fenced" in second.stdout
        assert second.returncode == 3, second.stdout + second.stderr  # `slow` left unknown
        row = _lease_row()
        assert row["epoch"] == 2 and row["pid"] != first.pid and row["released"]
        second_pid = row["pid"]
        taken = _journal_rows()
        # resumed: it finds out at its next renewal or write, and stops
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=120)
        assert first.returncode == 4, out + err
        assert f"lost the lease of the state to {ME}@{HOST} pid {second_pid}" in err
        assert "wrote nothing after losing it" in err
    # nothing it wrote after the takeover reached the state
    assert _journal_rows() == taken
    assert ledger_lines() == []  # `after` never ran
    assert _lease_row()["epoch"] == 2
    assert {s["id"]: s["status"] for s in status_json(runbook, "r.yaml")["steps"]} == {
        "slow": "unknown",
        "after": "pending",
    }


def test_a_holder_on_another_host_is_refused_until_expired_or_unlocked(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0

    def far_away(epoch: int, renewed_ago: float) -> None:
        con = sqlite3.connect(STATE / "state.db", isolation_level=None)
        try:
            con.execute(
                "UPDATE lease SET epoch = ?, host = 'far-away', pid = 1, user = 'ops', "
                "command = 'runbook apply', started = '2026-11-25T10:00:00.000Z', seconds = 30,"
                " released = NULL",
                (epoch,),
            )
        finally:
            con.close()
        f = STATE / f"lease-{epoch}"
        f.touch()
        at = time.time() - renewed_ago
        os.utime(f, (at, at))

    far_away(7, 0)
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 4 and "ops@far-away pid 1" in r.err and "its lease is live" in r.err
    assert _lock_json(runbook)["state"] == "live"  # another host: only expiry can tell
    assert runbook("unlock", "r.yaml").code == 2
    r = runbook("unlock", "r.yaml", "--force")
    assert r.code == 0 and "held by ops@far-away pid 1" in r.out and "epoch now 8" in r.out
    assert _lease_row()["epoch"] == 8 and _lease_row()["released"]
    assert runbook("apply", "r.yaml", "--yes").code == 0
    # not renewed for longer than its lease: taken over with a notice naming it
    far_away(20, 120)
    assert _lock_json(runbook)["state"] == "expired"
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert "took over the lease of ops@far-away pid 1" in r.out and "its lease expired" in r.out
    assert _lease_row()["epoch"] == 21


def test_lock_without_a_holder_is_exit_0(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt")]}])
    r = runbook("lock", "r.yaml")
    assert r.code == 0 and r.out.strip() == "t: nobody holds the lease"
    assert _lock_json(runbook) == {
        "state": "none",
        "epoch": 0,
        "seconds": 30.0,
        "holder": None,
        "age": None,
        "renewed": None,
        "since_renewal": None,
        "lost_since": None,
        "last_holder": None,
        "released": None,
    }
    assert not STATE.exists()  # a reader makes no state
    assert runbook("apply", "r.yaml", "--yes", "--lease", "10s").code == 0
    r = runbook("lock", "r.yaml")
    assert r.code == 0 and "nobody holds the lease (last held by" in r.out
    doc = _lock_json(runbook)
    assert doc["state"] == "none" and doc["released"] and doc["last_holder"]["user"] == ME
    assert doc["epoch"] == 1 and doc["seconds"] == 10.0
    assert status_json(runbook, "r.yaml")["run"]["holder"] is None


def test_a_bad_lease_is_exit_2_and_writes_nothing(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt")]}])
    for bad in ("soon", "0.5s", "-3s"):
        r = runbook("apply", "r.yaml", "--yes", "--lease", bad)
        assert r.code == 2 and "--lease" in r.err, (bad, r.err)
    assert not STATE.exists()


def test_unlock_force_advances_the_epoch_and_fences_the_holder(runbook) -> None:
    _slow_runbook()
    with _holder("--lease", "3s") as first:
        r = runbook("unlock", "r.yaml", "--force")
        assert r.code == 0
        assert f"held by {ME}@{HOST} pid {first.pid}" in r.out and "epoch now 2" in r.out
        assert "fenced" in r.out
        cleared = _journal_rows()
        out, err = first.communicate(timeout=120)  # its next renewal finds out
        assert first.returncode == 4, out + err
        assert "lost the lease of the state to" in err and "unlock r.yaml --force" in err
    assert _journal_rows() == cleared  # it wrote nothing after the unlock
    assert ledger_lines() == []
    row = _lease_row()
    assert row["epoch"] == 2 and row["released"] and row["command"].startswith("runbook unlock")
    assert runbook("lock", "r.yaml").out.startswith("t: nobody holds the lease")


def test_approve_and_resolve_never_take_the_lease(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    {"id": "gate", "action": "approval", "with": {"message": "go?"}},
                    sh("after", "echo after >> ledger.txt", needs=["gate"]),
                    sh("slow", "touch started; sleep 30"),
                ],
            }
        ],
    )
    with _holder() as first:
        _until(
            "the gate to wait",
            lambda: (
                {s["id"]: s["status"] for s in status_json(runbook, "r.yaml")["steps"]}["gate"]
                == "waiting"
            ),
        )
        r = runbook("approve", "r.yaml", "gate", "--comment", "ok")
        assert r.code == 0, r.output
        assert f"gate approved by {ME}" in r.out
        r = runbook("resolve", "r.yaml", "slow", "--as", "failed")
        assert r.code == 2 and "slow is running, not unknown: nothing to resolve" in r.err
        row = _lease_row()  # still the apply's, untouched
        assert (row["epoch"], row["pid"], row["released"]) == (1, first.pid, None)
        approvals = [
            json.loads(rec) for _, rec in _journal_rows() if json.loads(rec)["t"] == "approval"
        ]
        assert [a["by"] for a in approvals] == [ME]
        first.send_signal(signal.SIGKILL)
    r = runbook("apply", "r.yaml", "--yes")  # takes over; `slow` was cut: unknown
    assert r.code == 3 and "took over the lease" in r.out
    r = runbook("resolve", "r.yaml", "slow", "--as", "succeeded")
    assert r.code == 0, r.output
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["after"]


def test_the_holders_command_is_stored_with_var_values_and_url_passwords_masked(runbook) -> None:
    from runbook_engine.state.holder import shown_command

    shown = shown_command(
        ["apply", "r.yaml", "--var", "token=s3cret", "--var=pw=hunter2", "--var-file", "v.yaml"]
    )
    assert shown == "runbook apply r.yaml --var token=*** --var=pw=*** --var-file v.yaml"
    assert "hunter2" not in shown_command(["apply", "postgresql://ops:hunter2@db/x"])
    write(
        "r.yaml",
        vars={"token": {"type": "string", "default": "x"}},
        phases=[{"id": "p", "steps": [sh("slow", "touch started; sleep 30")]}],
    )
    with _holder("--var", "token=s3cret") as first:
        r = runbook("lock", "r.yaml")
        assert r.code == 0 and f"pid {first.pid}" in r.out
        assert "--var token=***" in r.out and "s3cret" not in r.out
        assert "s3cret" not in _lease_row()["command"]


def test_a_run_of_an_earlier_version_holding_lock_is_named_at_once(runbook) -> None:
    """Before the lease, a run held `lock`'s flock for its whole life with its holder written
    inside: an upgrade in the middle of such a run names it (exit 4) instead of waiting."""
    import fcntl

    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt")]}])
    STATE.mkdir(parents=True, mode=0o700)
    holder = {
        "host": "old-box",
        "pid": 77,
        "user": "ops",
        "started_at": "2026-11-30T10:00:00Z",
        "command": "runbook apply r.yaml",
    }
    fd = os.open(STATE / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, json.dumps(holder).encode())
        fcntl.flock(fd, fcntl.LOCK_EX)  # held, as that run held it
        r = runbook("apply", "r.yaml", "--yes")
        assert r.code == 4
        assert "locked by ops@old-box pid 77 since 2026-11-30T10:00:00Z" in r.err
        assert "earlier version" in r.err
        assert not (STATE / "state.db").exists() and ledger_lines() == []
    finally:
        os.close(fd)  # that run ended (or died): its flock is gone, its text left behind
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["a"] and (STATE / "lock").read_bytes() == b""


def test_a_rollback_is_refused_while_an_apply_holds_the_lease(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    sh(
                        "a",
                        "echo a >> ledger.txt",
                        rollback={
                            "action": "shell",
                            "with": {"command": "echo undo >> ledger.txt"},
                        },
                    ),
                    sh("slow", "touch started; sleep 30", needs=["a"]),
                ],
            }
        ],
    )
    with _holder() as first:
        r = runbook("rollback", "r.yaml", "--yes", "--lease", "1m")
        assert r.code == 4 and f"pid {first.pid}" in r.err and "its lease is live" in r.err
        assert _lease_row()["pid"] == first.pid
    assert ledger_lines() == ["a"]  # nothing was undone
