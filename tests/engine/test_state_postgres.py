"""The run state on PostgreSQL (SPEC §8, issue 14): `state init`, journal rows, the lease of two
operators with their own roles, fencing of a frozen holder, the crash campaign, the audit
chain, and the ledger, outbox and foreach held there; `runbook lock` and `status` reading the lease, `unlock
--force`, approve and resolve beside a running apply (never taking the lease, `allow_self`
false by default), and the pinned vars' per-runbook key. Every command runs as its own process (two operators,
two machines), against a real server (``tests/servers/postgres.py``)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import RUNBOOK, runbook_yaml, sh, write_subs_runbook
from tests.engine.test_crash import STEPS, _ledger_runbook


@dataclass
class Team:
    """One database with the schema, and two operators' roles with only the README's grants."""

    port: int
    db: str
    admin: str  # the superuser's URL (password included): `state init`, inspection
    roles: dict[str, str]  # role -> password

    @property
    def url(self) -> str:
        """The URL operators share: no user, no password (PGUSER/PGPASSWORD say who)."""
        return f"postgresql://127.0.0.1:{self.port}/{self.db}"

    def env(self, role: str) -> dict[str, str]:
        return {
            **os.environ,
            "RUNBOOK_STATE": self.url,
            "PGUSER": role,
            "PGPASSWORD": self.roles[role],
        }

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def journal(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        rows = self.sql(
            "SELECT seq, rec FROM runbook.journal WHERE runbook = %s ORDER BY seq", (name,)
        )
        return [(int(seq), json.loads(rec)) for seq, rec in rows]


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNBOOK, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def _init(admin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_STATE"}
    return run(cwd, env, "state", "init", admin)


@pytest.fixture
def team(postgres_server: Any, pg_dsn: str, tmp_path: Path) -> Iterator[Team]:
    db = pg_dsn.rsplit("/", 1)[1]
    r = _init(pg_dsn, tmp_path)
    assert r.returncode == 0, r.stderr
    roles = {f"{db}_{who}": "pw-" + secrets.token_hex(6) for who in ("ana", "bo")}
    t = Team(postgres_server.port, db, pg_dsn, roles)
    group = f"{db}_operators"
    # the README's grants, nothing more
    t.sql(f"CREATE ROLE {group} NOLOGIN")
    t.sql(f"GRANT CONNECT ON DATABASE {db} TO {group}")
    t.sql(f"GRANT USAGE ON SCHEMA runbook TO {group}")
    t.sql(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA runbook TO {group}")
    for role, password in roles.items():
        t.sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE {group}")
    yield t
    postgres_server.drop_database(db)  # its grants go with it; roles are the cluster's
    import psycopg

    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        for role in [*roles, group]:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _two_places(tmp_path: Path) -> tuple[Path, Path]:
    """Two operators' working copies of the same runbook (two machines)."""
    a, b = tmp_path / "ana", tmp_path / "bo"
    a.mkdir()
    b.mkdir()
    return a, b


def _gate_runbook(*dirs: Path) -> None:
    steps = [
        sh("a", "echo a >> ledger.txt"),
        {"id": "go", "action": "approval", "needs": ["a"], "with": {"message": "go?"}},
        sh("b", "echo b >> ledger.txt", needs=["go"]),
    ]
    for d in dirs:
        (d / "r.yaml").write_text(runbook_yaml("team", phases=[{"id": "p", "steps": steps}]))


# -- state init ------------------------------------------------------------------------------


def test_state_init_twice_is_idempotent_and_a_newer_schema_is_exit_2(
    pg_dsn: str, tmp_path: Path
) -> None:
    import psycopg

    first = _init(pg_dsn, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "created the state schema runbook (version 4)" in first.stdout
    password = pg_dsn.split(":")[2].split("@")[0]
    assert password not in first.stdout + first.stderr and ":***@" in first.stdout
    again = _init(pg_dsn, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "is current (version 4): nothing to do" in again.stdout
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        meta = dict(conn.execute("SELECT key, value FROM runbook.meta").fetchall())
        assert meta == {"format": "runbook-state", "version": "4"}
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'runbook'"
            )
        }
        assert tables == {
            "meta",
            "state",
            "journal",
            "lease",
            "cohort",
            "entity",
            "transition",
            "message",
            "outbox",
        }
        conn.execute("UPDATE runbook.meta SET value = '99' WHERE key = 'version'")
    newer = _init(pg_dsn, tmp_path)
    assert newer.returncode == 2
    assert "version 99, newer than this program's (4)" in newer.stderr
    assert "Traceback" not in newer.stderr and password not in newer.stderr
    (tmp_path / "r.yaml").write_text(
        runbook_yaml("n", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    )
    env = {**os.environ, "RUNBOOK_STATE": pg_dsn}
    applied = run(tmp_path, env, "apply", "r.yaml", "--yes")
    assert applied.returncode == 2
    assert "written by another version of runbook (schema 99" in applied.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT value FROM runbook.meta WHERE key = 'version'").fetchone() == (
            "99",
        )
        assert conn.execute("SELECT count(*) FROM runbook.journal").fetchone() == (0,)


