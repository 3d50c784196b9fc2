"""Holes found reviewing the cohort ledger, the outbox and foreach on the PostgreSQL state
(issue 14): each test says what was wrong and what is right; each failed on the code the
review found, and every hole is closed now. Every command is its own process against a real server
(``tests/servers/postgres.py``); the cohorts' source and target are SQLite files."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from tests.engine import cohort_run as cr
from tests.engine.test_ledger_postgres import _counts, _setup
from tests.engine.test_state_postgres import Team, run
from tests.engine.test_state_postgres import team as team  # the fixture

DRAWN_100 = {
    ("pilot", "pending"): 20,
    ("early", "pending"): 19,
    ("all", "pending"): 59,
    (None, "excluded"): 2,
}


def _role(team: Team) -> str:
    return next(iter(team.roles))


def _secret_env(team: Team, role: str) -> tuple[dict[str, str], str]:
    """The role's password in the state URL itself (no PGPASSWORD): it must never be shown."""
    password = team.roles[role]
    env = {k: v for k, v in os.environ.items() if k not in ("PGUSER", "PGPASSWORD")}
    env["RUNBOOK_STATE"] = f"postgresql://{role}:{password}@127.0.0.1:{team.port}/{team.db}"
    return env, password


def _kinds(team: Team, name: str = "cohorts") -> list[str]:
    return [k for (k,) in team.sql("SELECT kind FROM runbook.journal WHERE runbook = %s", (name,))]


def _keyed_source(cwd: Path, rows: list[tuple[Any, str]]) -> None:
    """A source of (key, email) rows, one wave, and a target keyed like it."""
    cwd.mkdir()
    with sqlite3.connect(cwd / "legacy.db") as db:
        db.execute("CREATE TABLE customers (id, email TEXT, locale TEXT, segment TEXT, active)")
        db.executemany("INSERT INTO customers VALUES (?, ?, 'en', 'retail', 1)", rows)
    with sqlite3.connect(cwd / "new.db") as db:
        db.execute(
            "CREATE TABLE customers (id PRIMARY KEY, email TEXT, locale TEXT, segment TEXT, active)"
        )
    cr.write(
        str(cwd / "m.yaml"),
        cohort=cr.cohort(stratify_by=[], waves=[{"id": "all", "size": "rest"}]),
        phases=[
            {
                "id": "rollout",
                "waves": {"cohort": "customers"},
                "steps": [s for s in cr.steps() if s["action"] != "notify"],
            }
        ],
    )


def test_hole_customers_of_one_entity_is_an_internal_error_on_postgresql(
    team: Team, tmp_path: Path
) -> None:
    """Wrong: `runbook customers FILE KEY` (one entity's journey) on any PostgreSQL state is
    exit 1 "internal error: UndefinedTable: relation "outbox" does not exist": journeys.py
    joins the ledger's messages with an unqualified `outbox`, which is a table of the
    directory's state, while pg.ledger_views makes views for cohort/entity/transition/message
    only (outbox.has_outbox says True on PostgreSQL). Right: the entity, its wave, state and
    transitions, exit 0, as on a directory."""
    cwd = tmp_path / "a"
    _setup(cwd, rows=100)
    role = _role(team)
    frozen = run(cwd, team.env(role), "cohort", "freeze", "m.yaml")
    assert frozen.returncode == 0, frozen.stderr
    got = run(cwd, team.env(role), "customers", "m.yaml", "7", "--format", "json")
    assert "internal error" not in got.stderr
    assert got.returncode == 0, got.stderr
    (entity,) = json.loads(got.stdout)["entities"]
    assert entity["key"] == 7 and entity["state"] == "pending"


