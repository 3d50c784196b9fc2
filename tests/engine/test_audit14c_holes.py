"""Audit 14c of the lease (merge dd8e4c8): holes found, one failing test per hole.

Each test reproduces a hole with real processes or a real second SQLite connection; none
edits product code. "Another writer is inside a write transaction" is what a holder
SIGSTOPped (or stalled on a slow disk) between its fence SELECT and its COMMIT looks like to
every other process: SQLite's write lock is held, and stays held until it resumes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.engine.helpers import RUNBOOK, ledger_lines, sh, write

STATE = Path(".runbook/t")


@pytest.fixture
def short_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's busy timeout (30 s) shortened to 0.3 s for in-process commands: the
    outcome is the same, the test is faster."""
    from runbook_engine.state import db as dbm

    real = dbm._connect

    def connect(path: Path) -> sqlite3.Connection:
        con = real(path)
        con.execute("PRAGMA busy_timeout = 300")
        return con

    monkeypatch.setattr(dbm, "_connect", connect)


@contextmanager
def _write_lock_held() -> Iterator[sqlite3.Connection]:
    """A second writer inside a write transaction (as a holder stopped before its COMMIT)."""
    con = sqlite3.connect(STATE / "state.db", isolation_level=None, timeout=5)
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
        con.close()


def _expired_far_away_holder(epoch: int = 7) -> None:
    con = sqlite3.connect(STATE / "state.db", isolation_level=None)
    try:
        con.execute(
            "UPDATE lease SET epoch = ?, host = 'far-away', pid = 1, user = 'ops', "
            "command = 'runbook apply r.yaml', started = '2026-11-25T10:00:00.000Z', "
            "seconds = 30, released = NULL",
            (epoch,),
        )
    finally:
        con.close()
    f = STATE / f"lease-{epoch}"
    f.touch()
    at = time.time() - 600
    os.utime(f, (at, at))


def _gate_then_a() -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    {"id": "gate", "action": "approval", "with": {"message": "go?"}},
                    sh("a", "echo a >> ledger.txt", needs=["gate"]),
                ],
            }
        ],
    )


# 1 -------------------------------------------------------------------------------------------
def test_takeover_while_the_old_holder_is_inside_a_write_is_an_internal_error(
    runbook, short_busy
) -> None:
    """A taker that meets the write lock of a stalled holder (SIGSTOPped after its fence,
    before COMMIT) crashes: "internal error: OperationalError: database is locked", exit 1,
    crash log. Required: exit 4 naming the holder (the state is busy/locked), no internal
    error."""
    _gate_then_a()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    _expired_far_away_holder()
    with _write_lock_held():
        r = runbook("apply", "r.yaml", "--yes")
    assert "internal error" not in r.err, r.err
    assert r.code == 4, r.output


def test_unlock_force_while_the_holder_is_inside_a_write_is_an_internal_error(
    runbook, short_busy
) -> None:
    _gate_then_a()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    _expired_far_away_holder()
    with _write_lock_held():
        r = runbook("unlock", "r.yaml", "--force")
    assert "internal error" not in r.err, r.err
    assert r.code in (2, 4), r.output


# 2 -------------------------------------------------------------------------------------------
def test_approve_beside_a_writer_in_a_transaction_says_the_state_is_damaged(
    runbook, short_busy
) -> None:
    """approve (and resolve) that wait out the busy timeout report "the state database cannot
    be read (database is locked) ... Restore it from a backup, or move it away to start
    over": a healthy state called damaged, and advice that throws away a live run's state.
    Required: say the state is busy (another command is writing), try again."""
    _gate_then_a()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    with _write_lock_held():
        r = runbook("approve", "r.yaml", "gate", "--comment", "ok")
    assert r.code != 0
    assert "move it away" not in r.err and "Restore it from a backup" not in r.err, r.err
    assert "cannot be read" not in r.err, r.err


