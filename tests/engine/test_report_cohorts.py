"""`report` on cohorts (SPEC §7 "Report"): the per-wave funnel from the ledger, excluded
entities by reason, late and vanished ones with their first keys, in markdown, html and json;
customer data is hostile and escaped everywhere."""

from __future__ import annotations

import json
import sqlite3

from tests.engine.cohort_fixtures import cohort, ledger, legacy_db, migration, steps

HOSTILE = "<img src=x onerror=alert(1)>|`@ops"


def _fault_run(runbook) -> None:  # type: ignore[no-untyped-def]
    legacy_db()
    migration()
    assert runbook("apply", "m.yaml", "--yes", "--var", "corrupt=early").code == 1
    # the run is pinned to corrupt=early (SPEC §11): the fault is turned off, and accepted
    assert runbook("apply", "m.yaml", "--yes", "--var", "corrupt=", "--accept-changes").code == 1


def test_json_has_the_funnel_excluded_late_and_vanished(runbook) -> None:
    _fault_run(runbook)
    r = runbook("report", "m.yaml", "--format", "json")
    assert r.code == 0, r.err
    (c,) = json.loads(r.out)["cohorts"]
    assert c["name"] == "customers" and c["total"] == 60 and c["clean"] is True
    assert c["summary"] == "60 customers: 57 verified, 3 excluded (no-contact), 0 failed, 0 pending"
    funnel = {f["wave"]: f for f in c["funnel"]}
    assert list(funnel) == ["pilot", "early", "all"]
    assert funnel["early"] == {
        "wave": "early",
        "attempts": 2,
        "members": 17,
        "notified": 17,
        "moved": 17,
        "verified": 17,
        "failed": 0,
        "compensated": 0,
        "pending": 0,
        "vanished": 0,
        "failed_in_run": 3,
        "compensated_in_run": 17,
    }
    assert funnel["pilot"]["attempts"] == 1 and funnel["pilot"]["compensated_in_run"] == 0
    assert c["excluded"] == [{"what": "no-contact", "count": 3, "first": [20, 40, 60]}]
    assert c["late"] == {"what": "late", "count": 0, "first": []}
    assert c["vanished"] == {"what": "vanished", "count": 0, "first": []}
    # what the ledger holds, independently
    assert ledger("SELECT count(DISTINCT key) FROM transition WHERE state = 'compensated'") == [
        (17,)
    ]


def test_markdown_and_html_show_the_customers(runbook) -> None:
    _fault_run(runbook)
    md = runbook("report", "m.yaml").out
    assert "## Customers" in md and "### Cohort customers" in md
    assert "- 60 customers: 57 verified, 3 excluded (no-contact), 0 failed, 0 pending." in md
    assert "- 17 customers compensated in this run (wave early)" in md
    assert "| early | 2 | 17 | 17 | 17 | 17 | 0 | 0 | 0 | 0 | 3 | 17 |" in md
    assert "| no-contact | 3 | 20, 40, 60 |" in md
    html = runbook("report", "m.yaml", "--format", "html").out
    assert "<h2>Customers</h2>" in html and "<h3>Cohort customers</h3>" in html
    assert ">clean</span>" in html


def test_late_vanished_and_hostile_keys_are_reported_escaped(runbook) -> None:
    """Text keys from the source: one excluded with markup in it, one that vanishes before
    its wave, one that appears after the draw."""
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE accounts (code TEXT, email TEXT, segment TEXT, active INTEGER)")
        rows = [(f"a{i:02d}", f"a{i}@example.com", "retail", 1) for i in range(1, 21)]
        rows.append((HOSTILE, None, "retail", 1))
        db.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?)", rows)
    with sqlite3.connect("new.db") as db:
        db.execute(
            "CREATE TABLE accounts (code TEXT PRIMARY KEY, email TEXT, segment TEXT, active INTEGER)"
        )
    gate = {
        "id": "gate",
        "action": "shell",
        "with": {"command": "test ! -e stop"},
        "rollback": "none",
        "when": "wave.id == 'pilot'",
    }
    moves = [s for s in steps("accounts", announce=False) if s["id"] != "break"]
    for s in moves:
        s["with"]["table"] = "accounts"
        s["with"]["key"] = "code"
    moves[0]["rollback"]["with"]["sql"] = (
        "DELETE FROM accounts WHERE code IN (SELECT key FROM rb_members)"
    )
    migration(
        cohorts={
            "accounts": cohort(
                source={
                    "dsn": "{{ vars.legacy_db }}",
                    "query": "SELECT code, email, segment FROM accounts WHERE active = 1",
                },
                key="code",
                attributes=["email", "segment"],
                stratify_by=[],
                waves=[{"id": "pilot", "size": 5}, {"id": "all", "size": "rest"}],
            )
        },
        phases=[{"id": "rollout", "waves": {"cohort": "accounts"}, "steps": [*moves, gate]}],
    )
    open("stop", "w").close()
    assert runbook("apply", "m.yaml", "--yes").code == 1
    gone = ledger("SELECT key FROM entity WHERE wave = 'all' ORDER BY key LIMIT 1")[0][0]
    with sqlite3.connect("legacy.db") as db:
        db.execute("UPDATE accounts SET active = 0 WHERE code = ?", (gone,))
        db.execute("INSERT INTO accounts VALUES ('zz-late', 'z@example.com', 'retail', 1)")
    import os

    os.unlink("stop")
    assert runbook("apply", "m.yaml", "--yes").code == 0
    doc = json.loads(runbook("report", "m.yaml", "--format", "json").out)
    (c,) = doc["cohorts"]
    assert c["late"] == {"what": "late", "count": 1, "first": ["zz-late"]}
    assert c["vanished"] == {"what": "vanished", "count": 1, "first": [gone]}
    assert c["excluded"] == [{"what": "no-contact", "count": 1, "first": [HOSTILE]}]
    (rec,) = c["reconciled"]
    assert (rec["late"], rec["vanished"]) == (1, 1)
    assert rec["late_keys"] == ["zz-late"] and rec["vanished_keys"] == [gone]
    funnel = {f["wave"]: f for f in c["funnel"]}
    assert funnel["all"]["members"] == 15 and funnel["all"]["vanished"] == 1
    assert funnel["all"]["verified"] == 14
    html = runbook("report", "m.yaml", "--format", "html").out
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;|`@ops" in html
    md = runbook("report", "m.yaml").out
    # no HTML, no markup, and no mention: a zero-width space after the `@`
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;\\|\\`@\u200bops" in md
    assert f"| vanished | 1 | {gone} |" in md and "| late | 1 | zz-late |" in md