def test_hole_a_search_path_with_pg_temp_late_sends_the_ledger_to_another_table(
    team: Team, tmp_path: Path
) -> None:
    """Wrong: the ledger's SQL names `entity`, `transition`… unqualified, trusting pg_temp to
    be searched first; a role whose search_path lists pg_temp explicitly after another schema
    (`ALTER ROLE … SET search_path = public, pg_temp`, as hardening guides advise) resolves
    `entity` to public.entity, a table of the application's: after a freeze that wrote 100
    entities to runbook.entity, `customers` says "0 entities" and `apply` starts a run and
    dies with exit 1 "internal error: NotNullViolation … relation "entity"". Right: the
    engine's session reads its own views whatever the role's search_path (qualified
    pg_temp.entity, or its own search_path set on connecting): `customers` shows the 100
    entities, `apply` verifies them, public.entity is never read or written."""
    cwd = tmp_path / "a"
    _setup(cwd, rows=100)
    role = _role(team)
    team.sql("CREATE TABLE public.entity (LIKE runbook.entity)")
    team.sql(f"GRANT SELECT, INSERT, UPDATE ON public.entity TO {team.db}_operators")
    team.sql(f"ALTER ROLE {role} IN DATABASE {team.db} SET search_path = public, pg_temp")
    frozen = run(cwd, team.env(role), "cohort", "freeze", "m.yaml")
    assert frozen.returncode == 0, frozen.stderr
    assert _counts(team) == DRAWN_100
    shown = run(cwd, team.env(role), "customers", "m.yaml")
    assert shown.returncode == 0, shown.stderr
    assert "100 entities" in shown.stdout, shown.stdout
    applied = run(cwd, team.env(role), "apply", "m.yaml", "--yes")
    assert "internal error" not in applied.stderr
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert team.sql("SELECT count(*) FROM public.entity") == [(0,)]


