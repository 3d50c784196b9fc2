"""Audit of issue 14 part 1 (audit chain, pinned runs): each test demonstrates one hole found by
the hostile review on branch audit14 and FAILS on main at 739894c. Named after the hole."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.engine.helpers import journal, ledger_lines, run_process, sh, write

STATE = Path(".runbook/t/state.db")


def _sql(stmt: str, path: Path = STATE) -> None:
    con = sqlite3.connect(path)
    try:
        con.executescript(stmt)
        con.commit()
    finally:
        con.close()


def _gated(steps_after: list[dict[str, Any]], **top: Any) -> None:
    top.setdefault("vars", {"region": {"type": "string"}, "batch": 5})
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt"),
                    {"id": "ok", "action": "approval"},
                    *steps_after,
                ],
            }
        ],
        **top,
    )


# -- the audit chain -------------------------------------------------------------------------


def test_hole_audit_passes_when_every_hash_is_nulled_and_a_record_is_forged(runbook) -> None:
    """A state created by this version (schema 4, no record before the chain) has every
    hash removed and its first record rewritten: audit must not call that 'written before the
    chain existed' and exit 0."""
    _gated([sh("b", "echo b >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    _sql(
        "UPDATE journal SET hash = NULL;"
        'UPDATE journal SET rec = replace(rec, \'"region":"eu"\', \'"region":"us"\')'
        " WHERE seq = 1"
    )
    r = runbook("audit", "r.yaml")
    assert r.code == 1, r.output


def test_hole_audit_passes_when_a_prefix_is_unhashed_and_the_rest_rechained(runbook) -> None:
    """Records 1-3 edited and unhashed, 4.. re-chained from the genesis hash: a chain that
    started at record 1 now 'starts' at record 4, exit 0 without --head."""
    from runbook_engine.state.journal import GENESIS, link

    _gated([sh("b", "echo b >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    con = sqlite3.connect(STATE)
    rows = con.execute("SELECT seq, rec FROM journal ORDER BY seq").fetchall()
    con.execute("UPDATE journal SET hash = NULL WHERE seq <= 3")
    prev = GENESIS
    for seq, text in rows[3:]:
        prev = link(prev, seq, text)
        con.execute("UPDATE journal SET hash = ? WHERE seq = ?", (prev, seq))
    con.commit()
    con.close()
    r = runbook("audit", "r.yaml")
    assert r.code == 1, r.output


def test_hole_audit_counts_only_the_records_before_the_break(runbook) -> None:
    _gated([sh("b", "echo b >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    total = len(journal(".runbook", "t"))
    _sql("UPDATE journal SET hash = NULL WHERE seq IN (1, 2, 3)")
    r = runbook("audit", "r.yaml", "--format", "json")
    assert r.code == 1
    assert json.loads(r.out)["records"] == total  # says 4 of 6


# -- pinned runs: what is pinned -------------------------------------------------------------


def test_hole_a_step_moved_before_a_waiting_approval_runs_without_accept_changes(runbook) -> None:
    _gated([sh("b", "echo b >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    # the same steps, b now before the gate (document order = dependency order)
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt"),
                    sh("b", "echo b >> ledger.txt"),
                    {"id": "ok", "action": "approval"},
                ],
            }
        ],
        vars={"region": {"type": "string"}, "batch": 5},
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2, r.output
    assert ledger_lines() == ["a"]  # b ran without the approval it was behind


def test_hole_on_failure_retries_timeout_edits_are_not_pinned(runbook) -> None:
    _gated([sh("b", "echo b >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    _gated(
        [
            sh(
                "b",
                "echo b >> ledger.txt",
                on_failure="continue",
                retries={"attempts": 5},
                timeout="1s",
            )
        ]
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2, r.output
    assert not [x for x in journal(".runbook", "t") if x["t"] == "accept"]


def test_hole_a_changed_host_address_is_not_pinned(runbook) -> None:
    def doc(address: str) -> None:
        write(
            "r.yaml",
            hosts={"app1": {"address": address, "port": 1}},
            phases=[
                {
                    "id": "p",
                    "steps": [
                        sh("a", "test -f go"),
                        {
                            "id": "s",
                            "action": "ssh",
                            "with": {"hosts": ["app1"], "command": "true"},
                            "rollback": "none",
                            "timeout": "5s",
                        },
                    ],
                }
            ],
        )

    doc("127.0.0.1")
    assert runbook("apply", "r.yaml", "--yes").code == 1  # a fails: no `go` yet
    doc("127.0.0.2")
    Path("go").touch()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2, r.output  # the pending ssh step now goes to another machine


def test_hole_a_var_used_by_a_loop_over_vars_beside_a_named_ref_is_not_seen(runbook) -> None:
    write(
        "r.yaml",
        vars={"region": {"type": "string"}, "batch": 5},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "test -f go"),
                    sh(
                        "b",
                        "echo {{ vars.batch }}{% for k in vars %}-{{ vars[k] }}{% endfor %}"
                        " >> ledger.txt",
                    ),
                ],
            }
        ],
    )
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 1
    Path("go").touch()
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=us")
    assert r.code == 2, r.output  # b renders vars.region through the loop
    assert ledger_lines() == []


# -- pinned runs: what --accept-changes voids ------------------------------------------------


def test_hole_an_approval_not_yet_acted_on_survives_accept_changes_when_not_waiting(
    runbook,
) -> None:
    """ok is approved, then a resume fails on x before ok runs (ok goes back to pending with
    its approval): accepting an edit of y does not void the approval, and y runs edited."""

    def doc(y: str) -> None:
        write(
            "r.yaml",
            phases=[
                {
                    "id": "p",
                    "parallel": True,
                    "steps": [
                        sh("x", "test -f go"),
                        {"id": "ok", "action": "approval"},
                        sh("y", f"echo {y} >> ledger.txt", needs=["x", "ok"]),
                    ],
                }
            ],
        )

    doc("y-v1")
    assert runbook("apply", "r.yaml", "--yes").code == 1
    assert run_process("approve", "r.yaml", "ok").returncode == 0
    assert runbook("apply", "r.yaml", "--yes", "--max-parallel", "1").code == 1
    doc("y-EDITED")
    Path("go").touch()
    r = runbook("apply", "r.yaml", "--yes", "--accept-changes")
    assert r.code == 3, r.output  # the approval was given for y-v1: it must be given again
    assert ledger_lines() == []


def test_hole_a_gate_decision_survives_accept_changes_of_the_gate(runbook) -> None:
    def doc(condition: str) -> None:
        write(
            "r.yaml",
            phases=[
                {
                    "id": "p",
                    "steps": [
                        {
                            "id": "gate",
                            "action": "check",
                            "with": {
                                "command": "cat metric.txt",
                                "condition": condition,
                                "count": 1,
                                "interval": "0s",
                            },
                        },
                        sh("after", "echo after >> ledger.txt"),
                    ],
                }
            ],
        )

    doc("value < 5")
    Path("metric.txt").write_text("")  # inconclusive: the gate waits for a person
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert run_process("approve", "r.yaml", "gate").returncode == 0
    doc("value < 0")
    Path("metric.txt").write_text("999\n")
    r = runbook("apply", "r.yaml", "--yes", "--accept-changes")
    assert "gate" in r.output and "voided" in r.output, r.output
    assert ledger_lines() == []  # the decision on `value < 5` passed a gate `value < 0`


# -- rollback is not pinned ------------------------------------------------------------------


def test_hole_rollback_runs_an_edited_rollback_with_other_vars_silently(runbook) -> None:
    write(
        "r.yaml",
        vars={"region": {"type": "string"}},
        phases=[
            {
                "id": "p",
                "steps": [
                    {
                        "id": "a",
                        "action": "shell",
                        "with": {"command": "echo do-{{ vars.region }} >> ledger.txt"},
                        "rollback": {
                            "action": "shell",
                            "with": {"command": "echo undo-{{ vars.region }} >> ledger.txt"},
                        },
                    },
                    {"id": "ok", "action": "approval"},
                ],
            }
        ],
    )
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    text = Path("r.yaml").read_text().replace("echo undo-", "echo EDITED-undo-")
    Path("r.yaml").write_text(text)
    r = runbook("rollback", "r.yaml", "--yes", "--var", "region=us")
    assert r.code == 2, r.output
    assert ledger_lines() == ["do-eu"]


# -- a refused apply writes nothing ----------------------------------------------------------


def test_hole_a_refused_apply_migrates_the_schema(runbook) -> None:
    _gated([sh("b", "echo b-{{ vars.region }} >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    _sql("ALTER TABLE journal DROP COLUMN hash;UPDATE meta SET value = '3' WHERE key = 'version'")
    _gated([sh("b", "echo B-{{ vars.region }} >> ledger.txt")])
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "Nothing was written" in r.err
    con = sqlite3.connect(STATE)
    version = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
    con.close()
    assert version == "3"


def test_hole_a_refused_apply_imports_the_legacy_journal(runbook) -> None:
    from runbook_engine.state.legacy import FORMAT, frame

    _gated([sh("b", "echo b-{{ vars.region }} >> ledger.txt")])
    at = "2026-01-01T00:00:00.000Z"
    recs = [
        {"t": "header", "format": FORMAT, "runbook": "t", "created": at},
        {
            "t": "run",
            "run": "r1",
            "status": "running",
            "digest": "sha256:old",
            "vars": {"region": "eu", "batch": 5},
            "at": at,
        },
        {"t": "step", "id": "a", "status": "succeeded", "attempt": 1, "run": "r1", "at": at},
        {"t": "run", "run": "r1", "status": "failed", "at": at},
    ]
    folder = Path(".runbook/t")
    folder.mkdir(parents=True)
    (folder / "journal.jsonl").write_bytes(b"".join(frame(x) for x in recs))
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=eu")
    assert r.code == 2 and "Nothing was written" in r.err, r.output
    assert (folder / "journal.jsonl").exists() and not STATE.exists()


def test_hole_a_legacy_runs_stored_vars_are_not_used_on_resume(runbook) -> None:
    from runbook_engine.state.legacy import FORMAT, frame

    _gated([sh("b", "echo b-{{ vars.region }} >> ledger.txt")])
    at = "2026-01-01T00:00:00.000Z"
    recs = [
        {"t": "header", "format": FORMAT, "runbook": "t", "created": at},
        {
            "t": "run",
            "run": "r1",
            "status": "running",
            "vars": {"region": "eu", "batch": 5},
            "at": at,
        },
        {"t": "run", "run": "r1", "status": "failed", "at": at},
    ]
    folder = Path(".runbook/t")
    folder.mkdir(parents=True)
    (folder / "journal.jsonl").write_bytes(b"".join(frame(x) for x in recs))
    r = runbook("apply", "r.yaml", "--yes")
    assert "has no default" not in r.err, r.output  # the run stored region=eu


def test_hole_a_non_utf8_var_is_an_internal_error_in_the_chain(runbook) -> None:
    _gated([sh("b", "echo b >> ledger.txt")])
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=\udcff")
    assert r.code == 2, r.output
    assert "internal error" not in r.err


def test_hole_a_var_changing_a_cohorts_source_is_not_seen_by_its_foreach_steps(runbook) -> None:
    import yaml

    for db in ("legacy", "other"):
        con = sqlite3.connect(f"{db}.db")
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
        con.executemany(
            "INSERT INTO customers VALUES (?, ?)", [(i, f"{db}{i}@x") for i in range(1, 5)]
        )
        con.commit()
        con.close()
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "t"},
        "vars": {"legacy_db": "sqlite:///legacy.db"},
        "cohorts": {
            "subs": {
                "source": {
                    "dsn": "{{ vars.legacy_db }}",
                    "query": "SELECT id, email FROM customers",
                },
                "key": "id",
                "attributes": ["email"],
                "waves": [{"id": "pilot", "size": 2}, {"id": "rest", "size": "rest"}],
            }
        },
        "phases": [
            {
                "id": "p",
                "waves": {"cohort": "subs"},
                "steps": [
                    sh("gate0", "test -f go"),
                    {
                        "id": "mail",
                        "action": "shell",
                        "foreach": {"cohort": "subs", "concurrency": 1},
                        "with": {"command": "echo {{ member.email }} >> ledger.txt"},
                        "rollback": "none",
                    },
                ],
            }
        ],
    }
    Path("r.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert runbook("apply", "r.yaml", "--yes").code == 1
    Path("go").touch()
    r = runbook("apply", "r.yaml", "--yes", "--var", "legacy_db=sqlite:///other.db")
    assert r.code == 2, r.output  # mail's members' attributes now come from another database
    assert not any(line.startswith("other") for line in ledger_lines())


def test_hole_a_var_that_held_a_secret_value_changes_silently_on_resume(
    runbook, monkeypatch
) -> None:
    write(
        "r.yaml",
        vars={"region": {"type": "string"}},
        secrets={"tok": {"env": "TOK"}},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "test -f go && echo {{ secrets.tok }} > /dev/null"),
                    sh("b", "echo b-{{ vars.region }} >> ledger.txt"),
                ],
            }
        ],
    )
    monkeypatch.setenv("TOK", "europe-west")
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=europe-west").code == 1
    Path("go").touch()
    monkeypatch.setenv("TOK", "us-east")  # the secret rotated
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=us-east")
    assert r.code == 2, r.output  # region europe-west -> us-east: b not yet done uses it
    assert ledger_lines() == []


def test_hole_apply_dry_run_shows_edited_steps_running_where_apply_refuses(runbook) -> None:
    _gated([sh("b", "echo b-{{ vars.region }} >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    _gated([sh("b", "echo B-{{ vars.region }} >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes").code == 2
    d = runbook("apply", "r.yaml", "--dry-run")
    assert "accept-changes" in d.output, d.output


def test_hole_cohort_freeze_and_admit_ignore_the_runs_stored_vars(runbook) -> None:
    import yaml

    for db, base in (("legacy", 0), ("other", 10)):
        con = sqlite3.connect(f"{db}.db")
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
        con.executemany(
            "INSERT INTO customers VALUES (?, ?)",
            [(base + i, f"{db}{base + i}@x") for i in range(1, 5)],
        )
        con.commit()
        con.close()
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "t"},
        "vars": {"legacy_db": "sqlite:///legacy.db"},
        "cohorts": {
            "subs": {
                "source": {
                    "dsn": "{{ vars.legacy_db }}",
                    "query": "SELECT id, email FROM customers",
                },
                "key": "id",
                "attributes": ["email"],
                "waves": [{"id": "pilot", "size": 2}, {"id": "rest", "size": "rest"}],
            }
        },
        "phases": [{"id": "p", "waves": {"cohort": "subs"}, "steps": [sh("gate0", "test -f go")]}],
    }
    Path("r.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert runbook("apply", "r.yaml", "--yes", "--var", "legacy_db=sqlite:///other.db").code == 1
    r = runbook("cohort", "freeze", "r.yaml")  # no --var: the run's vars (other.db)
    # freeze always prints its counts: none late and none vanished against the run's source
    # (against the default legacy.db all 4 would be late and all 4 vanished)
    assert r.code == 0 and "0 late, 0 vanished" in r.output, r.output


def _nest_record(seq: int) -> None:
    con = sqlite3.connect(STATE)
    con.execute("UPDATE journal SET rec = ? WHERE seq = ?", ("[" * 100000 + "]" * 100000, seq))
    con.commit()
    con.close()


def test_hole_audit_crashes_on_a_record_nested_past_the_parsers_depth(runbook) -> None:
    _gated([sh("b", "echo b >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    _nest_record(3)
    r = runbook("audit", "r.yaml", "--format", "json")
    assert "internal error" not in r.err, r.err
    assert r.code == 1 and json.loads(r.out)["broken"]["seq"] == 3


def test_hole_pinned_run_vars_crash_on_a_deeply_nested_run_record(runbook) -> None:
    """The issue 10 rule (a record nested past the parser's depth is damage: exit 2 naming it,
    for apply, approve, rollback) is broken by the read of the run's vars before the lock."""
    _gated([sh("b", "echo b >> ledger.txt")])
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    last = len(journal(".runbook", "t"))  # the run record `paused`
    _nest_record(last)
    for args in (("apply", "r.yaml", "--yes"), ("approve", "r.yaml", "ok"), ("plan", "r.yaml")):
        r = runbook(*args)
        assert r.code == 2 and f"journal record {last} is damaged" in r.err, (args, r.err)