# 3 -------------------------------------------------------------------------------------------
def test_a_takeover_folds_the_journal_before_taking_the_lease_and_succeeds_with_a_step_running() -> (
    None
):
    """``leased()`` builds the Store (reads and folds the journal) under ``guard`` *before*
    ``acquire`` takes SQLite's write lock. An old holder whose lease expired but whose epoch
    is still the row's may legally commit in between (it is not fenced yet: fencing is by
    epoch). Here the old holder is inside a write transaction when the taker starts (the
    taker's acquire waits on the write lock, up to 30 s), and commits "a running" (it started
    `a`: the ledger line is its effect). The taker then takes over with a fold that misses
    that record: `_stop_leftovers` does not stop the old holder's `a`, `a` is not made
    unknown, and the run ends "succeeded — 1 succeeded, 1 running", exit 0, with `a` left
    `running` in a succeeded run (the same apply with the record committed before it starts
    pauses, exit 3, `a` unknown). Required: the takeover decides on
    the journal as of its takeover transaction: `a` is unknown, the run pauses (exit 3), the
    ledger has one `a`."""
    from runbook_engine.state import db as dbm
    from runbook_engine.state import journal

    _gate_then_a()
    assert (
        subprocess.run([RUNBOOK, "apply", "r.yaml", "--yes"], capture_output=True).returncode == 3
    )
    assert (
        subprocess.run(
            [RUNBOOK, "approve", "r.yaml", "gate", "--comment", "ok"], capture_output=True
        ).returncode
        == 0
    )
    _expired_far_away_holder()
    run_id = next(
        r["run"] for r in _records() if r.get("t") == "run" and r.get("status") == "running"
    )
    con = sqlite3.connect(STATE / "state.db", isolation_level=None, timeout=5)
    old = dbm.Database(STATE / "state.db", con)
    con.execute("BEGIN IMMEDIATE")  # the old holder, inside its write (fence passed)
    taker = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _until_open(taker.pid, "state.db")
        time.sleep(1.5)  # the taker has read the journal and waits on the write lock
        assert taker.poll() is None
        at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        journal.append(
            old,
            [{"t": "step", "id": "a", "status": "running", "attempt": 1, "run": run_id, "at": at}],
        )
        Path("ledger.txt").write_text("a\n")  # what the old holder's `a` did
        con.execute("COMMIT")
    finally:
        con.close()
    out, err = taker.communicate(timeout=120)
    assert "took over the lease of ops@far-away" in out, out + err
    assert ledger_lines() == ["a"], (ledger_lines(), out, err)
    # observed: exit 0, "run ...: succeeded — 1 succeeded, 1 running", `a` left `running`
    # in a run marked succeeded (with the record committed before the taker starts, the same
    # apply pauses with `a` unknown, exit 3)
    assert taker.returncode == 3, out + err
    steps = {r["id"]: r["status"] for r in _records() if r.get("t") == "step"}
    assert steps["a"] == "unknown", steps


def _records() -> list[dict]:  # type: ignore[type-arg]
    import json

    con = sqlite3.connect(f"file:{STATE / 'state.db'}?mode=ro", uri=True)
    try:
        return [json.loads(r) for (r,) in con.execute("SELECT rec FROM journal ORDER BY seq")]
    finally:
        con.close()


def _until_open(pid: int, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name):
                        return
                except OSError:
                    continue
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for pid {pid} to open {name}")


# 4 -------------------------------------------------------------------------------------------
def test_lock_says_nobody_holds_the_lease_while_a_run_of_the_earlier_version_holds_lock(
    runbook,
) -> None:
    """During an upgrade, a run of the earlier version holds `lock` (flock, holder inside) on
    a schema-4 state (no `lease` table). `apply` names it (exit 4), but `runbook lock`
    prints "t: nobody holds the lease" (and status shows no holder): the command whose job is
    to say who holds the state says nobody. Required: name the earlier version's holder."""
    import fcntl
    import json

    _gate_then_a()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    con = sqlite3.connect(STATE / "state.db", isolation_level=None)
    con.execute("DROP TABLE lease")  # schema 4 is schema 5 without the lease table
    con.execute("UPDATE meta SET value = '4' WHERE key = 'version'")
    con.close()
    holder = {
        "host": "old-box",
        "pid": 77,
        "user": "ops",
        "started_at": "2026-11-30T10:00:00Z",
        "command": "runbook apply r.yaml",
    }
    fd = os.open(STATE / "lock", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(holder).encode())
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert runbook("apply", "r.yaml", "--yes").code == 4  # apply names it
        r = runbook("lock", "r.yaml")
    finally:
        os.close(fd)
    assert "nobody holds" not in r.out, r.out
    assert "old-box" in r.out, r.out


