"""Holes an audit of issue 11 found, each closed (the test names the hole)."""

from __future__ import annotations

import sqlite3
from typing import Any

from runbook_engine.cohort.draw import split
from tests.engine import cohort_run as cr


def _states() -> dict[Any, str]:
    return dict(cr.ledger("cohorts", "SELECT key, state FROM entity"))  # type: ignore[arg-type]


def test_a_step_failing_under_continue_marks_nobody_it_did_not_handle(runbook) -> None:
    cr.legacy(rows=100)
    cr.target()
    steps = cr.steps()
    steps[1]["with"]["target_table"] = "no_such_table"  # the copy fails before any row
    steps[1]["on_failure"] = "continue"
    cr.write(phases=[{"id": "p", "waves": {"cohort": "customers"}, "steps": steps[:2]}])
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 1, r.output
    assert "moved" not in set(_states().values())  # nobody was moved: nobody is marked so


def test_a_member_whose_row_left_the_source_is_neither_moved_nor_verified(runbook) -> None:
    cr.legacy(rows=100)
    cr.target()
    cr.write()
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    key = next(k for k, w in sorted(cr.waves().items()) if w == "all")
    steps = cr.steps()
    gone = {
        "id": "lose-one",
        "action": "sql.exec",
        "rollback": "none",
        "when": "wave.id == 'all'",
        "with": {"dsn": "{{ vars.legacy_db }}", "sql": f"DELETE FROM customers WHERE id = {key}"},
    }
    phases = [{"id": "p", "waves": {"cohort": "customers"}, "steps": [steps[0], gone, *steps[1:]]}]
    cr.write(phases=phases)
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 1, r.output  # verify caught it: the wave was rolled back
    assert "verify[all]" in r.out and "rolling back" in r.out
    states = [s for s, _, _ in cr.journey(key)]
    assert "verified" not in states and "failed" in states  # never claimed verified
    assert "moved" not in states  # its row was not there to copy
    (why,) = cr.ledger(
        "cohorts", f"SELECT reason FROM transition WHERE key = {key} AND state = 'failed'"
    )[0]
    assert "no row in customers on either side" in why
    with sqlite3.connect("new.db") as db:
        assert db.execute(f"SELECT count(*) FROM customers WHERE id = {key}").fetchone()[0] == 0


def test_a_vanished_member_back_in_the_source_rejoins_its_wave(runbook) -> None:
    cr.legacy(rows=100)
    cr.target()
    cr.write()
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    wave = cr.waves()[1]
    with sqlite3.connect("legacy.db") as db:
        row = db.execute("SELECT * FROM customers WHERE id = 1").fetchone()
        db.execute("DELETE FROM customers WHERE id = 1")
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    assert _states()[1] == "vanished"
    with sqlite3.connect("legacy.db") as db:
        db.execute("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", row)
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 0, r.output
    assert _states()[1] == "verified" and cr.waves()[1] == wave


def test_redraw_applies_an_edited_exclude_to_the_waves_it_draws_again(runbook) -> None:
    cr.legacy(rows=200)
    cr.target()
    cr.write()
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    edited = cr.cohort(
        exclude=[
            {"reason": "no-contact", "where": "email IS NULL"},
            {"reason": "wholesale-later", "where": "segment = 'wholesale'"},
        ]
    )
    cr.write(cohort=edited)
    assert runbook("apply", "m.yaml", "--yes").code == 2  # the edit needs a redraw
    r = runbook("cohort", "redraw", "m.yaml", "--from", "pilot")
    assert r.code == 0, r.output
    rows = cr.ledger(
        "cohorts",
        "SELECT state, reason, count(*) FROM entity WHERE json_extract(attrs, '$.segment')"
        " = 'wholesale' AND json_extract(attrs, '$.email') IS NOT NULL GROUP BY 1, 2",
    )
    assert rows == [("excluded", "wholesale-later", rows[0][2])]
    assert runbook("apply", "m.yaml", "--yes").code == 0
    with sqlite3.connect("new.db") as db:
        assert db.execute(
            "SELECT count(*) FROM customers WHERE segment = 'wholesale'"
        ).fetchone() == (0,)