def test_a_search_path_in_the_url_options_does_not_move_the_ledger(
    team: Team, tmp_path: Path
) -> None:
    """The same with the search path in the state URL (`options=-csearch_path=…`) and a
    function of the application's schema named like one the engine calls unqualified
    (`hashtextextended`): the ledger is runbook's, the function never called."""
    cwd = tmp_path / "a"
    _setup(cwd, rows=100)
    role = _role(team)
    team.sql("CREATE TABLE public.entity (LIKE runbook.entity)")
    team.sql("CREATE TABLE public.hijacked (n INT)")
    team.sql(
        f"GRANT SELECT, INSERT, UPDATE ON public.entity, public.hijacked TO {team.db}_operators"
    )
    team.sql(
        "CREATE FUNCTION public.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql"
        " AS 'INSERT INTO public.hijacked VALUES (1) RETURNING 1::bigint'"
    )
    env = team.env(role)
    env["RUNBOOK_STATE"] += (
        "&" if "?" in env["RUNBOOK_STATE"] else "?"
    ) + "options=-csearch_path%3Dpublic,pg_temp"
    frozen = run(cwd, env, "cohort", "freeze", "m.yaml")
    assert frozen.returncode == 0, frozen.stderr
    assert _counts(team) == DRAWN_100
    shown = run(cwd, env, "customers", "m.yaml")
    assert shown.returncode == 0, shown.stderr
    assert "100 entities" in shown.stdout, shown.stdout
    applied = run(cwd, env, "apply", "m.yaml", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert team.sql("SELECT count(*) FROM public.entity") == [(0,)]
    assert team.sql("SELECT count(*) FROM public.hijacked") == [(0,)]


def _excluded(team: Team) -> dict[str, int]:
    ((summary,),) = team.sql("SELECT summary FROM runbook.cohort WHERE name = 'customers'")
    return dict(json.loads(summary)["excluded"])


def test_a_nul_byte_in_a_source_key_is_excluded_at_the_draw_on_postgresql(
    team: Team, tmp_path: Path
) -> None:
    """Was: a source key holding a NUL byte ('x\\x00y', a valid SQLite text) made `cohort
    freeze` exit 1 "internal error: UntranslatableCharacter … COPY entity … column key" (JSONB
    cannot hold \\u0000), and `apply` the same after it had journaled a new run. Now: the key
    is excluded at the draw (`bad-key`, counted like a NULL key, not written), as on a
    directory: the freeze and the run succeed with the 39 others."""
    cwd = tmp_path / "a"
    _keyed_source(cwd, [(i, f"c{i}@example.com") for i in range(1, 40)] + [("x\x00y", "n@e.com")])
    role = _role(team)
    frozen = run(cwd, team.env(role), "cohort", "freeze", "m.yaml")
    assert "internal error" not in frozen.stderr
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    assert _excluded(team) == {"bad-key": 1}
    assert team.sql("SELECT count(*) FROM runbook.entity") == [(39,)]
    applied = run(cwd, team.env(role), "apply", "m.yaml", "--yes")
    assert "internal error" not in applied.stderr
    assert applied.returncode == 0, applied.stdout + applied.stderr
    with sqlite3.connect(cwd / "new.db") as db:
        assert db.execute("SELECT count(*) FROM customers").fetchone() == (39,)


def test_hole_a_nul_byte_in_a_member_attribute_breaks_customers_csv_on_postgresql(
    team: Team, tmp_path: Path
) -> None:
    """Wrong: a member whose attribute (its email) holds a NUL byte is frozen and migrated, but
    `customers FILE --format csv` is then exit 1 "internal error: UntranslatableCharacter:
    unsupported Unicode escape sequence" for the whole cohort: journeys.rows casts the
    attributes' JSON text to jsonb (`attrs::jsonb ->> ?`), which refuses \\u0000. Right: the
    CSV of every member, exit 0 (as on a directory), or a located exit 2; never a
    traceback."""
    cwd = tmp_path / "a"
    _setup(cwd, rows=100)
    with sqlite3.connect(cwd / "legacy.db") as db:
        db.execute("UPDATE customers SET email = 'x' || char(0) || 'y@example.com' WHERE id = 5")
    role = _role(team)
    frozen = run(cwd, team.env(role), "cohort", "freeze", "m.yaml")
    assert frozen.returncode == 0, frozen.stderr
    csv = run(cwd, team.env(role), "customers", "m.yaml", "--format", "csv")
    assert "internal error" not in csv.stderr
    assert csv.returncode == 0, csv.stderr
    assert len([line for line in csv.stdout.splitlines() if line[:1].isdigit()]) == 100
    assert "\x00" not in csv.stdout
    (five,) = [line for line in csv.stdout.splitlines() if line.startswith("5,")]
    assert "x\\x00y@example.com" in five, five
    filtered = run(cwd, team.env(role), "customers", "m.yaml", "--format", "csv", "--in", "pending")
    assert filtered.returncode == 0, filtered.stderr
    assert "x\\x00y@example.com" in filtered.stdout


def test_hole_missing_grants_on_the_ledger_tables_fail_a_wave_instead_of_exit_2(
    team: Team, tmp_path: Path
) -> None:
    """Wrong: pg.check_grants checks only runbook.outbox, so a role without its grants on a
    ledger table (the database migrated by `state init`, the grant run again only for
    runbook.outbox, the table the exit 2 names) passes the check: `apply` journals a new run,
    starts the pilot's first step and fails it (exit 1, "wave pilot cannot start … permission
    denied for table transition", `resume with`). The README says an apply stops with exit 2
    before writing anything, naming what the role lacks. Right: exit 2 naming
    runbook.transition, no run record written; the password of the URL never shown."""
    cwd = tmp_path / "a"
    _setup(cwd, rows=100)
    role = _role(team)
    env, password = _secret_env(team, role)
    frozen = run(cwd, env, "cohort", "freeze", "m.yaml")
    assert frozen.returncode == 0, frozen.stderr
    team.sql(f"REVOKE ALL ON runbook.transition FROM {team.db}_operators")
    applied = run(cwd, env, "apply", "m.yaml", "--yes")
    assert password not in applied.stdout + applied.stderr
    assert applied.returncode == 2, applied.stdout + applied.stderr
    assert "runbook.transition" in applied.stderr
    assert _kinds(team) == ["cohort"]
    assert _counts(team) == DRAWN_100


def test_hole_a_role_without_temporary_registers_the_runbook_and_is_told_other_grants(
    team: Team, tmp_path: Path
) -> None:
    """Wrong: with TEMPORARY revoked on the database (the README lists it among the grants an
    operator needs), `apply` is exit 2 as it should be, but only after registering the
    runbook in runbook.state (pg.open_db inserts it before making the ledger's temp views),
    and its advice names "USAGE on the schema runbook and SELECT, INSERT, UPDATE on its
    tables", not TEMPORARY. Right: exit 2 naming TEMPORARY on the database, nothing
    written."""
    cwd = tmp_path / "a"
    cwd.mkdir()
    (cwd / "r.yaml").write_text(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: notemp}\nphases:\n- id: p\n"
        "  steps:\n  - {id: a, action: shell, rollback: none, with: {command: 'true'}}\n"
    )
    team.sql(f"REVOKE TEMPORARY ON DATABASE {team.db} FROM PUBLIC")
    r = run(cwd, team.env(_role(team)), "apply", "r.yaml", "--yes")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "TEMPORARY" in r.stderr
    assert team.sql("SELECT runbook FROM runbook.state") == []
