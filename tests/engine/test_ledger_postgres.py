"""The cohort ledger and `foreach` on the PostgreSQL state backend (SPEC §7, §8; issue 14):
freeze, waves with their marks, `customers` from another process, keys of two types,
`cohort admit`/`redraw`, a cohort gate, a foreach step, and SIGKILL inside ledger commits then
a resume from a second process. Every command is its own process, against a real server
(``tests/servers/postgres.py``); the cohorts' source and target are SQLite files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.engine import cohort_run as cr
from tests.engine.helpers import RUNBOOK, wait_until
from tests.engine.test_state_postgres import Team, run
from tests.engine.test_state_postgres import team as team  # the fixture

ROWS = 600


def _steps() -> list[dict[str, Any]]:
    """The cohort migration of ``cohort_run`` without its announcement (a notify to the
    members: ``test_tell_postgres.py``): copy (marks moved), verify (marks verified)."""
    return [s for s in cr.steps() if s["action"] != "notify"]


def _setup(cwd: Path, rows: int = ROWS, **over: Any) -> None:
    cwd.mkdir(exist_ok=True)
    cr.legacy(str(cwd / "legacy.db"), rows=rows)
    cr.target(str(cwd / "new.db"))
    over.setdefault(
        "phases", [{"id": "rollout", "waves": {"cohort": "customers"}, "steps": _steps()}]
    )
    cr.write(str(cwd / "m.yaml"), **over)


def _counts(team: Team, name: str = "cohorts") -> dict[tuple[str | None, str], int]:
    rows = team.sql(
        "SELECT wave, state, count(*) FROM runbook.entity WHERE runbook = %s GROUP BY wave, state",
        (name,),
    )
    return {(w, s): int(n) for w, s, n in rows}


def _roles(team: Team) -> tuple[str, str]:
    a, b = list(team.roles)
    return a, b


def test_freeze_then_every_wave_marks_its_members_on_postgresql_and_customers_reads_them(
    team: Team, tmp_path: Path
) -> None:
    ana, bo = tmp_path / "ana", tmp_path / "bo"
    _setup(ana)
    _setup(bo)
    role_a, role_b = _roles(team)
    frozen = run(ana, team.env(role_a), "cohort", "freeze", "m.yaml")
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    assert "cohort customers: drew 588 eligible of 600" in frozen.stdout
    assert _counts(team) == {
        ("pilot", "pending"): 29,
        ("early", "pending"): 117,
        ("all", "pending"): 442,
        (None, "excluded"): 12,
    }
    # nothing on disk: the ledger is in the database
    assert not (ana / ".runbook").exists()
    # the pilot and the wide waves, from the other operator's machine
    applied = run(bo, team.env(role_b), "apply", "m.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "600 customers: 588 verified, 12 excluded (no-contact), 0 failed" in applied.stdout
    assert _counts(team) == {
        ("pilot", "verified"): 29,
        ("early", "verified"): 117,
        ("all", "verified"): 442,
        (None, "excluded"): 12,
    }
    # every member was copied, and only the members
    with sqlite3.connect(bo / "new.db") as new, sqlite3.connect(bo / "legacy.db") as old:
        moved = set(new.execute("SELECT * FROM customers"))
        assert moved == set(old.execute("SELECT * FROM customers WHERE email IS NOT NULL"))
    # each transition once, with its step, run and attempt
    twice = team.sql(
        "SELECT key, state, count(*) FROM runbook.transition WHERE runbook = 'cohorts'"
        " GROUP BY key, state HAVING count(*) > 1"
    )
    assert twice == []
    # `customers` from a third process: counts, then one customer's journey
    counts = run(ana, team.env(role_a), "customers", "m.yaml", "--format", "json")
    assert counts.returncode == 0, counts.stderr
    doc = json.loads(counts.stdout)
    got = {(c["wave"], c["state"]): c["count"] for c in doc["counts"]}
    assert got[("pilot", "verified")] == 29 and got[(None, "excluded")] == 12
    key = team.sql(
        "SELECT key FROM runbook.entity WHERE runbook = 'cohorts' AND wave = 'pilot' LIMIT 1"
    )[0][0]
    assert isinstance(key, int)
    one = run(ana, team.env(role_a), "customers", "m.yaml", str(key), "--format", "json")
    assert one.returncode == 0, one.stderr
    (entity,) = json.loads(one.stdout)["entities"]
    assert entity["key"] == key and entity["wave"] == "pilot" and entity["state"] == "verified"
    assert entity["attributes"]["email"] == f"c{key}@example.com"
    assert [t["state"] for t in entity["transitions"]] == ["moved", "verified"]
    assert {t["attempt"] for t in entity["transitions"]} == {1}
    csv = run(ana, team.env(role_a), "customers", "m.yaml", "--in", "excluded", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    assert "50,,excluded,no-contact" in csv.stdout
    missing = run(ana, team.env(role_a), "customers", "m.yaml", "999999")
    assert missing.returncode == 2 and "999999" in missing.stderr
    # plan, status and report read the ledger from the database too
    plan = run(ana, team.env(role_a), "plan", "m.yaml", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    waves = json.loads(plan.stdout)["cohorts"]["customers"]["waves"]
    assert [(w["id"], w["size"]) for w in waves] == [("pilot", 29), ("early", 117), ("all", 442)]
    report = run(ana, team.env(role_a), "report", "m.yaml", "--format", "json")
    assert report.returncode == 0, report.stderr
    assert '"verified": 442' in report.stdout.replace("\n", "")


def test_state_init_migrates_a_version_2_schema_to_the_current_one_with_the_ledger(
    pg_dsn: str, tmp_path: Path
) -> None:
    import psycopg

    from tests.engine.test_state_postgres import _init

    assert _init(pg_dsn, tmp_path).returncode == 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as version 2 left it
        conn.execute(
            "DROP TABLE runbook.cohort, runbook.entity, runbook.transition, runbook.message,"
            " runbook.outbox"
        )
        conn.execute("UPDATE runbook.meta SET value = '2' WHERE key = 'version'")
    _setup(tmp_path / "w", rows=60)
    env = {**os.environ, "RUNBOOK_STATE": pg_dsn}
    old = run(tmp_path / "w", env, "apply", "m.yaml", "--yes")
    assert old.returncode == 2, old.stdout + old.stderr
    assert "the state schema is at version 2, this program needs 4" in old.stderr
    assert "migrate it with `runbook state init" in old.stderr
    migrated = _init(pg_dsn, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated the state schema runbook from version 2 to 4" in migrated.stdout
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'runbook'"
            ).fetchall()
        }
        assert {"cohort", "entity", "transition", "message", "outbox"} <= tables
        assert conn.execute("SELECT value FROM runbook.meta WHERE key = 'version'").fetchone() == (
            "4",
        )
    applied = run(tmp_path / "w", env, "apply", "m.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "60 customers: 59 verified, 1 excluded (no-contact)" in applied.stdout
    again = _init(pg_dsn, tmp_path)  # idempotent
    assert again.returncode == 0, again.stderr


def _wave_keys(team: Team, name: str = "cohorts") -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for key, wave in team.sql(
        "SELECT key, wave FROM runbook.entity WHERE runbook = %s AND wave IS NOT NULL", (name,)
    ):
        out.setdefault(wave, []).append(key)
    return out


def _status(cwd: Path, env: dict[str, str], file: str = "m.yaml") -> dict[str, Any]:
    r = run(cwd, env, "status", file, "--format", "json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return {s["id"]: s for s in doc["steps"]}


def test_keys_1_and_text_1_stay_two_entities_on_postgresql(team: Team, tmp_path: Path) -> None:
    role, _ = _roles(team)
    cwd = tmp_path / "w"
    cwd.mkdir()
    with sqlite3.connect(cwd / "legacy.db") as db:  # an untyped key column: 1 and '1'
        db.execute("CREATE TABLE customers (id, email TEXT, locale TEXT, segment TEXT, active)")
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, 'en', 'retail', 1)",
            [(1, "int@example.com"), ("1", "text@example.com"), (2, "two@example.com")],
        )
    cohort = cr.cohort(waves=[{"id": "all", "size": "rest"}], stratify_by=[], exclude=[])
    cr.write(str(cwd / "m.yaml"), cohort=cohort, phases=[
        {"id": "rollout", "waves": {"cohort": "customers"}, "steps": [
            {"id": "touch", "action": "shell", "marks": "moved", "rollback": "none",
             "foreach": {"cohort": "customers"},
             "with": {"command": "echo {{ member.key }} {{ member.email }} >> touched.txt"}},
        ]},
    ])  # fmt: skip
    r = run(cwd, team.env(role), "apply", "m.yaml", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = team.sql(
        "SELECT key, jsonb_typeof(key), state, attrs FROM runbook.entity"
        " WHERE runbook = 'cohorts' ORDER BY key"
    )
    assert sorted(((k, t, s) for k, t, s, _ in rows), key=str) == sorted(
        [(1, "number", "moved"), ("1", "string", "moved"), (2, "number", "moved")], key=str
    )
    emails = {(type(k).__name__, k): json.loads(a)["email"] for k, _, _, a in rows}
    assert emails[("int", 1)] == "int@example.com" and emails[("str", "1")] == "text@example.com"
    # one call each, with its own attributes
    touched = sorted((cwd / "touched.txt").read_text().splitlines())
    assert touched == ["1 int@example.com", "1 text@example.com", "2 two@example.com"]
    # `customers 1` finds both, each with its own journey
    got = run(cwd, team.env(role), "customers", "m.yaml", "1", "--format", "json")
    assert got.returncode == 0, got.stderr
    entities = json.loads(got.stdout)["entities"]
    assert sorted((type(e["key"]).__name__, e["attributes"]["email"]) for e in entities) == [
        ("int", "int@example.com"),
        ("str", "text@example.com"),
    ]
    assert all([t["state"] for t in e["transitions"]] == ["moved"] for e in entities)


def test_cohort_admit_and_redraw_on_postgresql(team: Team, tmp_path: Path) -> None:
    role, other = _roles(team)
    cwd = tmp_path / "w"
    _setup(cwd)
    assert run(cwd, team.env(role), "cohort", "freeze", "m.yaml").returncode == 0
    # an edit of the draw is refused by apply until the waves not started are drawn again
    edited = cr.cohort(waves=[{"id": "pilot", "size": "5%", "min": 20}, {"id": "early", "size": "50%"}, {"id": "all", "size": "rest"}])  # fmt: skip
    cr.write(str(cwd / "m.yaml"), cohort=edited, phases=[
        {"id": "rollout", "waves": {"cohort": "customers"}, "steps": _steps()}
    ])  # fmt: skip
    r = run(cwd, team.env(role), "apply", "m.yaml", "--yes")
    assert r.returncode == 2 and "runbook cohort redraw m.yaml --from WAVE" in r.stderr
    before = {k for k in _wave_keys(team)["pilot"]}
    redrawn = run(cwd, team.env(other), "cohort", "redraw", "m.yaml", "--from", "early")
    assert redrawn.returncode == 0, redrawn.stdout + redrawn.stderr
    waves = _wave_keys(team)
    assert set(waves["pilot"]) == before  # kept
    assert len(waves["early"]) == 294 and sum(map(len, waves.values())) == 588
    # redrawn members have a transition saying so
    said = team.sql(
        "SELECT count(*) FROM runbook.transition WHERE runbook = 'cohorts'"
        " AND reason LIKE 'redrawn into wave %%'"
    )
    assert said == [(len(waves["early"]) + len(waves["all"]),)]
    with sqlite3.connect(cwd / "legacy.db") as db:
        db.execute("INSERT INTO customers VALUES (9001, 'new@example.com', 'en', 'retail', 1)")
        db.execute("UPDATE customers SET active = 0 WHERE id = 3")
    again = run(cwd, team.env(other), "cohort", "freeze", "m.yaml")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 late (9001), 1 vanished (3)" in again.stdout
    states = dict(team.sql("SELECT key, state FROM runbook.entity WHERE key IN ('3', '9001')"))
    assert states == {3: "vanished", 9001: "late"}
    admitted = run(cwd, team.env(role), "cohort", "admit", "m.yaml", "--include", "50")
    assert admitted.returncode == 0, admitted.stdout + admitted.stderr
    assert "admitted 2 into wave pilot (9001, 50)" in admitted.stdout
    assert team.sql("SELECT wave, state FROM runbook.entity WHERE key = '9001'") == [
        ("pilot", "pending")
    ]
    refused = run(cwd, team.env(role), "cohort", "admit", "m.yaml", "--include", "51")
    assert refused.returncode == 2 and "entity 51 is pending, not excluded" in refused.stderr
    applied = run(cwd, team.env(role), "apply", "m.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    states = Counter(s for (w, s), n in _counts(team).items() for _ in range(n) if w)
    assert states == Counter({"verified": 588 + 2 - 1, "vanished": 1})  # 3 vanished
    assert team.sql("SELECT wave, state FROM runbook.entity WHERE key = '9001'") == [
        ("pilot", "verified")
    ]


def test_a_cohort_gate_fails_a_churning_wave_and_its_members_are_compensated_on_postgresql(
    team: Team, tmp_path: Path
) -> None:
    role, other = _roles(team)
    cwd = tmp_path / "w"
    gate = {
        "id": "churn-gate",
        "action": "check",
        "on_failure": "rollback-wave",
        "with": {
            "cohort": "customers",
            "dsn": "sqlite:///metrics.db",
            "query": "SELECT customer_id, cancelled FROM subscriptions",
            "metric": "rate",
            "condition": "value <= baseline + 0.05",
            "count": 1,
        },
    }
    _setup(cwd, rows=200, cohort=cr.cohort(holdout={"size": "10%"}), phases=[
        {"id": "rollout", "waves": {"cohort": "customers"}, "steps": [*_steps(), gate]}
    ])  # fmt: skip
    assert run(cwd, team.env(role), "cohort", "freeze", "m.yaml").returncode == 0
    w = _wave_keys(team)
    with sqlite3.connect(cwd / "metrics.db") as db:  # the pilot's members all cancelled
        db.execute("CREATE TABLE subscriptions (customer_id INTEGER, cancelled INTEGER)")
        db.executemany(
            "INSERT INTO subscriptions VALUES (?, ?)",
            [(k, 1 if wave == "pilot" else 0) for wave, ks in w.items() for k in ks],
        )
    r = run(cwd, team.env(other), "apply", "m.yaml", "--yes")
    assert r.returncode == 1, r.stdout + r.stderr
    n, n_base = len(w["pilot"]), len(w["holdout"])
    assert f"#1 1 vs holdout 0 (n {n}, n_baseline {n_base}): failed" in r.stdout
    by = _status(cwd, team.env(role))
    assert by["churn-gate[pilot]"]["status"] == "failed"
    assert by["copy[pilot]"]["status"] == "rolled_back"
    assert by["copy[early]"]["status"] == "pending"
    got = by["churn-gate[pilot]"]["outputs"]
    assert (got["outcome"], got["value"], got["baseline_of"]) == ("failed", 1, "holdout")
    assert team.sql(
        "SELECT DISTINCT state FROM runbook.entity WHERE runbook = 'cohorts' AND wave = 'pilot'"
    ) == [("compensated",)]
    # the copy's rollback deleted the pilot's rows from the target (its members, passed in)
    with sqlite3.connect(cwd / "new.db") as db:
        assert db.execute("SELECT count(*) FROM customers").fetchone() == (0,)


def test_a_foreach_step_calls_each_member_once_on_postgresql(
    team: Team, tmp_path: Path, provider: Any
) -> None:
    role, other = _roles(team)
    cwd = tmp_path / "w"
    move = {
        "id": "move",
        "action": "http",
        "marks": "moved",
        "foreach": {"cohort": "customers", "concurrency": 4, "max_failed": 1},
        "retries": {"attempts": 1},
        "rollback": "none",
        "with": {
            "method": "POST",
            "url": provider.url + "/migrate",
            "json": {"customer": "{{ member.key }}"},
        },
    }
    _setup(cwd, rows=300, phases=[
        {"id": "rollout", "waves": {"cohort": "customers"}, "steps": [move]}
    ])  # fmt: skip
    assert run(cwd, team.env(role), "cohort", "freeze", "m.yaml").returncode == 0
    bad = set(sorted(_wave_keys(team)["pilot"])[:2])
    provider.fail = bad
    r = run(cwd, team.env(role), "apply", "m.yaml", "--yes")
    assert r.returncode == 1, r.stdout + r.stderr  # more failed than max_failed
    assert "move[pilot]" in r.stdout and "max_failed 1" in r.stdout, r.stdout
    assert set(provider.calls.values()) == {1}  # no member called twice
    failed = team.sql(
        "SELECT key, reason FROM runbook.entity WHERE runbook = 'cohorts' AND state = 'failed'"
    )
    assert {k for k, _ in failed} == bad and all("returned 500" in why for _, why in failed)
    done = team.sql("SELECT key FROM runbook.entity WHERE runbook = 'cohorts' AND state = 'moved'")
    assert not {k for (k,) in done} & bad
    # a re-run from the other operator calls the members not done yet, never the done ones
    provider.fail = set()
    before = Counter(provider.customers)
    again = run(cwd, team.env(other), "apply", "m.yaml", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    called = {c for c, n in provider.customers.items() if n > before.get(c, 0)}
    assert called >= bad and not called & {k for (k,) in done}
    assert all(n == 1 for c, n in provider.customers.items() if c not in bad)
    eligible = 300 - 6
    assert _counts(team) == {
        **{(w, "moved"): n for w, n in Counter(_wave_of(team)).items()},
        (None, "excluded"): 6,
    }
    assert sum(n for (_, s), n in _counts(team).items() if s == "moved") == eligible
    idem = {h.get("Idempotency-Key", "").split("/")[-1] for h in provider.headers}
    assert len(idem) == eligible


def _wave_of(team: Team) -> list[str]:
    return [
        w
        for (w,) in team.sql(
            "SELECT wave FROM runbook.entity WHERE runbook = 'cohorts' AND wave IS NOT NULL"
        )
    ]


# -- crash campaign --------------------------------------------------------------------------


CRASH_ROWS = 150


def _crash_steps() -> list[dict[str, Any]]:
    """A foreach whose action is not idempotent (one line per call: a second call would show),
    then copy and verify."""
    tell = {
        "id": "tell",
        "action": "shell",
        "marks": "notified",
        "rollback": "none",
        "foreach": {"cohort": "customers", "concurrency": 4},
        "with": {"command": "echo {{ member.key }} >> calls.txt"},
    }
    return [tell, *_steps()]


def _crash_and_resume(team: Team, cwd: Path, name: str, fault: str) -> int:
    role, other = _roles(team)
    _setup(cwd, rows=CRASH_ROWS, name=name, phases=[
        {"id": "rollout", "waves": {"cohort": "customers"}, "steps": _crash_steps()}
    ])  # fmt: skip
    env = {**team.env(role), "RUNBOOK_FAULT": fault}
    first = run(cwd, env, "apply", "m.yaml", "--yes")
    assert first.returncode in (-9, 0), first.stdout + first.stderr
    env2 = team.env(other)  # the second operator resumes
    for _ in range(20):
        r = run(cwd, env2, "apply", "m.yaml", "--yes")
        if r.returncode == 0:
            break
        if r.returncode == 4:  # the killed session not yet gone on the server
            time.sleep(0.2)
            continue
        assert r.returncode == 3, (fault, r.stdout + r.stderr)
        for sid, step in _status(cwd, env2).items():
            if step["status"] == "unknown":
                rr = run(cwd, env2, "resolve", "m.yaml", sid, "--as", "pending")
                assert rr.returncode == 0, (fault, rr.stderr)
    else:
        raise AssertionError(f"{fault}: the run never finished: {r.stdout}{r.stderr}")
    return first.returncode


def _check_crash(team: Team, cwd: Path, name: str, fault: str) -> None:
    states = Counter(
        s
        for (s,) in team.sql(
            "SELECT state FROM runbook.entity WHERE runbook = %s AND wave IS NOT NULL", (name,)
        )
    )
    eligible = CRASH_ROWS - CRASH_ROWS // 50
    assert states == Counter({"verified": eligible}), (fault, states)  # none lost
    twice = team.sql(
        "SELECT key, state, attempt, count(*) FROM runbook.transition WHERE runbook = %s"
        " GROUP BY key, state, attempt HAVING count(*) > 1",
        (name,),
    )
    assert not twice, (fault, twice[:5])  # no member marked twice in one attempt
    calls = Counter((cwd / "calls.txt").read_text().split())
    assert len(calls) == eligible and set(calls.values()) == {1}, (fault, calls.most_common(3))
    with sqlite3.connect(cwd / "new.db") as new, sqlite3.connect(cwd / "legacy.db") as old:
        moved = set(new.execute("SELECT * FROM customers"))
        assert moved == set(old.execute("SELECT * FROM customers WHERE email IS NOT NULL"))


@pytest.mark.slow
def test_sigkill_inside_ledger_commits_on_postgresql_loses_and_doubles_no_member(
    team: Team, tmp_path: Path
) -> None:
    """SIGKILL inside each ledger commit (after its statements, before COMMIT) and right after
    it: the freeze, each wave's start, the foreach's marks, the copy's, the verify's (about 13
    in this run); a second operator resumes."""
    commits = 14
    faults = [
        f"{point}:{n}" for n in range(1, commits + 1) for point in ("effects", "effects-committed")
    ]
    names = {f: f"crash-{f.replace(':', '-')}" for f in faults}
    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = dict(
            zip(
                faults,
                pool.map(
                    lambda f: _crash_and_resume(team, tmp_path / names[f], names[f], f), faults
                ),
                strict=True,
            )
        )
    hit = [n for n in range(1, commits + 1) if codes[f"effects:{n}"] == -9]
    assert hit == list(range(1, len(hit) + 1)) and len(hit) >= 10, codes
    assert all(codes[f"effects-committed:{n}"] == -9 for n in hit), codes
    for f in faults:
        _check_crash(team, tmp_path / names[f], names[f], f)


def test_a_foreach_cut_by_sigkill_leaves_members_unknown_on_postgresql_until_resolved(
    team: Team, tmp_path: Path
) -> None:
    """Calls in flight when the holder is killed (a shell action: not idempotent) become
    `unknown` in the ledger; the second operator resolves each from the file it wrote; no
    member is called twice, none is lost."""
    role, other = _roles(team)
    cwd = tmp_path / "w"
    move = {
        "id": "move",
        "action": "shell",
        "marks": "moved",
        "rollback": "none",
        "foreach": {"cohort": "customers", "concurrency": 8},
        "with": {"command": "echo {{ member.key }} >> moved.txt; sleep 0.05"},
    }
    _setup(cwd, rows=300, cohort=cr.cohort(waves=[{"id": "all", "size": "rest"}]), phases=[
        {"id": "rollout", "waves": {"cohort": "customers"}, "steps": [move]}
    ])  # fmt: skip
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "m.yaml", "--yes"], cwd=cwd, env=team.env(role),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lines = cwd / "moved.txt"
    wait_until(lambda: lines.exists() and len(lines.read_text().split()) > 100, "100 calls", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the calls in flight (orphaned shells) finish their line first
    env2 = team.env(other)
    for _ in range(50):
        r = run(cwd, env2, "apply", "m.yaml", "--yes")
        if r.returncode != 4:  # the killed session not yet gone on the server
            break
        time.sleep(0.2)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "member call(s) were cut by a crash" in r.stdout
    unknown = [
        k
        for (k,) in team.sql(
            "SELECT key FROM runbook.entity WHERE runbook = 'cohorts' AND state = 'unknown'"
        )
    ]
    assert unknown
    done = {int(x) for x in lines.read_text().split()}
    for k in unknown:  # the operator checks each one
        rr = run(
            cwd, env2, "resolve", "m.yaml", "move[all]", "--member", str(k),
            "--as", "succeeded" if k in done else "pending",
        )  # fmt: skip
        assert rr.returncode == 0, rr.stdout + rr.stderr
    r = run(cwd, env2, "apply", "m.yaml", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    calls = Counter(int(x) for x in lines.read_text().split())
    assert len(calls) == 294 and set(calls.values()) == {1}  # each member exactly once
    assert _counts(team) == {("all", "moved"): 294, (None, "excluded"): 6}


def test_copy_and_verify_into_a_postgresql_target_on_a_postgresql_state(
    team: Team, tmp_path: Path
) -> None:
    """The wave's members reach a PostgreSQL target as a temp table (one COPY), as they do with
    a directory's state: the ledger and the target may be the same database."""
    role, _ = _roles(team)
    cwd = tmp_path / "w"
    _setup(cwd, rows=200)
    team.sql(
        "CREATE TABLE public.customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT,"
        " segment TEXT, active INTEGER)"
    )
    team.sql(f"GRANT ALL ON public.customers TO {team.db}_operators")
    r = run(cwd, team.env(role), "apply", "m.yaml", "--yes", "--var", f"new_db={team.url}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "200 customers: 196 verified, 4 excluded (no-contact)" in r.stdout
    moved = team.sql("SELECT count(*), min(id), max(id) FROM public.customers")
    assert moved == [(196, 1, 199)]
    assert team.sql(
        "SELECT count(*) FROM public.customers c WHERE NOT EXISTS (SELECT 1 FROM"
        " runbook.entity e WHERE e.runbook = 'cohorts' AND e.key = to_jsonb(c.id)"
        " AND e.state = 'verified')"
    ) == [(0,)]


def test_a_role_without_grants_on_the_ledger_tables_is_exit_2_saying_which(
    team: Team, tmp_path: Path
) -> None:
    """After a migration the operators' grants must be given again on the new tables: until
    then a cohort runbook is exit 2 naming the grant, no traceback, nothing drawn."""
    role, _ = _roles(team)
    for table in ("cohort", "entity", "transition", "message"):
        team.sql(f"REVOKE ALL ON runbook.{table} FROM {team.db}_operators")
    cwd = tmp_path / "w"
    _setup(cwd, rows=60)
    r = run(cwd, team.env(role), "apply", "m.yaml", "--yes")
    assert r.returncode == 2, r.stdout + r.stderr
    assert (
        "the role may not use the runbook state (no SELECT, INSERT, UPDATE on the table "
        "runbook.cohort)" in r.stderr
    )
    assert "SELECT, INSERT, UPDATE on its tables" in r.stderr and "Traceback" not in r.stderr
    assert team.sql("SELECT count(*) FROM runbook.entity") == [(0,)]
    assert not (cwd / ".runbook").exists()
