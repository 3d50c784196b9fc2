"""The cohort ledger and `foreach` on the PostgreSQL state backend (SPEC §7, §8; issue 14):
freeze, waves with their marks, `customers` from another process, keys of two types,
`cohort admit`/`redraw`, a cohort gate, a foreach step, and SIGKILL inside ledger commits then
a resume from a second process. Every command is its own process, against a real server
(``tests/servers/postgres.py``); the cohorts' source and target are SQLite files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine import cohort_run as cr
from tests.engine.test_state_postgres import Team, run
from tests.engine.test_state_postgres import team as team  # noqa: F401  (the fixture)

ROWS = 600


def _steps() -> list[dict[str, Any]]:
    """The cohort migration of ``cohort_run`` without its announcement (notify writes the
    outbox, not held on PostgreSQL yet): copy (marks moved), verify (marks verified)."""
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


def test_state_init_migrates_a_version_2_schema_to_version_3_with_the_ledger(
    pg_dsn: str, tmp_path: Path
) -> None:
    import psycopg

    from tests.engine.test_state_postgres import _init

    assert _init(pg_dsn, tmp_path).returncode == 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as version 2 left it
        conn.execute(
            "DROP TABLE runbook.cohort, runbook.entity, runbook.transition, runbook.message"
        )
        conn.execute("UPDATE runbook.meta SET value = '2' WHERE key = 'version'")
    _setup(tmp_path / "w", rows=60)
    env = {**os.environ, "RUNBOOK_STATE": pg_dsn}
    old = run(tmp_path / "w", env, "apply", "m.yaml", "--yes")
    assert old.returncode == 2, old.stdout + old.stderr
    assert "the state schema is at version 2, this program needs 3" in old.stderr
    assert "migrate it with `runbook state init" in old.stderr
    migrated = _init(pg_dsn, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated the state schema runbook from version 2 to 3" in migrated.stdout
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'runbook'"
            ).fetchall()
        }
        assert {"cohort", "entity", "transition", "message"} <= tables
        assert not {t for t in tables if "outbox" in t}  # version 4's, not this one's
        assert conn.execute("SELECT value FROM runbook.meta WHERE key = 'version'").fetchone() == (
            "3",
        )
    applied = run(tmp_path / "w", env, "apply", "m.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "60 customers: 59 verified, 1 excluded (no-contact)" in applied.stdout
    again = _init(pg_dsn, tmp_path)  # idempotent
    assert again.returncode == 0, again.stderr
