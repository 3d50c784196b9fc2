"""The run outcome speaks of entities (SPEC §7 "Outcome", §11 "Run outcome"): the closing
summary and `status` say where a cohort's members are; a finished wave with a member short of
the state its steps mark makes the run not clean (exit 1, the count and the first keys);
excluded, late and vanished entities are reported, never counted against a wave."""

from __future__ import annotations

import json
import sqlite3

from tests.engine.cohort_fixtures import ledger, legacy_db, migration, steps
from tests.engine.helpers import status_json


def test_a_clean_run_says_where_every_customer_is(runbook) -> None:
    legacy_db()
    migration()
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 0, r.output
    assert ": succeeded — 9 succeeded, 3 skipped" in r.out
    assert "  60 customers: 57 verified, 3 excluded (no-contact), 0 failed, 0 pending" in r.out
    assert "not clean" not in r.out
    run = status_json(runbook, "m.yaml")["run"]
    assert run["status"] == "succeeded" and run["clean"] is True and run["compensated"] is False
    c = run["cohorts"]["customers"]
    assert c["entities"] == 60 and c["states"] == {"verified": 57, "excluded": 3}
    assert c["excluded"] == {"no-contact": 3} and c["short"] == [] and c["clean"] is True
    assert c["summary"] == "60 customers: 57 verified, 3 excluded (no-contact), 0 failed, 0 pending"
    text = runbook("status", "m.yaml").out
    assert "  60 customers: 57 verified, 3 excluded (no-contact), 0 failed, 0 pending" in text


def test_a_member_left_behind_makes_the_run_not_clean(runbook) -> None:
    """Customer 7's address holds a CR LF: notify refuses it (`failed`), copy and verify never
    raise a failed member: wave `all` finishes with one member not verified."""
    legacy_db(c7="bad\r\nBcc: x@evil.example")
    migration()
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 1, r.output
    wave = ledger("SELECT wave FROM entity WHERE key = 7")[0][0]
    assert "every step succeeded, but NOT CLEAN (exit 1)" in r.out
    assert "  60 customers: 56 verified, 3 excluded (no-contact), 1 failed, 0 pending" in r.out
    assert (
        f"  not clean: cohort customers, wave {wave}: 1 member(s) not verified (first: 7)" in r.out
    )
    assert "resume with" not in r.out
    assert ledger("SELECT state, reason FROM entity WHERE key = 7") == [
        ("failed", "invalid address in `email`")
    ]
    run = status_json(runbook, "m.yaml")["run"]
    assert run["status"] == "succeeded" and run["clean"] is False and run["compensated"] is False
    assert run["cohorts"]["customers"]["short"] == [
        {"wave": wave, "target": "verified", "count": 1, "first_keys": [7]}
    ]
    text = runbook("status", "m.yaml").out
    assert "succeeded, not clean (its apply exited 1)" in text
    assert f"not clean: cohort customers, wave {wave}: 1 member(s) not verified (first: 7)" in text
    # the run is over (a step skipped by `when` is done): the next apply has nothing to do,
    # and the status still says the run was not clean
    again = runbook("apply", "m.yaml", "--yes")
    assert again.code == 0 and "nothing to do" in again.out, again.output
    assert status_json(runbook, "m.yaml")["run"]["clean"] is False


def test_json_summary_has_the_cohorts(runbook) -> None:
    legacy_db(c7="not an address")
    migration()
    r = runbook("apply", "m.yaml", "--yes", "--format", "json")
    assert r.code == 1
    summary = [json.loads(x) for x in r.out.splitlines() if '"summary"' in x][-1]
    assert summary["exit"] == 1 and summary["short"] == 1
    c = summary["cohorts"]["customers"]
    assert c["states"]["failed"] == 1 and c["short"][0]["first_keys"] == [7]


def test_a_compensated_run_is_not_clean(runbook) -> None:
    legacy_db()
    migration()
    assert runbook("apply", "m.yaml", "--yes", "--var", "corrupt=early").code == 1
    first = status_json(runbook, "m.yaml")["run"]
    assert first["status"] == "failed" and first["clean"] is False and first["compensated"] is True
    assert first["cohorts"]["customers"]["states"]["compensated"] == 17
    # the run is pinned to corrupt=early (SPEC §11): the fault is turned off, and accepted
    r = runbook("apply", "m.yaml", "--yes", "--var", "corrupt=", "--accept-changes")
    assert r.code == 1 and "succeeded after compensation (exit 1)" in r.out
    assert "  60 customers: 57 verified, 3 excluded (no-contact), 0 failed, 0 pending" in r.out
    run = status_json(runbook, "m.yaml")["run"]
    assert run["compensated"] is True and run["clean"] is False
    assert run["cohorts"]["customers"]["clean"] is True  # every member is where it should be


def test_late_and_vanished_are_reported_not_counted_against_the_wave(runbook) -> None:
    """The run stops at the end of wave `early` (a failing gate), a customer of wave `all`
    leaves the source and a new one appears; the next apply finds them when it starts wave
    `all`, and finishes it: clean."""
    legacy_db()
    gate = {
        "id": "gate",
        "action": "shell",
        "with": {"command": "test ! -e stop"},
        "rollback": "none",
        "when": "wave.id == 'early'",
    }
    migration(
        phases=[{"id": "rollout", "waves": {"cohort": "customers"}, "steps": [*steps(), gate]}]
    )
    open("stop", "w").close()
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 1
    gone = ledger("SELECT key FROM entity WHERE wave = 'all' ORDER BY key LIMIT 1")[0][0]
    with sqlite3.connect("legacy.db") as db:
        db.execute("UPDATE customers SET active = 0 WHERE id = ?", (gone,))
        db.execute("INSERT INTO customers VALUES (61, 'c61@example.com', 'en', 'retail', 1)")
    import os

    os.unlink("stop")
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 0, r.output
    assert "1 late (not in the draw" in r.out and "1 vanished from the source" in r.out
    assert (
        "  61 customers: 56 verified, 3 excluded (no-contact), 1 late, 1 vanished, 0 failed, "
        "0 pending" in r.out
    )
    assert ledger("SELECT state FROM entity WHERE key IN (?, 61) ORDER BY key", gone) == [
        ("vanished",),
        ("late",),
    ]
    run = status_json(runbook, "m.yaml")["run"]
    assert run["clean"] is True and run["cohorts"]["customers"]["short"] == []
