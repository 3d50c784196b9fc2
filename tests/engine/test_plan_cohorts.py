"""`plan` shows each cohort's waves with sizes and strata before anything runs, frozen or not
(SPEC §7); a source that cannot be read is "not drawn: REASON", exit 0 (SPEC §11)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.engine.cohort_fixtures import VARS, ledger, legacy_db, migration

# 57 eligible (60 - 3 without e-mail, all three wholesale): 30 retail, 27 wholesale
WAVES = [
    {"id": "pilot", "size": 5, "strata": {"segment=retail": 3, "segment=wholesale": 2}},
    {"id": "early", "size": 17, "strata": {"segment=retail": 9, "segment=wholesale": 8}},
    {"id": "all", "size": 35, "strata": {"segment=retail": 18, "segment=wholesale": 17}},
]


def test_not_frozen_the_plan_draws_in_memory_and_writes_nothing(runbook) -> None:
    legacy_db()
    migration()
    r = runbook("plan", "m.yaml")
    assert r.code == 0, r.err
    assert "Cohorts (each drawn once into its waves, then frozen)" in r.out
    assert (
        "  customers: not frozen yet; drawn now from its source (the first apply freezes it): "
        "57 eligible of 60; excluded: 3 no-contact" in r.out
    )
    assert "    pilot   5  segment=retail 3, segment=wholesale 2" in r.out
    assert "    all    35  segment=retail 18, segment=wholesale 17" in r.out
    doc = json.loads(runbook("plan", "m.yaml", "--format", "json").out)
    c = doc["cohorts"]["customers"]
    assert c["eligible"] == 57 and c["excluded"] == {"no-contact": 3} and c["waves"] == WAVES
    assert c["frozen"] is False and c["not_drawn"] is None
    assert not Path(".runbook").exists()
    md = runbook("plan", "m.yaml", "--format", "markdown").out
    assert "## Cohorts" in md and "| pilot | 5 | segment=retail 3, segment=wholesale 2 |" in md


def test_frozen_the_plan_shows_the_ledger_not_a_new_draw(runbook) -> None:
    legacy_db()
    migration()
    assert runbook("apply", "m.yaml", "--yes").code == 0
    with sqlite3.connect("legacy.db") as db:  # later arrivals do not change a frozen draw
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, 'en', 'retail', 1)",
            [(i, f"c{i}@example.com") for i in range(61, 91)],
        )
    (frozen_at,) = ledger("SELECT frozen_at FROM cohort WHERE name = 'customers'")[0]
    r = runbook("plan", "m.yaml")
    assert r.code == 0
    assert f"  customers: frozen {frozen_at}: 57 eligible of 60; excluded: 3 no-contact" in r.out
    c = json.loads(runbook("plan", "m.yaml", "--format", "json").out)["cohorts"]["customers"]
    assert c["waves"] == WAVES and c["frozen"] is True and c["frozen_at"] == frozen_at
    assert c["changed_since_frozen"] is False


def test_a_source_that_cannot_be_read_is_not_drawn_and_exit_0(runbook) -> None:
    legacy_db()
    migration()
    r = runbook("plan", "m.yaml", "--var", "legacy_db=sqlite:///missing.db")
    assert r.code == 0, r.err
    assert "  customers: not drawn: " in r.out and "missing.db does not exist" in r.out
    c = json.loads(
        runbook("plan", "m.yaml", "--format", "json", "--var", "legacy_db=sqlite:///missing.db").out
    )["cohorts"]["customers"]
    assert c["waves"] == [] and c["eligible"] is None and "missing.db" in c["not_drawn"]
    r = runbook("plan", "m.yaml", "--var", "legacy_db=postgresql://ops:hunter2@127.0.0.1:1/x")
    assert r.code == 0 and "not drawn: " in r.out
    assert "hunter2" not in r.output and "postgresql://ops:***@127.0.0.1:1/x" in r.out
    assert not Path(".runbook").exists()


def test_a_dsn_with_a_variable_without_value_is_not_drawn(runbook) -> None:
    legacy_db()
    migration(vars={**VARS, "legacy_db": {"type": "string"}})
    r = runbook("plan", "m.yaml")
    assert r.code == 0, r.err
    assert "customers: not drawn: its source's dsn cannot be rendered here" in r.out
    assert "pass the variables with --var" in r.out
    r = runbook("plan", "m.yaml", "--var", "legacy_db=sqlite:///legacy.db")
    assert "57 eligible of 60" in r.out


def test_bad_var_is_exit_2(runbook) -> None:
    legacy_db()
    migration()
    r = runbook("plan", "m.yaml", "--var", "nope=1")
    assert r.code == 2 and "--var nope: no such variable" in r.err and r.out == ""