# 5 -------------------------------------------------------------------------------------------
def test_a_lease_file_that_is_a_fifo_hangs_lock_status_and_apply() -> None:
    """``holder.flocked`` opens ``lease-EPOCH`` with a blocking ``O_RDONLY`` that follows
    symlinks: a FIFO (or a symlink to one) in its place makes `lock`, `status` and `apply`
    hang forever. Required: O_NONBLOCK|O_NOFOLLOW (a lease file that is not a regular file
    is refused or judged, never waited on)."""
    _gate_then_a()
    assert (
        subprocess.run([RUNBOOK, "apply", "r.yaml", "--yes"], capture_output=True).returncode == 3
    )
    con = sqlite3.connect(STATE / "state.db", isolation_level=None)
    con.execute("UPDATE lease SET released = NULL")  # as a holder killed mid-run leaves it
    con.close()
    os.mkfifo(STATE / "lease-1", 0o600)
    for args in (["lock", "r.yaml"], ["status", "r.yaml"]):
        try:
            r = subprocess.run([RUNBOOK, *args], capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runbook {' '.join(args)} hung on a FIFO lease file") from None
        assert r.returncode in (0, 2), r


# 6 -------------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except FileNotFoundError:
        return False


def test_after_unlock_force_the_lost_holders_commands_are_left_running() -> None:
    """A holder killed mid-step leaves its shell command running (an orphan). An automatic
    takeover stops it (``_stop_leftovers``), but README/contract tell the operator to
    `unlock --force` "once that run is known to be gone": that marks the lease released, so
    the next apply takes a free lease (``took_over`` is None), never stops the orphan, and
    pauses with the step unknown while the orphan still runs and may still change things
    after the operator resolves it. Required: the apply after an unlock stops the processes
    of steps the journal says were running, as after a takeover (or unlock stops them)."""
    write(
        "r.yaml",
        phases=[
            {"id": "p", "steps": [sh("slow", "echo $$ > slow.pid; touch started; exec sleep 61")]}
        ],
    )
    holder = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    pid = 0
    try:
        deadline = time.monotonic() + 60
        while not (Path("started").exists() and Path("slow.pid").read_text().strip()):
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        pid = int(Path("slow.pid").read_text())
        holder.kill()
        holder.communicate(timeout=60)
        assert _alive(pid)  # the orphan the dead holder left
        r = subprocess.run(
            [RUNBOOK, "unlock", "r.yaml", "--force"], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r
        r = subprocess.run(
            [RUNBOOK, "apply", "r.yaml", "--yes"], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 3, r  # `slow` unknown
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the lost holder's command still runs after unlock + apply"
    finally:
        if pid and _alive(pid):
            os.kill(pid, 9)


# 7 -------------------------------------------------------------------------------------------
def test_lock_on_a_damaged_state_says_nobody_holds_the_lease(runbook) -> None:
    """``holder.probe`` turns any DatabaseError into "nobody holds the lease" (exit 0), so a
    state.db that is not a database (or not a runbook state) is reported as free, while
    `status` on the same state says exit 2 "not a runbook state database". Required: exit 2
    naming the damage, as status does (contract: "2 for an invalid runbook" at least; never a
    claim that the state is free)."""
    _gate_then_a()
    STATE.mkdir(parents=True, mode=0o700)
    (STATE / "state.db").write_bytes(b"garbage, not sqlite")
    assert runbook("status", "r.yaml").code == 2
    r = runbook("lock", "r.yaml")
    assert "nobody holds the lease" not in r.out, r.out
    assert r.code == 2, r.output


# 8 -------------------------------------------------------------------------------------------
def test_an_apply_refused_for_changes_says_nothing_was_written_but_rewrote_the_lease(
    runbook,
) -> None:
    """An apply refused because the pinned run's runbook changed (exit 2) prints "Nothing was
    written", yet it took the lease first: the `lease` row of state.db is rewritten (epoch
    advanced, the refused apply recorded as the last holder, released) — a write by a
    command that wrote nothing, and (had the last holder been expired but alive) a fencing
    of it. The project holds refusals to "writes nothing, not even a schema migration"
    (161e44f). Required: the refusal before the lease is taken, the row untouched."""
    _gate_then_a()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    before = _lease()
    text = Path("r.yaml").read_text().replace("echo a", "echo A")
    Path("r.yaml").write_text(text)
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "Nothing was written" in r.err, r.output
    assert _lease() == before


def _lease() -> tuple[object, ...]:
    con = sqlite3.connect(f"file:{STATE / 'state.db'}?mode=ro", uri=True)
    try:
        return tuple(con.execute("SELECT * FROM lease").fetchone())
    finally:
        con.close()


# 9 -------------------------------------------------------------------------------------------
def test_a_cohort_command_takes_over_a_lost_lease_silently_and_leaves_its_commands_running() -> (
    None
):
    """`runbook cohort freeze|admit|redraw` take the lease with ``leased()`` and drop
    ``lease.notice`` and ``lease.took_over`` (commands/cohort.py ``_store``): after a holder
    was killed mid-step, `cohort freeze` takes its lease over with no notice naming the lost
    holder (SPEC §8: "taken over with a notice naming the lost holder"), does not stop the
    commands it left running, and releases the lease, so the next apply finds it free and
    does not stop them either. Required: the notice, and the leftovers stopped."""
    from tests.engine import cohort_fixtures as cf

    cf.legacy_db()
    cf.migration(
        phases=[
            {
                "id": "pre",
                "steps": [sh("slow", "echo $$ > slow.pid; touch started; exec sleep 63")],
            },
            {"id": "rollout", "waves": {"cohort": "customers"}, "steps": cf.steps()},
        ]
    )
    holder = subprocess.Popen(
        [RUNBOOK, "apply", "m.yaml", "--yes", "--max-parallel", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pid = 0
    try:
        deadline = time.monotonic() + 60
        while not (Path("started").exists() and Path("slow.pid").read_text().strip()):
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        pid = int(Path("slow.pid").read_text())
        holder.kill()
        holder.communicate(timeout=60)
        r = subprocess.run(
            [RUNBOOK, "cohort", "freeze", "m.yaml"], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r
        assert f"pid {holder.pid}" in r.stdout + r.stderr, r  # the notice naming the lost holder
        r = subprocess.run(
            [RUNBOOK, "apply", "m.yaml", "--yes"], capture_output=True, text=True, timeout=120
        )
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the lost holder's command still runs"
    finally:
        if pid and _alive(pid):
            os.kill(pid, 9)


def test_status_says_holder_lost_for_a_live_run_of_the_earlier_version_holding_lock(
    runbook,
) -> None:
    """Hole 4 seen from `status`: a run of the earlier version, alive and holding `lock`, on
    its schema-4 state (no `lease` table), is shown as "running (holder lost since T: resume
    with apply)" and in JSON as holder {host: null, alive: false, lost_since: T}: a live run
    called lost (SPEC §8 shows "holder lost" only for a holder that is gone)."""
    import fcntl
    import json

    write(
        "r.yaml", phases=[{"id": "p", "steps": [sh("slow", "echo $$ > slow.pid; exec sleep 64")]}]
    )
    holder = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    pid = 0
    try:
        deadline = time.monotonic() + 60
        while not (Path("slow.pid").exists() and Path("slow.pid").read_text().strip()):
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        pid = int(Path("slow.pid").read_text())
        holder.kill()
        holder.communicate(timeout=60)
    finally:
        if pid and _alive(pid):
            os.kill(pid, 9)
    # what an earlier version's running apply looks like: schema 4, `lock` flocked, holder in it
    con = sqlite3.connect(STATE / "state.db", isolation_level=None)
    con.execute("DROP TABLE lease")
    con.execute("UPDATE meta SET value = '4' WHERE key = 'version'")
    con.close()
    for f in STATE.glob("lease-*"):
        f.unlink()
    old = {
        "host": "old-box",
        "pid": 77,
        "user": "ops",
        "started_at": "2026-11-30T10:00:00Z",
        "command": "runbook apply r.yaml",
    }
    fd = os.open(STATE / "lock", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(old).encode())
        fcntl.flock(fd, fcntl.LOCK_EX)
        line = runbook("status", "r.yaml").out.splitlines()[0]
        doc = json.loads(runbook("status", "r.yaml", "--format", "json").out)
    finally:
        os.close(fd)
    assert "holder lost" not in line, line
    assert doc["run"]["holder"]["lost_since"] is None, doc["run"]["holder"]
