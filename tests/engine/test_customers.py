"""`runbook customers`: counts by wave x state, lists, journeys, CSV; read-only; exit 2 for an
unknown key, wave or cohort and before the draw (SPEC §7, §11)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

from runbook_engine.state import journeys
from tests.engine.cohort_fixtures import cohort, ledger, legacy_db, migration, steps, waves

STATE = Path(".runbook/cm/state.db")


def _digest() -> str:
    return hashlib.sha256(STATE.read_bytes()).hexdigest()


@pytest.fixture
def applied(runbook) -> None:  # type: ignore[no-untyped-def]
    """Wave early fails verify once (rolled back, compensated, told), then moves."""
    legacy_db()
    migration()
    assert runbook("apply", "m.yaml", "--yes", "--var", "corrupt=early").code == 1
    # the run is pinned to corrupt=early (SPEC §11): the fault is turned off, and accepted
    r = runbook("apply", "m.yaml", "--yes", "--var", "corrupt=", "--accept-changes")
    assert r.code == 1  # succeeded after compensation


def test_counts_by_wave_and_state_in_draw_and_journey_order(runbook, applied) -> None:
    before = _digest()
    r = runbook("customers", "m.yaml")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith("cohort customers: 60 entities, drawn ")
    assert lines[1].split() == [
        "wave",
        "pending",
        "notified",
        "moved",
        "verified",
        "excluded",
        "total",
    ]
    assert [ln.split() for ln in lines[2:]] == [
        ["pilot", "0", "0", "0", "5", "0", "5"],
        ["early", "0", "0", "0", "17", "0", "17"],
        ["all", "0", "0", "0", "35", "0", "35"],
        ["(no", "wave)", "0", "0", "0", "0", "3", "3"],
        ["total", "0", "0", "0", "57", "3", "60"],
    ]
    doc = json.loads(runbook("customers", "m.yaml", "--format", "json").out)
    assert doc["cohort"] == "customers"
    assert doc["counts"] == [
        {"wave": "pilot", "state": "verified", "count": 5},
        {"wave": "early", "state": "verified", "count": 17},
        {"wave": "all", "state": "verified", "count": 35},
        {"wave": None, "state": "excluded", "count": 3},
    ]
    assert ledger("SELECT count(*) FROM entity") == [(60,)]
    assert _digest() == before  # read-only


def _failed() -> list[int]:
    return sorted(
        k for (k,) in ledger("SELECT DISTINCT key FROM transition WHERE state = 'failed'")
    )


def test_a_journey_interleaves_the_draw_transitions_and_messages(runbook, applied) -> None:
    key = next(k for k in waves()["early"] if k not in _failed())
    r = runbook("customers", "m.yaml", str(key))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith(f"customers {key}: wave early, verified since ")
    locale = "es" if key % 3 == 0 else "en"
    segment = "retail" if key % 2 else "wholesale"
    assert lines[1] == f"  attributes: email=c{key}@example.com, locale={locale}, segment={segment}"
    events = [ln.split("  ", 2)[2] for ln in lines[2:]]
    assert [e.split(" (")[0].split(":")[0] for e in events] == [
        "drawn into wave early",
        "message queued",  # in the outbox until a relay sends it
        "-> notified",
        "-> moved",
        "-> notified",  # the copy undone: moved no longer
        "message queued",  # in the outbox until a relay sends it
        "-> compensated",
        "-> pending",
        "message queued",  # in the outbox until a relay sends it
        "-> notified",
        "-> moved",
        "-> verified",
    ]
    times = [ln.split()[0] for ln in lines[2:]]
    assert times == sorted(times)
    frozen_at = ledger("SELECT frozen_at FROM cohort")[0][0]
    assert times[0] == frozen_at
    mids = [m for (m,) in ledger("SELECT message_id FROM message WHERE key = ? ORDER BY seq", key)]
    assert len(mids) == 3 and all(m in r.out for m in mids)
    assert "by announce[early]#rollback (attempt 1)" in r.out
    assert "-> compensated (by (rollback), attempt 1," in r.out
    assert "-> verified (by verify[early], attempt 2," in r.out


def test_a_member_that_failed_verify_shows_why_and_how_it_was_moved_again(runbook, applied) -> None:
    failed = _failed()
    assert len(failed) == 3  # the three rows `break` corrupted in wave early
    r = runbook("customers", "m.yaml", str(failed[0]), "--format", "json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    (e,) = doc["entities"]
    assert set(e) >= {"key", "wave", "state", "reason", "attributes", "transitions", "messages"}
    assert e["key"] == failed[0] and e["wave"] == "early" and e["state"] == "verified"
    assert e["reason"] is None  # the failure is history, kept in its transition
    states = [(t["state"], t["step"], t["attempt"]) for t in e["transitions"]]
    assert states == [
        ("notified", "announce[early]", 1),
        ("moved", "copy[early]", 1),
        ("failed", "verify[early]", 1),
        ("compensated", "(rollback)", 1),
        ("pending", "(new attempt)", 2),
        ("notified", "announce[early]", 2),
        ("moved", "copy[early]", 2),
        ("verified", "verify[early]", 2),
    ]
    assert e["transitions"][2]["reason"] == "sql.verify: different in customers"
    assert all(set(t) >= {"state", "step", "run", "attempt", "at"} for t in e["transitions"])
    msgs = [(m["step"], m["attempt"], m["channel"], m["state"]) for m in e["messages"]]
    assert msgs == [  # their delivery state: queued, no relay ran (Issue 13 audit)
        ("announce[early]", 1, "outbox", "queued"),
        ("announce[early]#rollback", 1, "outbox", "queued"),
        ("announce[early]", 2, "outbox", "queued"),
    ]
    assert {m["recorded"] for m in e["messages"]} == {"sent"}  # the ledger's: handed over
    assert all(m["message_id"].startswith("<") for m in e["messages"])


def test_unknown_keys_are_exit_2_naming_them(runbook, applied) -> None:
    r = runbook("customers", "m.yaml", "5", "99999", "abc")
    assert r.code == 2
    assert r.out == ""
    assert "no entity with key '99999', 'abc'" in r.err and "2 of the 3 key(s)" in r.err
    assert "Traceback" not in r.err


def test_in_and_wave_list_the_matching_entities(runbook, applied) -> None:
    r = runbook("customers", "m.yaml", "--in", "excluded")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "cohort customers, state excluded: 3 entities"
    assert [ln.split()[:4] for ln in lines[2:]] == [
        [str(k), "-", "excluded", "no-contact"] for k in (20, 40, 60)
    ]
    r = runbook("customers", "m.yaml", "--wave", "pilot", "--format", "json")
    doc = json.loads(r.out)
    assert sorted(e["key"] for e in doc["entities"]) == waves()["pilot"]
    assert all(e["transitions"] and e["messages"] for e in doc["entities"])
    r = runbook("customers", "m.yaml", "--wave", "pilot", "--in", "failed")
    assert r.code == 0 and r.out.splitlines() == [
        "cohort customers, wave pilot and state failed: 0 entities"
    ]


def test_csv_is_one_line_per_entity_with_the_attributes(runbook, applied) -> None:
    r = runbook("customers", "m.yaml", "--format", "csv")
    assert r.code == 0, r.err
    rows = list(csv.reader(io.StringIO(r.out)))
    assert rows[0] == ["key", "wave", "state", "reason", "updated_at", "email", "locale", "segment"]
    assert len(rows) == 61
    by_key = {row[0]: row for row in rows[1:]}
    assert by_key["20"][1:4] == ["", "excluded", "no-contact"] and by_key["20"][5] == ""
    k = waves()["pilot"][0]
    assert by_key[str(k)][1:3] == ["pilot", "verified"] and by_key[str(k)][5] == f"c{k}@example.com"
    r = runbook("customers", "m.yaml", "20", "40", "--format", "csv")
    assert [row[0] for row in csv.reader(io.StringIO(r.out))] == ["key", "20", "40"]


def test_csv_shows_a_nul_character_of_an_attribute_escaped(runbook) -> None:
    """No CSV reader keeps a NUL character: an attribute holding one is shown as `\\x00`
    (on PostgreSQL its `::jsonb` refused it: issue 14)."""
    legacy_db()
    with sqlite3.connect("legacy.db") as db:
        db.execute("UPDATE customers SET email = 'x' || char(0) || 'y@example.com' WHERE id = 5")
    migration()
    frozen = runbook("cohort", "freeze", "m.yaml")
    assert frozen.code == 0, frozen.err
    for extra in ([], ["--in", "pending"]):
        r = runbook("customers", "m.yaml", "--format", "csv", *extra)
        assert r.code == 0, r.err
        assert "\x00" not in r.out
        by_key = {row[0]: row for row in csv.reader(io.StringIO(r.out))}
        assert by_key["5"][5] == "x\\x00y@example.com"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--wave", "nope"],
            "--wave nope: cohort 'customers' has no such wave (waves: pilot, early, all)",
        ),
        (["--in", "lost"], "Invalid value for '--in'"),
        (["--cohort", "people"], "--cohort people: no such cohort in m.yaml (cohorts: customers)"),
    ],
)
def test_bad_filters_are_exit_2(runbook, applied, args: list[str], message: str) -> None:
    r = runbook("customers", "m.yaml", *args)
    assert r.code == 2 and message in r.err and r.out == ""


def test_before_the_draw_it_says_how_to_draw_and_writes_nothing(runbook) -> None:
    legacy_db()
    migration()
    r = runbook("customers", "m.yaml")
    assert r.code == 2
    assert "cohort 'customers' has not been drawn yet" in r.err
    assert "runbook cohort freeze m.yaml" in r.err and "runbook apply m.yaml" in r.err
    assert not Path(".runbook").exists()


def test_after_cohort_freeze_every_member_is_pending(runbook) -> None:
    legacy_db()
    migration()
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    r = runbook("customers", "m.yaml")
    assert r.code == 0, r.err
    assert r.out.splitlines()[-1].split() == ["total", "57", "0", "0", "0", "3", "60"]
    key = waves()["pilot"][0]
    r = runbook("customers", "m.yaml", str(key), "20")
    frozen_at = ledger("SELECT frozen_at FROM cohort")[0][0]
    assert r.out.splitlines()[2] == f"  {frozen_at}  drawn into wave pilot"
    assert "customers 20: in no wave, excluded (no-contact) since " in r.out
    assert "  attributes: email=(none), locale=en, segment=wholesale" in r.out
    assert f"  {frozen_at}  excluded at the draw: no-contact" in r.out


def test_two_cohorts_need_cohort(runbook) -> None:
    legacy_db()
    migration(
        cohorts={"customers": cohort(), "others": cohort()},
        phases=[
            {"id": "rollout", "waves": {"cohort": "customers"}, "steps": steps()},
            {
                "id": "later",
                "waves": {"cohort": "others"},
                "steps": steps("others", announce=False, prefix="o-"),
            },
        ],
    )
    r = runbook("customers", "m.yaml")
    assert (
        r.code == 2
        and "declares 2 cohorts (customers, others): pick one with --cohort NAME" in r.err
    )
    r = runbook("customers", "m.yaml", "--cohort", "others")
    assert r.code == 2 and "cohort 'others' has not been drawn yet" in r.err


def test_a_runbook_without_cohorts_is_exit_2(runbook) -> None:
    from tests.engine.helpers import sh, write

    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    r = runbook("customers", "r.yaml")
    assert r.code == 2 and "declares no cohorts" in r.err


def test_hostile_attributes_and_secrets_never_reach_the_terminal(
    runbook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTOMER_TOKEN", "s3cr3t-t0ken")
    legacy_db()
    with sqlite3.connect("legacy.db") as db:
        db.execute("UPDATE customers SET locale = ? WHERE id = 20", ("\x1b[31mred\x1b]0;pwn\x07",))
        db.execute("UPDATE customers SET segment = ? WHERE id = 40", ('=HYPERLINK("x")',))
        db.execute("UPDATE customers SET locale = ? WHERE id = 60", ("tok s3cr3t-t0ken",))
    migration(secrets={"token": {"env": "CUSTOMER_TOKEN"}})
    assert runbook("apply", "m.yaml", "--yes").code == 0
    r = runbook("customers", "m.yaml", "20", "40", "60")
    assert r.code == 0, r.err
    assert "\x1b" not in r.out and "\x07" not in r.out
    assert "locale=\\x1b[31mred\\x1b]0;pwn\\x07" in r.out
    assert "s3cr3t" not in r.out and "locale=tok ***" in r.out
    r = runbook("customers", "m.yaml", "--in", "excluded", "--format", "csv")
    rows = {row[0]: row for row in csv.reader(io.StringIO(r.out))}
    assert rows["40"][7] == '\'=HYPERLINK("x")'  # a spreadsheet does not run it
    assert "s3cr3t" not in r.out
    r = runbook("customers", "m.yaml", "60", "--format", "json")
    assert json.loads(r.out)["entities"][0]["attributes"]["locale"] == "tok ***"
    # the ledger keeps the customer's data as it is: masking is for what is printed
    assert ledger("SELECT attrs FROM entity WHERE key = 60")[0][0].count("s3cr3t") == 1


def test_the_counts_use_the_wave_state_index(runbook, applied) -> None:
    """The goal (1M entities in <= 1 s, docs/benchmarks) rests on this plan: one pass over
    the covering index (cohort, wave, state), grouped in its order, no table row read."""
    from runbook_engine.state.db import open_reader

    db = open_reader(STATE, "cm")
    seen: list[str] = []
    db.con.set_trace_callback(seen.append)
    try:
        assert sum(n for _, _, n in journeys.counts(db, "customers")) == 60
        (sql,) = [s for s in seen if "count(*)" in s]
        plan = " ".join(str(r[-1]) for r in db.query("EXPLAIN QUERY PLAN " + sql))
    finally:
        db.close()
    assert "COVERING INDEX entity_by_wave (cohort=?)" in plan
    assert "TEMP B-TREE" not in plan


def test_a_reader_cannot_write(runbook, applied) -> None:
    from runbook_engine.state.db import open_reader

    db = open_reader(STATE, "cm")
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.execute("DELETE FROM entity")
    finally:
        db.close()
    assert ledger("SELECT count(*) FROM entity") == [(60,)]
