"""Pinned runs, what a pin covers (SPEC §8 "Pinned runs", §11; issue 14): a step's effective
definition (its `needs`, `parallel`, place before approvals and gates, `defaults`, resolved
hosts), vars stored as keyed digests, rollback pinned like apply, `audit` of a legacy journal,
`plan` on a step done with other vars."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.engine.helpers import journal, ledger_lines, sh, write

STATE = Path(".runbook/t/state.db")


def _accepts() -> list[dict[str, Any]]:
    return [r for r in journal(".runbook", "t") if r["t"] == "accept"]


def _parallel(b_needs: list[str], **top: Any) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    sh("a", "test -f go"),
                    sh("x", "echo x >> ledger.txt"),
                    sh("b", "echo b >> ledger.txt", needs=b_needs),
                ],
            }
        ],
        **top,
    )


def test_a_pending_steps_needs_edited_is_refused_as_a_place_change(runbook) -> None:
    _parallel(["a"])
    assert runbook("apply", "r.yaml", "--yes").code == 1  # a fails, b waits for it
    _parallel([])
    Path("go").touch()
    before = len(journal(".runbook", "t"))
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2, r.output
    assert "step b: place changed" in r.err and "Nothing was written" in r.err
    assert len(journal(".runbook", "t")) == before and "b" not in ledger_lines()
    r = runbook("apply", "r.yaml", "--yes", "--accept-changes")
    assert r.code == 0, r.output
    assert _accepts()[-1]["steps"] == ["b"]


def test_a_defaults_edit_that_applies_to_a_pending_step_is_refused(runbook) -> None:
    _parallel(["a"])
    assert runbook("apply", "r.yaml", "--yes").code == 1
    _parallel(["a"], defaults={"timeout": "5s"})
    Path("go").touch()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2, r.output
    assert "step a: definition changed" in r.err and "step b: definition changed" in r.err
    assert not _accepts()


def test_a_description_edit_is_not_a_change_of_what_a_step_runs(runbook) -> None:
    _parallel(["a"])
    assert runbook("apply", "r.yaml", "--yes").code == 1
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    sh("a", "test -f go", description="now documented"),
                    sh("x", "echo x >> ledger.txt"),
                    sh("b", "echo b >> ledger.txt", needs=["a"]),
                ],
            }
        ],
    )
    Path("go").touch()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output  # another runbook digest, no step affected: goes on, journaled
    assert [a["explicit"] for a in _accepts()] == [False] and _accepts()[0]["steps"] == []


def _secret_var_runbook() -> None:
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


def test_a_var_stored_masked_is_asked_for_again_and_compared_by_its_keyed_digest(
    runbook, monkeypatch
) -> None:
    _secret_var_runbook()
    monkeypatch.setenv("TOK", "europe-west")
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=europe-west").code == 1
    run = next(r for r in journal(".runbook", "t") if r["t"] == "run")
    assert run["vars"] == {"region": "***"} and set(run["var_hmacs"]) == {"region"}
    Path("go").touch()
    before = len(journal(".runbook", "t"))
    r = runbook("apply", "r.yaml", "--yes")  # no --var: region cannot be taken from the run
    assert r.code == 2, r.output
    assert "give --var region=… again: its value held a secret and was not stored" in r.err
    assert "Traceback" not in r.err and len(journal(".runbook", "t")) == before
    # the same value again: the keyed digests agree, the run goes on
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=europe-west")
    assert r.code == 0, r.output
    assert ledger_lines() == ["b-europe-west"] and not _accepts()


def test_the_var_key_is_kept_in_meta_and_never_journaled_or_printed(runbook, monkeypatch) -> None:
    _secret_var_runbook()
    monkeypatch.setenv("TOK", "s3cr3t-value")
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 1
    con = sqlite3.connect(STATE)
    key = con.execute("SELECT value FROM meta WHERE key = 'var_key'").fetchone()[0]
    texts = [t for (t,) in con.execute("SELECT rec FROM journal")]
    con.close()
    assert len(key) == 64 and not any(key in t for t in texts)
    for args in (("status", "r.yaml", "--format", "json"), ("plan", "r.yaml", "--format", "json")):
        r = runbook(*args)
        assert key not in r.output, args


def _undoable(undo: str = "echo undo-{{ vars.region }} >> ledger.txt") -> None:
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
                        "rollback": {"action": "shell", "with": {"command": undo}},
                    },
                    {"id": "ok", "action": "approval"},
                ],
            }
        ],
    )


def test_rollback_accepts_changes_like_apply_and_journals_them(runbook) -> None:
    _undoable()
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    _undoable("echo EDITED-undo-{{ vars.region }} >> ledger.txt")
    before = len(journal(".runbook", "t"))
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 2, r.output
    assert len(journal(".runbook", "t")) == before and ledger_lines() == ["do-eu"]
    assert "steps it would undo are affected" in r.err and "step a: definition changed" in r.err
    assert "runbook rollback r.yaml --accept-changes" in r.err and not _accepts()
    r = runbook("rollback", "r.yaml", "--yes", "--accept-changes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["do-eu", "EDITED-undo-eu"]  # the run's vars, the accepted edit
    (acc,) = _accepts()
    assert acc["explicit"] is True and acc["steps"] == ["a"] and acc["changed_vars"] == []


def test_rollback_of_a_step_whose_rollback_is_unchanged_goes_on_without_accepting(
    runbook,
) -> None:
    _undoable()
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["do-eu", "undo-eu"] and not _accepts()


def test_audit_of_a_legacy_journal_says_it_has_no_chain_and_refuses_garbage(runbook) -> None:
    from runbook_engine.state.legacy import FORMAT, frame

    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    at = "2026-01-01T00:00:00.000Z"
    recs = [
        {"t": "header", "format": FORMAT, "runbook": "t", "created": at},
        {"t": "run", "run": "r1", "status": "running", "at": at},
        {"t": "run", "run": "r1", "status": "failed", "at": at},
    ]
    folder = Path(".runbook/t")
    folder.mkdir(parents=True)
    (folder / "journal.jsonl").write_bytes(b"".join(frame(x) for x in recs))
    r = runbook("audit", "r.yaml")
    assert r.code == 0, r.output
    assert "2 records of an earlier version (journal.jsonl) carry no chain" in r.out
    doc = json.loads(runbook("audit", "r.yaml", "--format", "json").out)
    assert doc["records"] == 2 and doc["unchained"] == 2 and doc["head"] is None
    (folder / "journal.jsonl").write_bytes(b"this is not a journal\n")
    r = runbook("audit", "r.yaml")
    assert r.code == 2 and "not a runbook state journal" in r.err, r.output
    assert not STATE.exists()


def test_plan_flags_a_step_done_with_other_vars(runbook) -> None:
    write(
        "r.yaml",
        vars={"region": {"type": "string"}},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a-{{ vars.region }} >> ledger.txt"),
                    sh("g", "test -f go"),
                    sh("b", "echo b >> ledger.txt"),
                ],
            }
        ],
    )
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 1
    r = runbook("plan", "r.yaml", "--var", "region=us")
    assert r.code == 0, r.output
    assert "done (done with other vars; runs again only with --replace)" in r.out
    assert "done with other vars" in r.err and ": a" in r.err
    steps = {
        s["id"]: s
        for g in json.loads(
            runbook("plan", "r.yaml", "--var", "region=us", "--format", "json").out
        )["groups"]
        for s in g["steps"]
    }
    assert steps["a"]["other_vars"] is True and steps["b"]["other_vars"] is False
    r = runbook("plan", "r.yaml")  # the run's own vars: nothing to flag
    assert "other vars" not in r.output


def test_apply_dry_run_with_accept_changes_says_it_would_go_on(runbook) -> None:
    _undoable()
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    write(
        "r.yaml",
        vars={"region": {"type": "string"}},
        phases=[{"id": "p", "steps": [{"id": "ok", "action": "approval"}, sh("n", "true")]}],
    )
    before = len(journal(".runbook", "t"))
    r = runbook("apply", "r.yaml", "--dry-run")
    assert r.code == 2 and "the apply would be refused (exit 2)" in r.out, r.output
    r = runbook("apply", "r.yaml", "--dry-run", "--accept-changes")
    assert r.code == 0 and "with --accept-changes, run" in r.out, r.output
    assert len(journal(".runbook", "t")) == before


def test_cohort_admit_and_freeze_take_the_runs_vars_without_var(runbook) -> None:
    import yaml

    con = sqlite3.connect("other.db")
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
    con.executemany("INSERT INTO customers VALUES (?, ?)", [(i, f"c{i}@x") for i in range(1, 5)])
    con.commit()
    con.close()
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "t"},
        "vars": {"legacy_db": {"type": "string"}},  # no default: only the run knows it
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
    r = runbook("cohort", "freeze", "r.yaml")
    assert r.code == 0 and "0 late, 0 vanished" in r.output, r.output
    r = runbook("cohort", "admit", "r.yaml", "--include", "3")
    assert "has no default" not in r.err, r.output


def test_a_refused_rollback_leaves_an_older_schema_unmigrated(runbook) -> None:
    _undoable()
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 3
    con = sqlite3.connect(STATE)
    con.executescript(
        "ALTER TABLE journal DROP COLUMN hash;UPDATE meta SET value = '3' WHERE key = 'version'"
    )
    con.commit()
    con.close()
    _undoable("echo EDITED-undo-{{ vars.region }} >> ledger.txt")
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 2 and "steps it would undo are affected" in r.err, r.output
    con = sqlite3.connect(STATE)
    version = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
    con.close()
    assert version == "3" and ledger_lines() == ["do-eu"]