def test_keys_of_two_types_do_not_crash_the_draw(runbook) -> None:
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE customers (id, email TEXT, locale TEXT, segment TEXT, active INT)")
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, 'en', 'retail', 1)",
            [
                (1, "a@example.com"),
                ("1", "b@example.com"),
                *((i, f"c{i}@x.io") for i in range(2, 40)),
            ],
        )
    cr.target()
    cr.write(cohort=cr.cohort(stratify_by=[]))
    r = runbook("cohort", "freeze", "m.yaml")
    assert r.code == 0, r.output
    assert cr.ledger("cohorts", "SELECT count(*) FROM entity") == [(40,)]


def test_late_entities_can_be_admitted_after_the_holdout(runbook) -> None:
    cr.legacy(rows=100)
    cr.target()
    cr.write(cohort=cr.cohort(holdout={"size": "5%"}))
    assert runbook("apply", "m.yaml", "--yes").code == 0
    with sqlite3.connect("legacy.db") as db:
        db.execute("INSERT INTO customers VALUES (1001, 'late@example.com', 'en', 'retail', 1)")
    waves = [*cr.cohort()["waves"], {"id": "late", "size": 0}]
    cr.write(cohort=cr.cohort(holdout={"size": "5%"}, waves=waves))
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    r = runbook("cohort", "admit", "m.yaml")
    assert r.code == 0 and "admitted 1 into wave late" in r.out, r.output
    assert runbook("apply", "m.yaml", "--yes").code == 0
    assert _states()[1001] == "verified"


def test_a_step_resolved_as_succeeded_reaches_its_members_marks(runbook) -> None:
    import signal
    import subprocess

    from tests.engine.helpers import RUNBOOK, journal, wait_until

    cr.legacy(rows=60)
    cr.target()
    long = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000)"
    move = {
        "id": "move",
        "action": "sql.exec",
        "marks": "moved",
        "rollback": "none",
        "with": {
            "dsn": "{{ vars.new_db }}",
            "cohort": "customers",
            "sql": [
                "INSERT INTO customers (id) SELECT key FROM rb_members",
                f"{long} SELECT count(*) FROM c",  # long enough to be killed in the middle
            ],
        },
    }
    cr.write(phases=[{"id": "p", "waves": {"cohort": "customers"}, "steps": [move]}])
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "m.yaml", "--yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def running() -> bool:  # its start is durable: a kill from now on leaves it unknown
        try:
            recs = journal(".runbook", "cohorts")
        except sqlite3.OperationalError:  # not created yet
            return False
        return any((r["t"], r.get("id"), r.get("status")) == want for r in recs)

    want = ("step", "move[pilot]", "running")
    wait_until(running, "move[pilot] runs", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 3 and "move[pilot] is unknown" in r.out, r.output
    r = runbook("resolve", "m.yaml", "move[pilot]", "--as", "succeeded")
    assert r.code == 0, r.output
    pilot = [k for k, w in cr.waves().items() if w == "pilot"]
    assert {_states()[k] for k in pilot} == {"moved"}  # the operator said it took effect


def test_each_stratum_gets_the_floor_or_the_ceiling_of_its_share_in_every_wave() -> None:
    import math

    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(
        st.dictionaries(st.text("abcdef", min_size=1, max_size=2), st.integers(0, 300), min_size=1, max_size=6),
        st.lists(st.integers(0, 1000), min_size=1, max_size=8),
    )  # fmt: skip
    def check(strata: dict[str, int], cuts: list[int]) -> None:
        total = sum(strata.values())
        if total == 0:
            return
        points = sorted(min(c, total) for c in cuts[:-1])
        counts = [b - a for a, b in zip([0, *points], [*points, total], strict=True)]
        got = split(counts, strata)
        for s, size in strata.items():
            assert sum(g[s] for g in got) == size
        for n, g in zip(counts, got, strict=True):
            for s, size in strata.items():
                share = n * size / total
                assert g[s] in (math.floor(share + 1e-9), math.ceil(share - 1e-9)), (n, s, g)

    check()