def test_a_database_without_the_schema_is_exit_2_saying_to_run_state_init(
    pg_dsn: str, tmp_path: Path
) -> None:
    import psycopg

    (tmp_path / "r.yaml").write_text(
        runbook_yaml("n", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    )
    env = {**os.environ, "RUNBOOK_STATE": pg_dsn}
    for args in (("apply", "r.yaml", "--yes"), ("status", "r.yaml"), ("audit", "r.yaml")):
        r = run(tmp_path, env, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "has no runbook state schema; create it with `runbook state init " in r.stderr
        assert "Traceback" not in r.stderr
        password = pg_dsn.split(":")[2].split("@")[0]
        assert password not in r.stdout + r.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('runbook')").fetchone() == (None,)
    assert not (tmp_path / ".runbook").exists()


# -- location ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "mysql://u:hunter2-x@db/state",
        "s3://bucket/state",
        "sqlite:///tmp/x.db",
        "redis://:hunter2-x@h",
    ],
)
def test_a_state_url_of_another_scheme_is_exit_2_and_no_folder(value: str) -> None:
    (Path.cwd() / "r.yaml").write_text(
        runbook_yaml("n", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    )
    for env_or_flag in ("flag", "env"):
        env = dict(os.environ)
        args: list[str] = []
        if env_or_flag == "env":
            env["RUNBOOK_STATE"] = value
        else:
            args = ["--state", value]
        r = run(Path.cwd(), env, *args, "apply", "r.yaml", "--yes")
        assert r.returncode == 2, r.stderr
        assert "is not supported; give a directory or postgresql://" in r.stderr
        assert "hunter2" not in r.stdout + r.stderr
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["r.yaml"]


def test_a_password_in_the_url_is_masked_in_errors_status_audit_and_the_lease(
    team: Team, tmp_path: Path
) -> None:
    role = next(iter(team.roles))
    password = team.roles[role]
    url = f"postgresql://{role}:{password}@127.0.0.1:{team.port}/{team.db}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    steps = [sh("wait", "touch started; while [ ! -f go ]; do sleep 0.05; done")]
    (tmp_path / "r.yaml").write_text(runbook_yaml("masked", phases=[{"id": "p", "steps": steps}]))
    proc = subprocess.Popen(
        [RUNBOOK, "--state", url, "apply", "r.yaml", "--yes"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(tmp_path / "started")
        lease = team.sql(
            'SELECT command, "user" FROM runbook.lease WHERE runbook = %s', ("masked",)
        )
        assert lease and password not in lease[0][0] and ":***@" in lease[0][0]
        assert lease[0][1] == role
        status = run(tmp_path, env, "--state", url, "status", "r.yaml", "--format", "json")
        assert status.returncode == 0, status.stderr
        assert password not in status.stdout + status.stderr
        assert json.loads(status.stdout)["run"]["holder"]["user"] == role
    finally:
        (tmp_path / "go").touch()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert password not in out + err
    audit = run(tmp_path, env, "--state", url, "audit", "r.yaml")
    assert audit.returncode == 0 and f"{role}:***@127.0.0.1" in audit.stdout
    assert password not in audit.stdout
    bad = url.replace(str(team.port), "1")  # nothing listens on port 1
    refused = run(tmp_path, env, "--state", bad, "status", "r.yaml")
    assert refused.returncode == 2
    assert "cannot connect to the state database" in refused.stderr
    assert password not in refused.stderr and ":***@" in refused.stderr
    (tmp_path / "other.yaml").write_text(
        runbook_yaml("other", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    )
    never = run(tmp_path, env, "--state", url, "report", "other.yaml")
    assert never.returncode == 2 and "has never been applied" in never.stderr
    assert password not in never.stderr and f"{role}:***@" in never.stderr
    texts = team.sql("SELECT rec FROM runbook.journal WHERE runbook = 'masked'")
    assert texts and not any(password in t for (t,) in texts)


# -- one run, seen from two places --------------------------------------------------------------


def test_apply_on_postgresql_then_status_from_another_process_sees_the_same_run(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    steps = [
        sh("one", "echo one >> ledger.txt"),
        sh("two", "echo two >> ledger.txt", needs=["one"]),
    ]
    for d in (ana, bo):
        (d / "r.yaml").write_text(runbook_yaml("plain", phases=[{"id": "p", "steps": steps}]))
    r = run(ana, team.env(role_a), "apply", "r.yaml", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (ana / "ledger.txt").read_text().split() == ["one", "two"]
    assert not (ana / ".runbook").exists() and not (bo / ".runbook").exists()
    seen = run(bo, team.env(role_b), "status", "r.yaml", "--format", "json")
    assert seen.returncode == 0, seen.stderr
    doc = json.loads(seen.stdout)
    journal = team.journal("plain")
    runs = [rec for _, rec in journal if rec["t"] == "run"]
    assert doc["run"]["id"] == runs[0]["run"] and doc["run"]["status"] == "succeeded"
    assert {s["id"]: s["status"] for s in doc["steps"]} == {"one": "succeeded", "two": "succeeded"}
    assert runs[0]["user"] == role_a  # session_user, not the OS user
    assert [seq for seq, _ in journal] == list(range(1, len(journal) + 1))
    # one state row, the lease given back
    assert team.sql("SELECT runbook FROM runbook.state") == [("plain",)]
    assert team.sql('SELECT host, "user" FROM runbook.lease') == [(None, None)]
    text = run(bo, team.env(role_b), "status", "r.yaml")
    assert text.returncode == 0 and "succeeded" in text.stdout.splitlines()[0]


def test_an_approval_gate_is_approved_and_resumed_by_another_operator(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _gate_runbook(ana, bo)
    first = run(ana, team.env(role_a), "apply", "r.yaml", "--yes")
    assert first.returncode == 3, first.stdout + first.stderr
    assert "go waits: go?" in first.stdout
    approved = run(bo, team.env(role_b), "approve", "r.yaml", "go", "--by", "maria")
    assert approved.returncode == 0, approved.stderr
    assert f"go approved by {role_b} on behalf of maria" in approved.stdout
    recs = [rec for _, rec in team.journal("team") if rec["t"] == "approval"]
    assert [(r["by"], r["on_behalf_of"]) for r in recs] == [(role_b, "maria")]
    again = run(bo, team.env(role_b), "approve", "r.yaml", "go")
    assert again.returncode == 2 and f"already approved by {role_b}" in again.stderr
    assert len([r for _, r in team.journal("team") if r["t"] == "approval"]) == 1
    resumed = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (ana / "ledger.txt").read_text().split() == ["a"]
    assert (bo / "ledger.txt").read_text().split() == ["b"]  # b ran once, where resumed
    status = json.loads(run(ana, team.env(role_a), "status", "r.yaml", "--format", "json").stdout)
    assert status["run"]["status"] == "succeeded"
    audit = run(ana, team.env(role_a), "audit", "r.yaml")
    assert audit.returncode == 0 and "chain holds" in audit.stdout


# -- the lease ---------------------------------------------------------------------------------


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _blocking_runbook(d: Path, name: str, *, idempotent: bool = False) -> None:
    """s1 signals that it started and waits for the file `release`; s2 follows."""
    s1 = sh(
        "s1",
        "echo $$ >> starts; while [ ! -f ../release ]; do sleep 0.05; done; echo s1 >> ledger.txt",
    )
    if idempotent:
        s1["idempotent"] = True
    steps = [s1, sh("s2", "echo s2 >> ledger.txt", needs=["s1"])]
    (d / "r.yaml").write_text(runbook_yaml(name, phases=[{"id": "p", "steps": steps}]))


def _starts(d: Path) -> int:
    p = d / "starts"
    return len(p.read_text().split()) if p.exists() else 0


def _wait_starts(d: Path, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _starts(d) < n:
        assert time.monotonic() < deadline, f"{d}: {n} start(s) never came"
        time.sleep(0.02)


def test_two_applies_with_two_roles_exactly_one_runs_the_other_exit_4_naming_it(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _blocking_runbook(ana, "race")
    _blocking_runbook(bo, "race")
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_starts(ana, 1)
        before = team.journal("race")
        second = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
        assert second.returncode == 4, second.stdout + second.stderr
        host = socket.gethostname()
        assert f"locked by {role_a}@{host} pid {proc.pid} since " in second.stderr
        assert team.journal("race") == before  # the second wrote nothing
        assert _starts(bo) == 0
        row = team.sql('SELECT "user", pid, epoch FROM runbook.lease WHERE runbook = %s', ("race",))
        assert row == [(role_a, proc.pid, 1)]
    finally:
        (tmp_path / "release").touch()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert (ana / "ledger.txt").read_text().split() == ["s1", "s2"]
    assert not (bo / "ledger.txt").exists()
    runs = {rec["run"] for _, rec in team.journal("race") if rec["t"] == "run"}
    assert len(runs) == 1


def test_an_expired_lease_is_taken_over_and_the_frozen_holder_is_fenced(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _blocking_runbook(ana, "fence", idempotent=True)
    _blocking_runbook(bo, "fence", idempotent=True)
    old = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "2s"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    new: subprocess.Popen[str] | None = None
    try:
        _wait_starts(ana, 1)
        os.kill(old.pid, signal.SIGSTOP)
        # not yet expired: refused, naming the (frozen) holder
        early = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
        assert early.returncode == 4 and f"locked by {role_a}@" in early.stderr
        deadline = time.monotonic() + 60
        while not team.sql(
            "SELECT 1 FROM runbook.lease WHERE runbook = 'fence'"
            " AND clock_timestamp() - renewed_at > interval '2.5 seconds'"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        taken_at = len(team.journal("fence"))
        new = subprocess.Popen(
            [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=bo, env=team.env(role_b),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_starts(bo, 1)  # the new holder runs s1 again (idempotent)
        lease = team.sql(
            'SELECT "user", pid, epoch FROM runbook.lease WHERE runbook = %s', ("fence",)
        )
        assert lease == [(role_b, new.pid, 2)]
        after_takeover = team.journal("fence")
        os.kill(old.pid, signal.SIGCONT)
        # the new holder stopped the command the lost one left running (same host); the old
        # holder finds its s1 ended and stops: its records are refused by the fence
        out_old, err_old = old.communicate(timeout=120)
        assert _starts(bo) == 1 and not (ana / "ledger.txt").exists()
        (tmp_path / "release").touch()
        out_new, err_new = new.communicate(timeout=120)
    finally:
        for p in (old, new):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
    assert old.returncode == 4, out_old + err_old
    assert f"lost the lease of the state to {role_b}@" in err_old and f"pid {new.pid}" in err_old
    assert not (ana / "ledger.txt").exists()  # its s1 was cancelled, s2 never started
    assert new.returncode == 0, out_new + err_new
    assert f"took over the lease of {role_a}@" in out_new + err_new
    assert "process(es) the lost run left running: s1 (pid" in out_new + err_new
    assert "not renewed for" in out_new + err_new
    journal = team.journal("fence")
    assert journal[: len(after_takeover)] == after_takeover
    assert len(after_takeover) > taken_at  # the new holder wrote its resume first
    # every record after the takeover is the new holder's: s1 succeeded once, by the new run
    done = [r for _, r in journal if r["t"] == "step" and r.get("id") == "s1"
            and r.get("status") == "succeeded"]  # fmt: skip
    assert len(done) == 1
    assert (bo / "ledger.txt").read_text().split() == ["s1", "s2"]
    status = json.loads(run(bo, team.env(role_b), "status", "r.yaml", "--format", "json").stdout)
    assert status["run"]["status"] == "succeeded"


def test_a_holder_that_finds_its_lease_lost_at_renewal_cancels_its_running_steps(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    steps = [
        {"id": "w", "action": "wait", "with": {"duration": "120s"}, "rollback": "none"},
        sh("after", "echo after >> ledger.txt", needs=["w"]),
    ]
    for d in (ana, bo):
        (d / "r.yaml").write_text(runbook_yaml("renew", phases=[{"id": "p", "steps": steps}]))
    old = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "2s"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    new: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 60
        while not any(
            r["t"] == "step" and r.get("id") == "w" and r.get("status") == "running"
            for _, r in team.journal("renew")
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(old.pid, signal.SIGSTOP)
        while not team.sql(
            "SELECT 1 FROM runbook.lease WHERE runbook = 'renew'"
            " AND clock_timestamp() - renewed_at > interval '2.5 seconds'"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        new = subprocess.Popen(
            [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=bo, env=team.env(role_b),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while team.sql('SELECT "user" FROM runbook.lease WHERE runbook = %s', ("renew",)) != [
            (role_b,)
        ]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        taken = team.journal("renew")
        os.kill(old.pid, signal.SIGCONT)
        out_old, err_old = old.communicate(timeout=60)  # long before its 120 s wait is over
        after = team.journal("renew")
    finally:
        for p in (old, new):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
    assert old.returncode == 4, out_old + err_old
    assert "the lease of the state was lost: stopping the running steps now" in out_old
    assert f"runbook: lost the lease of the state to {role_b}@" in err_old
    # nothing of the old holder after the takeover: only the new holder's resume records
    assert after[: len(taken)] == taken
    assert not any(
        r["t"] == "step" and r.get("id") == "w" and r.get("status") not in ("running", "pending")
        for _, r in after
    )
    assert not (ana / "ledger.txt").exists()


def test_a_killed_holder_is_taken_over_at_once_with_a_notice(team: Team, tmp_path: Path) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _blocking_runbook(ana, "dead", idempotent=True)
    _blocking_runbook(bo, "dead", idempotent=True)
    old = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "1h"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_starts(ana, 1)
    old.kill()
    old.wait()
    deadline = time.monotonic() + 60
    while True:  # status: the holder's session is gone, never shown as plainly running
        seen = run(bo, team.env(role_b), "status", "r.yaml", "--format", "json")
        assert seen.returncode == 0, seen.stderr
        holder = json.loads(seen.stdout)["run"]["holder"]
        if holder["lost_since"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert holder["user"] == role_a and holder["pid"] == old.pid
    assert holder["lost_since"] is not None and holder["alive"] is False
    (tmp_path / "release").touch()
    deadline = time.monotonic() + 60
    while True:  # the server notices the closed session
        r = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
        if r.returncode != 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"took over the lease of {role_a}@" in r.stdout + r.stderr
    assert "its session is gone" in r.stdout + r.stderr
    assert team.sql("SELECT epoch FROM runbook.lease WHERE runbook = 'dead'") == [(2,)]


# -- crash campaign ------------------------------------------------------------------------------


def _crash_and_recover_pg(
    cwd: Path, env: dict[str, str], env2: dict[str, str], delay: float
) -> tuple[list[str], int]:
    _ledger_runbook(cwd / "r.yaml")
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = run(cwd, env2, "status", "r.yaml", "--format", "json")
    assert status.returncode == 0, status.stderr
    resolved = 0
    for _ in range(STEPS + 5):
        r = run(cwd, env2, "apply", "r.yaml", "--yes")  # the second operator resumes
        if r.returncode == 0:
            break
        if r.returncode == 4:  # the killed session not yet gone on the server
            time.sleep(0.2)
            continue
        assert r.returncode == 3, r.stdout + r.stderr
        doc = json.loads(run(cwd, env2, "status", "r.yaml", "--format", "json").stdout)
        ledger = (cwd / "ledger.txt").read_text().split() if (cwd / "ledger.txt").exists() else []
        for step in doc["steps"]:
            if step["status"] == "unknown":
                outcome = "succeeded" if step["id"] in ledger else "pending"
                rr = run(cwd, env2, "resolve", "r.yaml", step["id"], "--as", outcome)
                assert rr.returncode == 0, rr.stderr
                resolved += 1
    else:
        raise AssertionError("the run never finished")
    return (cwd / "ledger.txt").read_text().split(), resolved


@pytest.mark.slow
def test_sigkill_at_many_instants_on_postgresql_never_runs_a_step_twice(
    postgres_server: Any, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    names = [postgres_server.create_database() for _ in range(13)]
    try:
        urls = [postgres_server.dsn(n) for n in names]
        for u in urls:
            assert _init(u, tmp_path).returncode == 0
        _ledger_runbook(base / "r.yaml")
        t0 = time.monotonic()
        done = run(base, {**os.environ, "RUNBOOK_STATE": urls[0]}, "apply", "r.yaml", "--yes")
        assert done.returncode == 0, done.stderr
        total = time.monotonic() - t0
        kills = len(urls) - 1
        delays = [0.1 + total * i / kills for i in range(kills)]
        results = []
        for i, (u, delay) in enumerate(zip(urls[1:], delays, strict=True)):
            d = tmp_path / f"kill{i:02d}"
            d.mkdir()
            env = {**os.environ, "RUNBOOK_STATE": u}
            results.append(_crash_and_recover_pg(d, env, dict(env), delay))
        expected = [f"s{i:02d}" for i in range(STEPS)]
        for (ledger, _resolved), delay in zip(results, delays, strict=True):
            assert ledger == expected, f"kill after {delay:.2f}s: {ledger}"
        assert sum(1 for _, resolved in results if resolved) >= 3
        for u in urls[1:]:
            a = run(base, {**os.environ, "RUNBOOK_STATE": u}, "audit", "r.yaml")
            assert a.returncode == 0 and "chain holds" in a.stdout, a.stdout + a.stderr
    finally:
        for n in names:
            postgres_server.drop_database(n)


# -- audit ---------------------------------------------------------------------------------------


def test_audit_on_postgresql_finds_a_tampered_record_and_names_its_seq(
    team: Team, tmp_path: Path
) -> None:
    role = next(iter(team.roles))
    _gate_runbook(tmp_path)
    assert run(tmp_path, team.env(role), "apply", "r.yaml", "--yes").returncode == 3
    ok = run(tmp_path, team.env(role), "audit", "r.yaml", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["holds"] and doc["head"]["seq"] == len(team.journal("team"))
    # an operator's role cannot delete; the owner rewrites a record's text
    team.sql(
        "UPDATE runbook.journal SET rec = replace(rec, '\"a\"', '\"A\"') "
        "WHERE runbook = 'team' AND seq = 3"
    )
    bad = run(tmp_path, team.env(role), "audit", "r.yaml")
    assert bad.returncode == 1
    assert "chain BROKEN at record 3: record 3 does not match its hash" in bad.stdout
    as_json = json.loads(
        run(tmp_path, team.env(role), "audit", "r.yaml", "--format", "json").stdout
    )
    assert as_json["broken"]["seq"] == 3 and as_json["broken"]["reason"] == "hash"


# -- nothing refused any more -----------------------------------------------------------------------


@pytest.mark.parametrize("what", ["cohorts", "notify-cohort", "foreach"])
def test_ledger_outbox_and_foreach_runbooks_run_on_postgresql(team: Team, what: str) -> None:
    """Nothing is refused on PostgreSQL any more: cohorts and foreach run there
    (test_ledger_postgres.py), a notify to explicit recipients (test_outbox_postgres.py) and
    a notify to a cohort's members, whose messages the ledger records
    (test_tell_postgres.py)."""
    import sqlite3

    role = next(iter(team.roles))
    cwd = Path.cwd()
    con = sqlite3.connect(cwd / "legacy.db")
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
    con.execute("INSERT INTO customers VALUES (1, 'a@example.com')")
    con.commit()
    con.close()
    first = sh("a", "echo a >> ledger.txt")
    if what == "notify-cohort":
        tell = {
            "id": "tell",
            "action": "notify",
            "marks": "notified",
            "with": {
                "channel": "outbox",
                "to": {"cohort": "subs"},
                "templates": {"en": {"subject": "Moving", "body": "Hi"}},
            },
            "rollback": "none",
        }
        write_subs_runbook("held", [first, tell], [{"id": "all", "size": "rest"}])
    elif what == "cohorts":
        write_subs_runbook("held", [first], [{"id": "all", "size": "rest"}])
    else:
        each = sh("each", "true", foreach={"cohort": "subs"})
        write_subs_runbook("held", [first, each], [{"id": "all", "size": "rest"}])
    valid = run(cwd, dict(os.environ), "validate", "r.yaml")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    r = run(cwd, team.env(role), "apply", "r.yaml", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not supported on the PostgreSQL state backend" not in r.stdout + r.stderr
    assert not (cwd / ".runbook").exists()
    assert (cwd / "ledger.txt").read_text() == "a\n"
    state = "notified" if what == "notify-cohort" else "pending"  # only the notify marks
    assert team.sql("SELECT key, wave, state FROM runbook.entity") == [(1, "all", state)]
    if what == "notify-cohort":
        assert team.sql("SELECT entity, address, state FROM runbook.outbox") == [
            (1, "a@example.com", "queued")
        ]
        assert team.sql(
            "SELECT m.key, m.step, m.state FROM runbook.message m JOIN runbook.outbox o"
            " ON o.id = m.outbox AND o.entity = m.key"
        ) == [(1, "tell[all]", "sent")]


def test_a_role_without_the_grants_is_exit_2_saying_which_and_writes_nothing(
    team: Team, tmp_path: Path
) -> None:
    lone, reader = f"{team.db}_lone", f"{team.db}_reader"
    team.roles[lone] = team.roles[reader] = "pw-" + secrets.token_hex(6)
    team.sql(f"CREATE ROLE {lone} LOGIN PASSWORD '{team.roles[lone]}'")
    team.sql(f"CREATE ROLE {reader} LOGIN PASSWORD '{team.roles[reader]}'")
    team.sql(f"GRANT USAGE ON SCHEMA runbook TO {reader}")
    team.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA runbook TO {reader}")
    _gate_runbook(tmp_path)
    try:
        none = run(tmp_path, team.env(lone), "apply", "r.yaml", "--yes")
        assert none.returncode == 2, none.stdout + none.stderr
        assert "may not use the runbook state (USAGE on the schema runbook)" in none.stderr
        only_select = run(tmp_path, team.env(reader), "apply", "r.yaml", "--yes")
        assert only_select.returncode == 2, only_select.stdout + only_select.stderr
        assert "may not use the runbook state (permission denied for table" in (only_select.stderr)
        for r in (none, only_select):
            assert "Traceback" not in r.stderr and "internal error" not in r.stderr
        assert not (tmp_path / "ledger.txt").exists()
        assert team.sql("SELECT count(*) FROM runbook.journal") == [(0,)]
        assert team.sql("SELECT count(*) FROM runbook.state") == [(0,)]
    finally:
        team.sql(f"DROP OWNED BY {reader}")
        import psycopg

        with psycopg.connect(team.admin.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
            c.execute(f"DROP ROLE IF EXISTS {lone}")
            c.execute(f"DROP ROLE IF EXISTS {reader}")


def test_a_holder_that_took_over_from_a_frozen_one_is_not_taken_over_when_that_one_dies(
    team: Team, tmp_path: Path
) -> None:
    """The advisory lock proves the holder alive only when its session got it: a holder that
    took over an expired lease from a frozen one has not, and a free lock after the frozen
    one's death says nothing about it."""
    ana, bo = _two_places(tmp_path)
    cy = tmp_path / "cy"
    cy.mkdir()
    role_a, role_b = list(team.roles)
    for d in (ana, bo, cy):
        _blocking_runbook(d, "proof", idempotent=True)
    old = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "2s"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    new: subprocess.Popen[str] | None = None
    try:
        _wait_starts(ana, 1)
        os.kill(old.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 60
        while not team.sql(
            "SELECT 1 FROM runbook.lease WHERE runbook = 'proof'"
            " AND clock_timestamp() - renewed_at > interval '2.5 seconds'"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        new = subprocess.Popen(
            [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "60s"], cwd=bo,
            env=team.env(role_b), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_starts(bo, 1)
        assert team.sql("SELECT \"user\", proof FROM runbook.lease WHERE runbook = 'proof'") == [
            (role_b, False)
        ]
        old.kill()  # the frozen holder dies: its session, and the advisory lock, go
        old.wait()
        while team.sql("SELECT 1 FROM pg_stat_activity WHERE usename = %s", (role_a,)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        third = run(cy, team.env(role_a), "apply", "r.yaml", "--yes")
        assert third.returncode == 4, third.stdout + third.stderr
        assert f"locked by {role_b}@" in third.stderr and f"pid {new.pid}" in third.stderr
        assert _starts(cy) == 0
        (tmp_path / "release").touch()
        out, err = new.communicate(timeout=120)
    finally:
        for p in (old, new):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert new.returncode == 0, out + err
    assert (bo / "ledger.txt").read_text().split() == ["s1", "s2"]


# -- the lease as anyone reads it, unlock --force, decisions beside a run, pins -----------------


def _lock(cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    r = run(cwd, env, "lock", "r.yaml", "--format", "json")
    assert r.returncode == 0, r.stderr
    lease: dict[str, Any] = json.loads(r.stdout)["lease"]
    return lease


def test_lock_and_status_show_the_holder_on_postgresql_live_then_lost_since_its_renewal(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _blocking_runbook(ana, "lk")
    _blocking_runbook(bo, "lk")
    host = socket.gethostname()
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_starts(ana, 1)
        before = team.journal("lk")
        text = run(bo, team.env(role_b), "lock", "r.yaml")
        assert text.returncode == 0, text.stderr
        assert f"lk: lease held by {role_a}@{host} pid {proc.pid} since " in text.stdout
        assert "  live: held for " in text.stdout and "lease 30s" in text.stdout
        live = _lock(bo, team.env(role_b))
        assert live["state"] == "live" and live["epoch"] == 1 and live["lost_since"] is None
        assert live["holder"]["user"] == role_a and live["holder"]["pid"] == proc.pid
        assert live["age"] >= 0 and live["since_renewal"] >= 0 and live["renewed"]
        doc = json.loads(run(bo, team.env(role_b), "status", "r.yaml", "--format", "json").stdout)
        assert doc["run"]["holder"]["alive"] is True and doc["run"]["holder"]["lease"] == "held"
        assert team.journal("lk") == before  # reading took and wrote nothing
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 60
    while (lost := _lock(bo, team.env(role_b)))["state"] != "lost":
        assert time.monotonic() < deadline, lost  # the server ends the dead session
        time.sleep(0.1)
    assert lost["holder"]["pid"] == proc.pid and lost["lost_since"] == lost["renewed"]
    text = run(bo, team.env(role_b), "lock", "r.yaml")
    assert f"lost: its database session is gone; holder lost since {lost['renewed']}" in (
        text.stdout
    )
    doc = json.loads(run(bo, team.env(role_b), "status", "r.yaml", "--format", "json").stdout)
    holder = doc["run"]["holder"]
    assert holder["alive"] is False and holder["lease"] == "lost"
    assert holder["lost_since"] == lost["renewed"] and holder["user"] == role_a
    line = run(bo, team.env(role_b), "status", "r.yaml").stdout.splitlines()[0]
    assert f"running (holder lost since {lost['renewed']}" in line
    (tmp_path / "release").touch()
    taken = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
    assert f"took over the lease of {role_a}@{host} pid {proc.pid}" in taken.stdout + taken.stderr
    after = run(bo, team.env(role_b), "lock", "r.yaml")
    assert after.returncode == 0 and after.stdout.startswith("lk: nobody holds the lease")
    assert _lock(bo, team.env(role_b))["epoch"] == 2


def test_unlock_force_on_postgresql_advances_the_epoch_and_fences_the_holder(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _blocking_runbook(ana, "uf")
    _blocking_runbook(bo, "uf")
    none = run(bo, team.env(role_b), "unlock", "r.yaml", "--force")
    assert none.returncode == 2 and "no state of uf in " in none.stderr
    assert "nothing to clear" in none.stderr and "Traceback" not in none.stderr
    assert team.sql("SELECT * FROM runbook.lease WHERE runbook = 'uf'") == []
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "3s"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_starts(ana, 1)
        refused = run(bo, team.env(role_b), "unlock", "r.yaml")
        assert refused.returncode == 2 and "--force" in refused.stderr
        r = run(bo, team.env(role_b), "unlock", "r.yaml", "--force")
        assert r.returncode == 0, r.stderr
        assert f"held by {role_a}@" in r.stdout and f"pid {proc.pid}" in r.stdout
        assert "epoch now 2" in r.stdout and "fenced" in r.stdout
        cleared = team.journal("uf")
        out, err = proc.communicate(timeout=120)  # its next renewal finds out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 4, out + err
    assert f"lost the lease of the state to {role_b} (`runbook unlock r.yaml --force`" in err
    assert team.journal("uf") == cleared  # it wrote nothing after the unlock
    assert not (ana / "ledger.txt").exists()
    row = team.sql('SELECT epoch, host, "user" FROM runbook.lease WHERE runbook = %s', ("uf",))
    assert row == [(2, None, role_b)]
    assert run(bo, team.env(role_b), "lock", "r.yaml").stdout.startswith(
        "uf: nobody holds the lease"
    )


def _waiting(team: Team, name: str, step: str) -> None:
    deadline = time.monotonic() + 120
    while not any(
        r["t"] == "step" and r.get("id") == step and r.get("status") == "waiting"
        for _, r in team.journal(name)
    ):
        assert time.monotonic() < deadline, f"{step} never waited"
        time.sleep(0.1)


def _beside(first: dict[str, Any], *dirs: Path, name: str) -> None:
    slow = sh(
        "slow",
        "i=0; while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done;"
        " echo slow >> ledger.txt",
    )
    steps = [first, sh("after", "echo after >> ledger.txt", needs=[first["id"]]), slow]
    for d in dirs:
        (d / "r.yaml").write_text(
            runbook_yaml(name, phases=[{"id": "p", "parallel": True, "steps": steps}])
        )


def test_approve_on_postgresql_beside_a_running_apply_the_starter_refused_another_role_counts(
    team: Team, tmp_path: Path
) -> None:
    """`approve` never takes the lease on PostgreSQL either: given while an apply holds it, it
    is recorded at once (serialised with the holder's writes) and the running apply goes on
    with it. `allow_self` defaults to false there: the starter's role is refused."""
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _beside({"id": "ok", "action": "approval"}, ana, bo, name="beside")
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _waiting(team, "beside", "ok")
        held = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
        assert held.returncode == 4, held.stderr  # the running apply holds the lease
        epoch = team.sql("SELECT epoch FROM runbook.lease WHERE runbook = 'beside'")
        before = team.journal("beside")
        own = run(ana, team.env(role_a), "approve", "r.yaml", "ok")
        assert own.returncode == 2, own.stdout + own.stderr
        assert f"'{role_a}' started run" in own.stderr and "may not approve ok" in own.stderr
        assert "allow_self is false" in own.stderr
        assert team.journal("beside") == before  # refused: nothing written
        started = time.monotonic()
        got = run(bo, team.env(role_b), "approve", "r.yaml", "ok", "--comment", "while it runs")
        assert got.returncode == 0, got.stderr
        assert time.monotonic() - started < 60  # it did not wait for the lease
        approvals = [r for _, r in team.journal("beside") if r["t"] == "approval"]
        assert [(a["by"], a["comment"]) for a in approvals] == [(role_b, "while it runs")]
        # the lease was never taken by approve: same epoch, same holder
        assert team.sql("SELECT epoch FROM runbook.lease WHERE runbook = 'beside'") == epoch
        (ana / "go").touch()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert sorted((ana / "ledger.txt").read_text().split()) == ["after", "slow"]
    seqs = [seq for seq, _ in team.journal("beside")]
    assert seqs == list(range(1, len(seqs) + 1))
    audit = run(bo, team.env(role_b), "audit", "r.yaml")
    assert audit.returncode == 0 and "chain holds" in audit.stdout


def test_allow_self_true_lets_the_starter_approve_on_postgresql(team: Team, tmp_path: Path) -> None:
    ana, _bo = _two_places(tmp_path)
    role_a, _role_b = list(team.roles)
    steps = [
        {"id": "go", "action": "approval", "with": {"allow_self": True}},
        sh("b", "echo b >> ledger.txt", needs=["go"]),
    ]
    (ana / "r.yaml").write_text(runbook_yaml("selfok", phases=[{"id": "p", "steps": steps}]))
    first = run(ana, team.env(role_a), "apply", "r.yaml", "--yes")
    assert first.returncode == 3, first.stdout + first.stderr
    got = run(ana, team.env(role_a), "approve", "r.yaml", "go")
    assert got.returncode == 0, got.stderr
    assert [r["by"] for _, r in team.journal("selfok") if r["t"] == "approval"] == [role_a]


def test_resolve_on_postgresql_fails_a_waiting_gate_beside_a_running_apply(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    gate = {
        "id": "gate",
        "action": "check",
        "with": {"command": "echo notanumber", "condition": "value == 1", "interval": "0s"},
        "rollback": "none",
        "on_failure": "continue",
    }
    _beside(gate, ana, bo, name="gatebeside")
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], cwd=ana, env=team.env(role_a),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _waiting(team, "gatebeside", "gate")
        assert run(bo, team.env(role_b), "apply", "r.yaml", "--yes").returncode == 4
        got = run(bo, team.env(role_b), "resolve", "r.yaml", "gate", "--as", "failed")
        assert got.returncode == 0, got.stderr
        gates = [r for _, r in team.journal("gatebeside") if r["t"] == "gate"]
        assert [(g["decision"], g["by"]) for g in gates] == [("failed", role_b)]
        (ana / "go").touch()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the running apply read the decision: the gate failed (on_failure: continue)
    assert proc.returncode == 1, out + err
    doc = json.loads(run(bo, team.env(role_b), "status", "r.yaml", "--format", "json").stdout)
    st = {s["id"]: s for s in doc["steps"]}
    assert st["gate"]["status"] == "failed" and "failed by the decision of" in st["gate"]["error"]
    assert (ana / "ledger.txt").read_text().split() == ["slow"]


def test_pins_on_postgresql_use_a_per_runbook_var_key_never_shown(
    team: Team, tmp_path: Path
) -> None:
    ana, _bo = _two_places(tmp_path)
    role_a, _role_b = list(team.roles)
    steps = [
        sh("a", "echo a >> ledger.txt"),
        {"id": "ok", "action": "approval", "with": {"allow_self": True}},
        sh("b", "echo b-{{ vars.region }} >> ledger.txt"),
    ]
    for name in ("pin1", "pin2"):
        (ana / f"{name}.yaml").write_text(
            runbook_yaml(
                name, vars={"region": {"type": "string"}}, phases=[{"id": "p", "steps": steps}]
            )
        )
    env = team.env(role_a)
    for name in ("pin1", "pin2"):
        r = run(ana, env, "apply", f"{name}.yaml", "--yes", "--var", "region=eu")
        assert r.returncode == 3, r.stdout + r.stderr
    keys = dict(team.sql("SELECT runbook, var_key FROM runbook.state"))
    assert len(keys["pin1"]) == 64 and keys["pin1"] != keys["pin2"]  # one key per runbook
    journal = team.journal("pin1")
    started = next(rec for _, rec in journal if rec["t"] == "run")
    assert set(started["var_hmacs"]) == {"region"}
    assert not any(keys["pin1"] in json.dumps(rec) for _, rec in journal)
    # other vars affect b, not yet done: refused, nothing written
    before = team.journal("pin1")
    other = run(ana, env, "apply", "pin1.yaml", "--yes", "--var", "region=us")
    assert other.returncode == 2, other.stdout + other.stderr
    assert "Nothing was written" in other.stderr and "region" in other.stderr
    assert team.journal("pin1") == before
    for r in (other, run(ana, env, "status", "pin1.yaml"), run(ana, env, "audit", "pin1.yaml")):
        assert keys["pin1"] not in r.stdout + r.stderr
    # the chain on PostgreSQL starts at record 1
    audit = run(ana, env, "audit", "pin1.yaml")
    assert audit.returncode == 0 and "chain holds" in audit.stdout


def test_state_init_migrates_a_version_1_schema_to_the_current_version(
    pg_dsn: str, tmp_path: Path
) -> None:
    import psycopg

    assert _init(pg_dsn, tmp_path).returncode == 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as version 1 left it
        conn.execute(
            "DROP TABLE runbook.outbox, runbook.cohort, runbook.entity, runbook.transition,"
            " runbook.message"
        )
        conn.execute("ALTER TABLE runbook.state DROP COLUMN var_key")
        conn.execute("UPDATE runbook.meta SET value = '1' WHERE key = 'version'")
    (tmp_path / "r.yaml").write_text(
        runbook_yaml("m", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    )
    env = {**os.environ, "RUNBOOK_STATE": pg_dsn}
    old = run(tmp_path, env, "apply", "r.yaml", "--yes")
    assert old.returncode == 2 and "migrate it with `runbook state init" in old.stderr
    migrated = _init(pg_dsn, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated the state schema runbook from version 1 to 4" in migrated.stdout
    applied = run(tmp_path, env, "apply", "r.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr


def test_a_writer_inside_a_transaction_makes_takeover_and_unlock_exit_4_naming_the_holder(
    team: Team, tmp_path: Path
) -> None:
    """A holder stopped inside a write keeps its lock on the lease row (its fence reads the
    row FOR SHARE): a takeover and `unlock --force` wait for it at most lock_timeout, then
    exit 4 (naming the holder when the row has one); never an internal error, never a wait
    without end."""
    import psycopg

    ana, bo = _two_places(tmp_path)
    role_a, role_b = list(team.roles)
    _gate_runbook(ana, bo)
    paused = run(ana, team.env(role_a), "apply", "r.yaml", "--yes")
    assert paused.returncode == 3, paused.stderr
    before = team.sql("SELECT epoch FROM runbook.lease WHERE runbook = 'team'")
    with psycopg.connect(team.admin) as conn:  # the stalled writer, inside its transaction
        conn.execute("SELECT epoch FROM runbook.lease WHERE runbook = 'team' FOR SHARE")
        taken = run(bo, team.env(role_b), "apply", "r.yaml", "--yes")
        forced = run(bo, team.env(role_b), "unlock", "r.yaml", "--force")
        conn.rollback()
    for r in (taken, forced):
        assert r.returncode == 4, r.stdout + r.stderr
        assert "the state of team is busy" in r.stderr and "try again" in r.stderr, r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert team.sql("SELECT epoch FROM runbook.lease WHERE runbook = 'team'") == before
