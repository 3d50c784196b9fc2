"""Cohorts (SPEC §7): the draw, freezing, the ledger's journeys across a rollback and a re-run,
late and vanished entities, admit and redraw, bad input."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from runbook_engine.cohort import draw, source
from runbook_engine.format.loader import load_text
from tests.engine import cohort_run as cr


def _cohort(text_over: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    cr.legacy()
    cr.target()
    path = cr.write(cohort=cr.cohort(**(text_over or {})))
    return load_text(path.read_text(), "m.yaml").runbook.cohorts["customers"]


# -- the draw (pure) ------------------------------------------------------------------------


def test_the_draw_depends_on_the_seed_and_keys_never_on_row_order() -> None:
    c = _cohort()
    keys = [(k, "s") for k in range(1000)]
    _, a = draw.assign(c, keys)
    _, b = draw.assign(c, list(reversed(keys)))
    assert a == b
    other = load_text(cr.write(cohort=cr.cohort(seed=8)).read_text(), "m.yaml").runbook
    _, c8 = draw.assign(other.cohorts["customers"], keys)
    assert {k for k, (w, _) in a.items() if w == "pilot"} != {
        k for k, (w, _) in c8.items() if w == "pilot"
    }


def test_sizes_round_shares_down_apply_min_and_rest_takes_the_rest() -> None:
    c = _cohort()
    assert draw.sizes(c, 990) == [("pilot", 49), ("early", 198), ("all", 743)]
    assert draw.sizes(c, 100) == [("pilot", 20), ("early", 20), ("all", 60)]  # min 20
    with pytest.raises(draw.DrawError, match="ask for more members than the 10 eligible"):
        draw.sizes(c, 10)


def test_the_holdout_is_cut_from_the_last_wave_and_drawn_last() -> None:
    c = _cohort({"holdout": {"size": "2%"}})
    assert draw.sizes(c, 1000) == [("pilot", 50), ("early", 200), ("all", 730), ("holdout", 20)]


def test_every_stratum_keeps_its_share_in_every_wave() -> None:
    c = _cohort()
    strata = ["a"] * 500 + ["b"] * 300 + ["c"] * 200
    plan, got = draw.assign(c, [(i, s) for i, s in enumerate(strata)])
    per = Counter((w, strata[k]) for k, (w, _) in got.items())
    for wave, n in plan.sizes:
        for s, size in Counter(strata).items():
            share = n * size / len(strata)
            assert per[(wave, s)] in (int(share), int(share) + 1), (wave, s, per[(wave, s)])
    assert sum(per.values()) == 1000


# -- freezing and the ledger ----------------------------------------------------------------


def test_apply_freezes_once_and_excludes_with_reasons(runbook) -> None:
    cr.legacy()
    cr.target()
    cr.write()
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 0, r.output
    assert "cohort customers: drew 588 eligible of 600" in r.out and "12 no-contact" in r.out
    counts = cr.counts()
    assert counts[(None, "excluded")] == 12
    assert counts[("pilot", "verified")] == 29 and counts[("early", "verified")] == 117
    assert counts[("all", "verified")] == 442
    frozen = cr.waves()
    # a second apply and a freeze draw nothing again
    assert runbook("apply", "m.yaml", "--yes").code == 0
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    assert cr.waves() == frozen
    with sqlite3.connect("new.db") as db:
        assert db.execute("SELECT count(*) FROM customers").fetchone()[0] == 588


def test_duplicate_and_null_keys_are_excluded_and_reported(runbook) -> None:
    cr.legacy(rows=100)
    cr.target()
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE more (id INTEGER, email TEXT, locale TEXT, segment TEXT)")
        db.executemany(
            "INSERT INTO more VALUES (?, 'x@example.com', 'en', 'retail')", [(7,), (None,)]
        )
    query = (
        "SELECT id, email, locale, segment FROM customers UNION ALL "
        "SELECT id, email, locale, segment FROM more"
    )
    cr.write(cohort=cr.cohort(source={"dsn": "{{ vars.legacy_db }}", "query": query}))
    r = runbook("cohort", "freeze", "m.yaml")
    assert r.code == 0, r.output
    summary = cr.summary()
    assert summary["excluded"] == {"duplicate-key": 2, "no-contact": 2, "no-key": 1}  # copies
    assert cr.ledger("cohorts", "SELECT state, reason FROM entity WHERE key = 7") == [
        ("excluded", "duplicate-key")
    ]


def test_keys_the_ledger_cannot_keep_are_excluded_and_reported(runbook) -> None:
    """A text key with a NUL character (`bad-key`) or over 1,024 bytes of UTF-8
    (`key-too-long`) is excluded at the draw, counted like a NULL key and never written: the
    same draw as on a PostgreSQL state, which cannot hold them (issue 14). A later wave's
    reconcile does not see them as late."""
    cr.legacy(rows=100)
    cr.target()
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE more (id, email TEXT, locale TEXT, segment TEXT)")
        db.executemany(
            "INSERT INTO more VALUES (?, 'x@example.com', 'en', 'retail')",
            [("x\x00y",), ("k" * 1025,), ("é" * 513,)],
        )
    query = (
        "SELECT id, email, locale, segment FROM customers UNION ALL "
        "SELECT id, email, locale, segment FROM more"
    )
    cr.write(cohort=cr.cohort(source={"dsn": "{{ vars.legacy_db }}", "query": query}))
    r = runbook("cohort", "freeze", "m.yaml")
    assert r.code == 0, r.output
    assert "1 bad-key" in r.output and "2 key-too-long" in r.output
    assert cr.summary()["excluded"] == {"bad-key": 1, "key-too-long": 2, "no-contact": 2}
    assert cr.ledger("cohorts", "SELECT count(*) FROM entity") == [(100,)]
    applied = runbook("apply", "m.yaml", "--yes")
    assert applied.code == 0, applied.output
    assert cr.ledger("cohorts", "SELECT count(*) FROM entity WHERE state = 'late'") == [(0,)]


def test_a_member_with_a_real_key_is_copied_and_verified(runbook) -> None:
    """A REAL key (1.5) beside integers is kept as a number in the ledger, so that sql.copy
    and sql.verify find the source's row by it: it was kept as the text '1.5', which no REAL
    matches, and left out of the copy (issue 14)."""
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE customers (id, email TEXT, locale TEXT, segment TEXT, active)")
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, 'en', 'retail', 1)",
            [(k, f"c{k}@example.com") for k in [*range(1, 100), 1.5]],
        )
    with sqlite3.connect("new.db") as db:
        db.execute("CREATE TABLE customers (id PRIMARY KEY, email TEXT, locale TEXT,"
                   " segment TEXT, active INTEGER)")  # fmt: skip
    cr.write()
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 0, r.output
    assert cr.ledger("cohorts", "SELECT typeof(key) FROM entity WHERE key = 1.5") == [("real",)]
    with sqlite3.connect("new.db") as db:
        assert db.execute("SELECT count(*) FROM customers WHERE id = 1.5").fetchone() == (1,)
        got = db.execute("SELECT count(*) FROM customers").fetchone()[0]
    moved = cr.ledger("cohorts", "SELECT count(*) FROM entity WHERE state = 'verified'")
    assert moved == [(got,)]


def test_the_longest_key_the_ledger_keeps_is_1024_bytes_of_utf8() -> None:
    assert source.MAX_KEY_BYTES == 1024
    assert source.unusable("k" * 1024) is None
    assert source.unusable("é" * 512) is None
    assert source.unusable("k" * 1025) == "key-too-long"
    assert source.unusable("é" * 513) == "key-too-long"
    assert source.unusable("a\x00") == "bad-key"
    assert source.unusable(10**30) is None and source.unusable(None) is None


def test_a_journey_across_a_wave_rollback_and_the_re_run(runbook) -> None:
    """Wave early fails verify: it is rolled back, its members compensated and told; the next
    apply starts attempt 2, tells them again and moves them (issue 11)."""
    cr.legacy()
    cr.target()
    cr.write()
    r = runbook("apply", "m.yaml", "--yes", "--var", "corrupt=early")
    assert r.code == 1, r.output
    counts = cr.counts()
    assert counts[("early", "compensated")] == 117 and counts[("pilot", "verified")] == 29
    early = sorted(k for k, w in cr.waves().items() if w == "early")
    broken = early[-1]  # the corrupt step changes the two highest ids of the target
    assert [s for s, _, _ in cr.journey(broken)] == ["notified", "moved", "failed", "compensated"]
    # the run is pinned to corrupt=early (SPEC §11): the fault is turned off, and accepted
    r = runbook("apply", "m.yaml", "--yes", "--var", "corrupt=", "--accept-changes")
    assert r.code == 1, r.output  # the run was compensated: exit 1 once, then nothing to do
    assert cr.counts()[("early", "verified")] == 117
    steps = cr.journey(broken)
    assert [(s, a) for s, _, a in steps] == [
        ("notified", 1), ("moved", 1), ("failed", 1), ("compensated", 1),
        ("pending", 2), ("notified", 2), ("moved", 2), ("verified", 2),
    ]  # fmt: skip
    sent = cr.messages(broken)
    told = [m for m in sent if m[0] == "announce[early]"]
    postponed = [m for m in sent if m[0] == "announce[early]#rollback"]
    assert [a for _, a, _ in told] == [1, 2] and told[0][2] != told[1][2]  # two Message-IDs
    assert len(postponed) == 1  # the failed member was told its move is postponed too
    assert runbook("apply", "m.yaml", "--yes").code == 0


def test_late_and_vanished_entities_are_found_marked_and_admitted(runbook) -> None:
    cr.legacy()
    cr.target()
    cr.write()
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    with sqlite3.connect("legacy.db") as db:
        db.execute("INSERT INTO customers VALUES (9001, 'new@example.com', 'en', 'retail', 1)")
        db.execute("UPDATE customers SET active = 0 WHERE id = 3")
    r = runbook("cohort", "freeze", "m.yaml")
    assert r.code == 0, r.output
    assert "1 late (9001), 1 vanished (3)" in r.out
    assert cr.ledger("cohorts", "SELECT state FROM entity WHERE key IN (3, 9001) ORDER BY key") == [
        ("vanished",),
        ("late",),
    ]
    r = runbook("cohort", "admit", "m.yaml", "--include", "50")  # 50 had no contact
    assert r.code == 0, r.output
    assert "admitted 2 into wave pilot (9001, 50)" in r.out
    assert cr.ledger("cohorts", "SELECT wave, state FROM entity WHERE key = 9001") == [
        ("pilot", "pending")
    ]
    r = runbook("cohort", "admit", "m.yaml", "--include", "51")
    assert r.code == 2 and "entity 51 is pending, not excluded" in r.err


def test_a_wave_start_refreshes_changed_attributes_only(runbook) -> None:
    """A wave's start reads the source again: a member whose attributes changed since the draw
    gets the new ones (its messages use them); unchanged rows are left as they are."""
    import json

    cr.legacy()
    cr.target()
    cr.write()
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    ((key,), (other,)) = cr.ledger(
        "cohorts", "SELECT key FROM entity WHERE wave = 'pilot' ORDER BY key LIMIT 2"
    )
    before = dict(cr.ledger("cohorts", "SELECT key, attrs FROM entity"))
    with sqlite3.connect("legacy.db") as db:
        db.execute("UPDATE customers SET email = 'moved@example.org' WHERE id = ?", (key,))
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 0, r.output
    after = dict(cr.ledger("cohorts", "SELECT key, attrs FROM entity"))
    assert json.loads(after[key])["email"] == "moved@example.org"
    assert after[other] == before[other]
    assert {k for k in after if after[k] != before.get(k)} == {key}


def test_an_edit_to_a_frozen_draw_needs_redraw(runbook) -> None:
    cr.legacy()
    cr.target()
    cr.write()
    assert runbook("cohort", "freeze", "m.yaml").code == 0
    edited = cr.cohort(waves=[{"id": "pilot", "size": "5%", "min": 20}, {"id": "early", "size": "50%"}, {"id": "all", "size": "rest"}])  # fmt: skip
    cr.write(cohort=edited)
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 2, r.output
    assert "runbook cohort redraw m.yaml --from WAVE" in r.err and "m.yaml:" in r.err
    assert not Path("new.db").stat().st_size or cr.counts().get(("pilot", "verified")) is None
    r = runbook("cohort", "redraw", "m.yaml", "--from", "early")
    assert r.code == 0, r.output
    sizes = {w: n for (w, s), n in cr.counts().items() if w}
    assert sizes == {"pilot": 29, "early": 294, "all": 265}
    assert runbook("apply", "m.yaml", "--yes").code == 0


def test_cohort_bad_input_is_located_exit_2_and_draws_nothing(runbook) -> None:
    cr.legacy()
    cr.target()
    bad = cr.cohort(waves=[{"id": "a", "size": "60%"}, {"id": "b", "size": "50%"}])
    cr.write(cohort=bad)
    r = runbook("validate", "m.yaml")
    assert r.code == 2 and "over-commit the eligible members: 60% + 50% = 110%" in r.err
    cr.write(cohort=cr.cohort(key="customer_id"))
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 2, r.output
    assert "the key column 'customer_id' is not in the source query's columns" in r.err
    assert "m.yaml:" in r.err and "Traceback" not in r.output
    q = {"dsn": "{{ vars.legacy_db }}", "query": "SELECT nope FROM customers"}
    cr.write(cohort=cr.cohort(source=q))
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 2 and "the source query failed" in r.err and "no such column" in r.err
    mins = [{"id": "a", "size": 10, "min": 400}, {"id": "b", "size": "rest", "min": 300}]
    cr.write(cohort=cr.cohort(waves=mins))
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 2 and "ask for more members than the 588 eligible" in r.err
    phases = [{"id": "p", "waves": {"cohort": "custmers"}, "steps": cr.steps()}]
    cr.write(phases=phases)
    r = runbook("validate", "m.yaml")
    assert r.code == 2 and "no cohort 'custmers' under `cohorts` (did you mean 'customers'?)" in (
        r.err
    )
    if Path(".runbook/cohorts/state.db").exists():
        assert cr.ledger("cohorts", "SELECT count(*) FROM journal") == [(0,)]
        assert cr.ledger("cohorts", "SELECT count(*) FROM entity") == [(0,)]
