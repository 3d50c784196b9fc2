"""Holes found by an audit of the PostgreSQL state backend (SPEC §8, §9, §11; issue 14).

Each test states the correct behaviour, and failed on the code the audit found: every hole is
closed now. Every command runs as its own process against a real PostgreSQL
(``tests/servers/postgres.py``)."""

# ruff: noqa: F811 - the `team` fixture is imported by name and taken as a parameter

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.engine.helpers import RUNBOOK, runbook_yaml, sh
from tests.engine.test_state_postgres import (  # noqa: F401 - the fixture is used by name
    Team,
    _gate_runbook,
    _init,
    _two_places,
    run,
    team,
)


def _journal_has(team: Team, name: str, step: str, status: str) -> bool:
    return any(
        r["t"] == "step" and r.get("id") == step and r.get("status") == status
        for _, r in team.journal(name)
    )


# -- the lease -----------------------------------------------------------------------------------


def test_hole_a_holder_whose_lease_session_is_killed_runs_on_beside_the_new_holder(
    team: Team, tmp_path: Path
) -> None:
    """What is wrong: the lease's own connection (which holds the advisory lock, the proof of
    life) is ended by the server (``pg_terminate_backend``, an idle-session timeout, a network
    drop). Another operator then takes the lease over at once ("its session is gone"), but
    ``PgLease.renew`` swallows every exception ("the server away: the next write decides") and
    reports the lease as renewed, forever: the old holder never finds out at its renewal, keeps
    its running steps going beside the new holder and only stops when a step ends and writes.

    Correct (SPEC §8/§11): a run that loses its lease finds out at its next renewal, cancels
    its running actions and exits 4: a renewal that cannot reach its session must not count
    as a renewal (reconnect and check the epoch, or treat the proof as gone)."""
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    steps = [
        {"id": "w", "action": "wait", "with": {"duration": "150s"}, "rollback": "none"},
        sh("after", "echo after >> ledger.txt", needs=["w"]),
    ]
    for d in (ana, bo):
        (d / "r.yaml").write_text(runbook_yaml("killed", phases=[{"id": "p", "steps": steps}]))
    old = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "3s"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    new: subprocess.Popen[str] | None = None
    old_out = old_err = ""
    still_running_after_60s = False
    try:
        deadline = time.monotonic() + 90
        while not _journal_has(team, "killed", "w", "running"):
            assert time.monotonic() < deadline and old.poll() is None
            time.sleep(0.05)
        # the holder's lease session: the one session of role_a holding an advisory lock
        pids = team.sql(
            "SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.usename = %s",
            (role_a,),
        )
        assert len(pids) == 1, pids
        team.sql("SELECT pg_terminate_backend(%s)", (pids[0][0],))
        new = subprocess.Popen(
            [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "3s"], cwd=bo,
            env=team.env(role_b), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while team.sql('SELECT "user" FROM runbook.lease WHERE runbook = %s', ("killed",)) != [
            (role_b,)
        ]:
            assert time.monotonic() < deadline, new.poll()
            time.sleep(0.05)
        # renewals every second: the old holder must have found out long before 60 s
        try:
            old_out, old_err = old.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            still_running_after_60s = True
    finally:
        for p in (old, new):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert not still_running_after_60s, (
        "the old holder was still running its steps 60 s after another operator took its lease over"
    )
    assert old.returncode == 4, old_out + old_err
    assert f"lost the lease of the state to {role_b}@" in old_err


def test_hole_a_huge_lease_is_an_internal_error_instead_of_exit_2(
    team: Team, tmp_path: Path
) -> None:
    """What is wrong: ``--lease 99999999999999h`` passes the option's check (only a minimum)
    and reaches ``UPDATE runbook.lease SET lease_ms = …``, where it overflows BIGINT:
    ``runbook: internal error: NumericValueOutOfRange: bigint out of range`` (exit 1, a crash
    log). Correct (HELPERS 3, "bad input"): a clear error naming ``--lease``, exit 2, nothing
    written."""
    role = next(iter(team.roles))
    steps = [{"id": "a", "action": "wait", "with": {"duration": "0s"}, "rollback": "none"}]
    (tmp_path / "r.yaml").write_text(runbook_yaml("huge", phases=[{"id": "p", "steps": steps}]))
    r = run(tmp_path, team.env(role), "apply", "r.yaml", "--yes", "--lease", "99999999999999h")
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--lease" in r.stderr
    assert team.journal("huge") == []


# -- approvals beside a stalled holder ----------------------------------------------------------


def test_hole_approve_hangs_forever_beside_a_holder_stopped_inside_a_write(
    team: Team, tmp_path: Path
) -> None:
    """What is wrong: a holder stopped (SIGSTOP, a paused VM, a debugger) inside its write
    transaction keeps the runbook's appenders' advisory lock
    (``pg_advisory_xact_lock(hashtextextended('runbook.journal:' || name, 0))``) and its share
    lock on the lease row. ``approve`` appends its decision under the same advisory lock with
    no ``lock_timeout``: it waits as long as the holder is stopped (here: still waiting after
    60 s), although SPEC §11 says approve never waits for the run's lease, and takeover and
    ``unlock --force`` in the same situation say "busy … try again" (exit 4) after
    ``lock_timeout``.

    Correct: approve gives up after a bounded wait with exit 4 saying the state is busy (or
    otherwise returns), recording nothing."""
    import psycopg

    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _gate_runbook(ana, bo)
    paused = run(ana, team.env(role_a), "apply", "r.yaml", "--yes")
    assert paused.returncode == 3, paused.stdout + paused.stderr
    before = team.journal("team")
    hung = False
    got: subprocess.CompletedProcess[str] | None = None
    with psycopg.connect(team.admin) as conn:  # the stalled writer, inside its transaction
        conn.execute("SELECT epoch FROM runbook.lease WHERE runbook = 'team' FOR SHARE")
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('runbook.journal:team', 0))")
        try:
            got = subprocess.run(
                [RUNBOOK, "approve", "r.yaml", "go"], cwd=bo, env=team.env(role_b),
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            hung = True
        conn.rollback()
    assert not hung, "approve was still waiting after 60 s beside the stalled writer"
    assert got is not None and got.returncode == 4, got.stdout + got.stderr
    assert "busy" in got.stderr
    assert team.journal("team") == before


# -- secrets in the state URL -------------------------------------------------------------------


def _port_db(team: Team) -> str:
    return f"127.0.0.1:{team.port}/{team.db}"


def test_hole_state_init_prints_the_password_of_a_url_with_a_bad_percent_escape(
    team: Team, tmp_path: Path
) -> None:
    """What is wrong: a password with a stray ``%`` (``s3cret-Pa55%``, as typed by a person
    who did not percent-encode it) makes libpq fail with ``invalid percent-encoded token:
    "s3cret-Pa55%"``; ``pg.connect`` masks the URL but not libpq's reason, and `state init`
    (which takes the URL as an argument) prints the password in clear on stderr. (`status`,
    `apply` and `lock` given the same URL with ``--state`` happen to mask it.)

    Correct (SPEC §8 "Credentials", §9): the password is masked wherever the URL, or any part
    of it, is printed."""
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_STATE" and not k.startswith("PG")}
    for url in (
        f"postgresql://postgres:s3cret-Pa55%@{_port_db(team)}",
        f"postgresql://{_port_db(team)}?user=postgres&password=s3cret-Pa55%zz",
        f"postgresql://postgres@{_port_db(team)}?sslpassword=s3cret-Pa55%zz",
        f"postgresql://postgres:s3cret-Pa55%41@{_port_db(team)}?sslmode=bogus",
    ):
        r = run(tmp_path, env, "state", "init", url)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "cannot connect to the state database" in r.stderr
        assert "s3cret-Pa55" not in r.stdout + r.stderr, r.stderr


def test_hole_the_sslpassword_of_a_state_url_is_printed_and_stored_in_clear(
    team: Team, tmp_path: Path
) -> None:
    """What is wrong: libpq takes ``sslpassword=`` (the passphrase of the client key) in a
    URL's query. The masking pattern is ``\\bpassword\\s*=`` and there is no word boundary
    inside ``sslpassword``, so the passphrase is printed in clear in every error that shows
    the URL (here: a database that does not exist) and stored in clear in the lease row's
    ``command`` (any operator with SELECT reads it, `runbook lock` prints it).

    Correct (SPEC §8 "Credentials", §9): every password-like parameter of the URL
    (``password``, ``sslpassword``) is masked in what is printed and what is stored."""
    role = next(iter(team.roles))
    secret = "Client-Key-Passphrase-7"
    env = {
        k: v for k, v in team.env(role).items() if k != "RUNBOOK_STATE"
    }  # PGUSER/PGPASSWORD stay
    steps = [sh("wait", "touch started; while [ ! -f go ]; do sleep 0.05; done")]
    (tmp_path / "r.yaml").write_text(runbook_yaml("sslpw", phases=[{"id": "p", "steps": steps}]))
    missing = f"postgresql://127.0.0.1:{team.port}/nodb_{team.db}?sslpassword={secret}"
    refused = run(tmp_path, env, "--state", missing, "status", "r.yaml")
    assert refused.returncode == 2, refused.stderr
    assert "cannot connect to the state database" in refused.stderr
    url = f"postgresql://{_port_db(team)}?sslpassword={secret}"
    proc = subprocess.Popen(
        [RUNBOOK, "--state", url, "apply", "r.yaml", "--yes"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        stored = team.sql("SELECT command FROM runbook.lease WHERE runbook = 'sslpw'")
        shown_lock = run(tmp_path, env, "--state", url, "lock", "r.yaml", "--format", "json")
    finally:
        (tmp_path / "go").touch()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert stored and stored[0][0], stored
    texts = team.sql("SELECT rec FROM runbook.journal WHERE runbook = 'sslpw'")
    leaks = {
        "stderr of status": secret in refused.stderr,
        "runbook.lease.command": secret in stored[0][0],
        "runbook lock": secret in shown_lock.stdout + shown_lock.stderr,
        "journal": any(secret in t for (t,) in texts),
        "apply's output": secret in out + err,
    }
    assert not any(leaks.values()), leaks


# -- the schema ----------------------------------------------------------------------------------


def test_hole_state_init_adopts_a_schema_runbook_created_by_another_role(
    pg_dsn: str, tmp_path: Path
) -> None:
    """What is wrong: ``state init`` runs ``CREATE SCHEMA IF NOT EXISTS runbook`` and, when
    ``runbook.meta`` is missing, creates the state tables inside whatever schema ``runbook``
    is there, whoever owns it and whatever it holds. A role that could create the schema
    first (CREATE on the database) keeps owning it: it can drop or replace the journal and
    lease tables the state trusts (here it drops ``runbook.journal`` with every record after
    the team started using it), and its own objects sit beside them.

    Correct: ``state init`` refuses (exit 2, naming the owner and the objects found) a schema
    ``runbook`` that it did not create: one owned by another role, or not empty without
    ``runbook.meta``; nothing is created in it."""
    import psycopg

    db = pg_dsn.rsplit("/", 1)[1]
    mallory = f"{db}_mallory"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {mallory} LOGIN PASSWORD 'mallory-pw-1'")
        conn.execute(f"CREATE SCHEMA runbook AUTHORIZATION {mallory}")
        conn.execute(f"GRANT CONNECT ON DATABASE {db} TO {mallory}")
    try:
        mallory_url = f"postgresql://{mallory}:mallory-pw-1@" + pg_dsn.split("@", 1)[1]
        with psycopg.connect(mallory_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE runbook.collected (rec TEXT)")
        r = _init(pg_dsn, tmp_path)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = 'runbook'"
                )
            }
        try:  # what the schema's owner can do to the team's state afterwards
            with psycopg.connect(mallory_url, autocommit=True) as conn:
                conn.execute("DROP TABLE runbook.journal")
            dropped = True
        except psycopg.Error:
            dropped = False
        seen = {"exit": r.returncode, "tables": sorted(tables), "owner dropped journal": dropped}
        assert seen == {"exit": 2, "tables": ["collected"], "owner dropped journal": False}, seen
        assert mallory in r.stderr
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS runbook CASCADE")
            conn.execute(f"DROP OWNED BY {mallory}")
            conn.execute(f"DROP ROLE {mallory}")


# -- approvals and the clocks --------------------------------------------------------------------

# a laptop whose clock runs a day ahead: `datetime.now` and `time.time` of the process moved,
# as libfaketime would (the program is not changed: this only runs before it)
_AHEAD = """
import datetime as _d, time as _t, warnings as _w
_w.filterwarnings("ignore", message="datetime.datetime size changed")
_SKEW = _d.timedelta(days=1)
_Real = _d.datetime
class _Ahead(_Real):
    @classmethod
    def now(cls, tz=None):
        return _Real.now(tz) + _SKEW
    @classmethod
    def utcnow(cls):
        return _Real.utcnow() + _SKEW
_d.datetime = _Ahead
_real_time = _t.time
_t.time = lambda: _real_time() + _SKEW.total_seconds()
"""


def test_hole_an_approvers_clock_ahead_keeps_an_expired_approval_counting(
    team: Team, tmp_path: Path
) -> None:
    """What is wrong: on PostgreSQL the approval record's ``at`` is the approving machine's
    clock (``now()`` in Python), and ``expires`` is judged as ``apply's clock - at``. An
    approver whose laptop clock runs a day ahead (here simulated for that one process) records
    an approval dated tomorrow: with ``expires: 2s`` it is still counted by the next apply
    after more than 2 s by every other clock (the database's, the starter's), and would be for
    a day. The step it guards runs on an expired approval.

    Correct: on the PostgreSQL backend an approval's time comes from the database clock (as
    the lease's does), or an approval dated in the future is refused/void; after ``expires``
    by the database clock the approval no longer counts: the next apply pauses again (exit 3)
    and `status` says ``approval void: expired``."""
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    steps = [
        sh("a", "echo a >> ledger.txt"),
        {
            "id": "go",
            "action": "approval",
            "needs": ["a"],
            "with": {"message": "go?", "expires": "2s"},
        },
        sh("b", "echo b >> ledger.txt", needs=["go"]),
    ]
    for d in (ana, bo):
        (d / "r.yaml").write_text(runbook_yaml("skew", phases=[{"id": "p", "steps": steps}]))
    paused = run(ana, team.env(role_a), "apply", "r.yaml", "--yes")
    assert paused.returncode == 3, paused.stdout + paused.stderr
    skew = tmp_path / "skew"
    skew.mkdir()
    (skew / "sitecustomize.py").write_text(_AHEAD)
    env_b = {**team.env(role_b), "PYTHONPATH": str(skew)}
    got = run(bo, env_b, "approve", "r.yaml", "go")
    assert got.returncode == 0, got.stdout + got.stderr
    (db_now,) = team.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD')")[0]
    (at,) = [r["at"] for _, r in team.journal("skew") if r["t"] == "approval"]
    time.sleep(4)  # the approval is now older than its 2 s by every clock but its approver's
    again = run(ana, team.env(role_a), "apply", "r.yaml", "--yes")
    seen = {
        "approval dated by the database's day": at.startswith(db_now),
        "apply exit": again.returncode,
        "b ran": "b" in (ana / "ledger.txt").read_text().split(),
    }
    assert seen == {
        "approval dated by the database's day": True,
        "apply exit": 3,
        "b ran": False,
    }, (seen, at, again.stdout + again.stderr)
    shown = run(ana, team.env(role_a), "status", "r.yaml")
    assert "approval void: expired" in shown.stdout, shown.stdout + shown.stderr


def test_an_approval_dated_in_the_future_does_not_count_on_a_directory(tmp_path: Path) -> None:
    """On a directory an approval is dated by the approver's clock: one dated further in the
    future than a small skew (a clock ahead) does not count, and `status` says why."""
    steps = [
        sh("a", "echo a >> ledger.txt"),
        {"id": "go", "action": "approval", "needs": ["a"], "with": {"expires": "1h"}},
        sh("b", "echo b >> ledger.txt", needs=["go"]),
    ]
    (tmp_path / "r.yaml").write_text(runbook_yaml("ahead", phases=[{"id": "p", "steps": steps}]))
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_STATE"}
    paused = run(tmp_path, env, "apply", "r.yaml", "--yes")
    assert paused.returncode == 3, paused.stdout + paused.stderr
    skew = tmp_path / "skew"
    skew.mkdir()
    (skew / "sitecustomize.py").write_text(_AHEAD)
    got = run(tmp_path, {**env, "PYTHONPATH": str(skew)}, "approve", "r.yaml", "go")
    assert got.returncode == 0, got.stdout + got.stderr
    again = run(tmp_path, env, "apply", "r.yaml", "--yes")
    assert again.returncode == 3, again.stdout + again.stderr
    assert (tmp_path / "ledger.txt").read_text().split() == ["a"]
    shown = run(tmp_path, env, "status", "r.yaml")
    assert "approval void: dated in the future" in shown.stdout, shown.stdout + shown.stderr


# -- unlock --force ------------------------------------------------------------------------------


def test_hole_unlock_force_of_a_frozen_holder_locks_every_apply_out(
    team: Team, tmp_path: Path
) -> None:
    """What is wrong: ``unlock --force`` clears the lease row (no host, no pid) and bumps the
    epoch, but the frozen holder's session keeps its advisory lock. ``PgLease._swap`` then
    sees no holder and a lock that is not free and refuses every apply with "the state of
    … is being locked by another process right now; try again" (exit 4), for as long as the
    frozen process lives (hours, for a paused VM), while `runbook lock` says "nobody holds
    the lease" (exit 0). Without the `unlock --force` the same apply would have taken the
    expired lease over: forcing the lock makes the state unusable.

    Correct: after `unlock --force` the next apply takes the lease (the epoch the frozen
    session held is fenced already; its advisory lock proves nothing about the new epoch),
    and `lock` and `apply` agree about whether anyone holds it."""
    from tests.engine.test_state_postgres import _blocking_runbook, _wait_starts

    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _blocking_runbook(ana, "forced", idempotent=True)
    _blocking_runbook(bo, "forced", idempotent=True)
    old = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "2s"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    new: subprocess.Popen[str] | None = None
    tries: list[str] = []
    took_over = False
    try:
        _wait_starts(ana, 1)
        os.kill(old.pid, signal.SIGSTOP)
        forced = run(bo, team.env(role_b), "unlock", "r.yaml", "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "lease of forced cleared" in forced.stdout + forced.stderr
        deadline = time.monotonic() + 30  # far past the 2 s lease
        while time.monotonic() < deadline and not took_over:
            new = subprocess.Popen(
                [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "2s"], cwd=bo,
                env=team.env(role_b), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            while new.poll() is None and not took_over:
                took_over = team.sql(
                    'SELECT "user", pid FROM runbook.lease WHERE runbook = %s', ("forced",)
                ) == [(role_b, new.pid)]
                time.sleep(0.1)
            if not took_over:
                _out, err = new.communicate()
                tries.append(f"exit {new.returncode}: {err.strip()}")
                time.sleep(1)
        lock = run(bo, team.env(role_b), "lock", "r.yaml")
    finally:
        (tmp_path / "release").touch()
        os.kill(old.pid, signal.SIGCONT)
        for p in (old, new):
            if p is not None and p.poll() is None:
                try:
                    p.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate()
    assert took_over, (tries[-3:], lock.stdout + lock.stderr)
    assert lock.returncode == 0 and f"{role_b}@" in lock.stdout, lock.stdout + lock.stderr
    assert old.returncode == 4, "the fenced holder, resumed, must stop with exit 4"
    assert new is not None and new.returncode == 0, new.returncode


# -- the state database going away --------------------------------------------------------------


def test_hole_a_run_whose_state_connection_is_cut_dies_with_an_internal_error(
    team: Team, tmp_path: Path
) -> None:
    """What is wrong: the run's state connection (not the lease's) is ended by the server
    while a step runs (a restart, a failover, an administrator's ``pg_terminate_backend``).
    The scheduler's next read of the journal (``Store.refresh`` for new decisions, unguarded:
    only writes catch ``write_errors``) raises ``psycopg.errors.AdminShutdown`` and the run
    ends with ``runbook: internal error: AdminShutdown: terminating connection due to
    administrator command`` (exit 1, a crash log).

    Correct: a located error saying the state database connection was lost, no internal
    error, nothing more started (as for a write that fails: "cannot write the state …
    run `runbook apply` again to resume"), and the step after it never runs."""
    role = next(iter(team.roles))
    steps = [
        {"id": "w", "action": "wait", "with": {"duration": "5s"}, "rollback": "none"},
        sh("after", "echo after >> ledger.txt", needs=["w"]),
    ]
    (tmp_path / "r.yaml").write_text(runbook_yaml("cut", phases=[{"id": "p", "steps": steps}]))
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=tmp_path, env=team.env(role),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not _journal_has(team, "cut", "w", "running"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        # every session of the run but the lease's (which holds the advisory lock)
        cut = team.sql(
            "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a WHERE a.usename = %s"
            " AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
            " AND l.locktype = 'advisory')",
            (role,),
        )
        assert cut and all(ok for (ok,) in cut), cut
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "internal error" not in err and "Traceback" not in err, err
    assert "state" in err and proc.returncode != 0, out + err
    assert "the connection to the state database was lost" in err, err
    assert "run `runbook apply` again" in err or "`runbook apply` again" in err, err
    assert not (tmp_path / "ledger.txt").exists()
    shown = run(tmp_path, team.env(role), "status", "r.yaml")
    assert shown.returncode != 1 and "internal error" not in shown.stderr, shown.stderr
    assert "after" in shown.stdout and "succeeded" not in shown.stdout.split("after", 1)[1], (
        shown.stdout
    )


def test_state_init_refuses_a_schema_runbook_holding_objects_of_others(
    pg_dsn: str, tmp_path: Path
) -> None:
    """A schema ``runbook`` of the role that runs `state init` but holding objects that are
    not the state's (another tool's table, a view) is refused (exit 2, naming them); nothing
    is created in it. Once they are gone, `state init` creates the state."""
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA runbook")
        conn.execute("CREATE TABLE runbook.collected (rec TEXT)")
    try:
        r = _init(pg_dsn, tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "collected" in r.stderr and "left untouched" in r.stderr, r.stderr
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            got = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'runbook'"
            ).fetchall()
            assert got == [("collected",)], got
            conn.execute("DROP TABLE runbook.collected")
        again = _init(pg_dsn, tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        twice = _init(pg_dsn, tmp_path)  # its own schema, again: no refusal
        assert twice.returncode == 0, twice.stdout + twice.stderr
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS runbook CASCADE")


def test_an_apply_whose_clock_runs_ahead_judges_approvals_by_the_database_clock(
    team: Team, tmp_path: Path
) -> None:
    """On PostgreSQL an approval is dated by the database clock and its ``expires`` judged by
    the same clock: an apply on a machine whose clock runs a day ahead neither voids an
    approval given a moment ago (1 h to go) nor lets it count for longer."""
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    steps = [
        sh("a", "echo a >> ledger.txt"),
        {"id": "go", "action": "approval", "needs": ["a"], "with": {"expires": "1h"}},
        sh("b", "echo b >> ledger.txt", needs=["go"]),
    ]
    for d in (ana, bo):
        (d / "r.yaml").write_text(runbook_yaml("ahead", phases=[{"id": "p", "steps": steps}]))
    paused = run(ana, team.env(role_a), "apply", "r.yaml", "--yes")
    assert paused.returncode == 3, paused.stdout + paused.stderr
    got = run(bo, team.env(role_b), "approve", "r.yaml", "go")
    assert got.returncode == 0, got.stdout + got.stderr
    skew = tmp_path / "skew"
    skew.mkdir()
    (skew / "sitecustomize.py").write_text(_AHEAD)
    again = run(ana, {**team.env(role_a), "PYTHONPATH": str(skew)}, "apply", "r.yaml", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (ana / "ledger.txt").read_text().split() == ["a", "b"]
