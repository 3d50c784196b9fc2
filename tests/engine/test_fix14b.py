"""The fixes of issue 14's second audit (tests/engine/test_audit14b_holes.py), asserted more
closely: what is said, what is recorded, what the report shows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.engine.helpers import journal, ledger_lines, sh, write

STATE = Path(".runbook/t/state.db")


def _approval_runbook() -> None:
    write(
        "r.yaml",
        vars={"region": "eu"},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt"),
                    {"id": "ok", "action": "approval", "with": {"message": "ship?"}},
                    sh("b", "echo b-{{ vars.region }} >> ledger.txt"),
                ],
            }
        ],
    )


def test_the_report_shows_a_voided_approval_as_void_with_its_reason(runbook: Any) -> None:
    _approval_runbook()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert runbook("approve", "r.yaml", "ok", "--comment", "ok for eu").code == 0
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=us", "--accept-changes")
    assert r.code == 3, r.output
    assert runbook("approve", "r.yaml", "ok", "--comment", "ok for us").code == 0
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert ledger_lines() == ["a", "b-us"]
    listed = json.loads(runbook("report", "r.yaml", "--format", "json").out)["approvals"]
    by_comment = {a["comment"]: a for a in listed}
    assert by_comment["ok for eu"]["void"].startswith("changed since given (vars region)")
    assert by_comment["ok for us"]["void"] is None
    md = runbook("report", "r.yaml").out
    assert "ok for eu (void: changed since given" in md


def test_a_gate_decision_records_the_plan_it_was_made_on(runbook: Any) -> None:
    gate = {
        "id": "gate",
        "action": "check",
        "with": {"command": "echo notanumber", "condition": "value == 1", "interval": "0s"},
        "rollback": "none",
    }
    write("r.yaml", phases=[{"id": "p", "steps": [gate, sh("after", "echo x >> ledger.txt")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert runbook("approve", "r.yaml", "gate").code == 0
    (rec,) = [x for x in journal(".runbook", "t") if x["t"] == "gate"]
    run = next(x for x in journal(".runbook", "t") if x["t"] == "run")
    assert rec["step"] == "gate" and rec["digest"] == run["digest"]
    assert rec["vars"].startswith("sha256:") and rec["pin"]
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert ledger_lines() == ["x"]


def test_a_rollback_with_other_vars_is_refused_while_a_step_not_yet_done_uses_them(
    runbook: Any,
) -> None:
    _approval_runbook()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    before = len(journal(".runbook", "t"))
    r = runbook("rollback", "r.yaml", "--step", "a", "--yes", "--var", "region=us")
    assert r.code == 2, r.output
    assert "step b: not yet done (accepting re-pins the whole run)" in r.err
    assert "--accept-changes" in r.err and len(journal(".runbook", "t")) == before
    assert ledger_lines() == ["a"]


def test_an_accepted_approve_on_an_older_schema_asks_for_one_apply_first(runbook: Any) -> None:
    _approval_runbook()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    con = sqlite3.connect(STATE)
    con.executescript(
        "ALTER TABLE journal DROP COLUMN hash;UPDATE meta SET value = '3' WHERE key = 'version'"
    )
    con.commit()
    con.close()
    before = STATE.read_bytes()
    r = runbook("approve", "r.yaml", "ok")
    assert r.code == 2 and "run `runbook apply` once with this version first" in r.err, r.output
    assert "Traceback" not in r.err and STATE.read_bytes() == before


def test_gate_approvers_empty_is_a_located_error(runbook: Any) -> None:
    gate = {
        "id": "gate",
        "action": "check",
        "with": {"command": "echo 1", "condition": "value == 1", "approvers": []},
        "rollback": "none",
    }
    write("r.yaml", phases=[{"id": "p", "steps": [gate]}])
    r = runbook("validate", "r.yaml")
    assert r.code == 2 and "steps[0].with.approvers: approvers names nobody" in r.output


def test_a_var_that_held_a_secret_counts_as_changed_but_does_not_void_the_approvals(
    runbook: Any, monkeypatch: Any
) -> None:
    """A var that held a secret's value keeps no digest (the key is in the same file): given
    again it cannot be compared and needs --accept-changes; an approval bound to the plan as
    stored (the var masked both times) is not voided by that accept, or the run could never
    pass an approval."""
    monkeypatch.setenv("TOK", "europe-west")
    write(
        "r.yaml",
        vars={"region": {"type": "string"}},
        secrets={"tok": {"env": "TOK"}},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo {{ secrets.tok }} > /dev/null"),
                    {"id": "ok", "action": "approval"},
                    sh("b", "echo b-{{ vars.region }} >> ledger.txt"),
                ],
            }
        ],
    )
    given = ("--var", "region=europe-west")
    assert runbook("apply", "r.yaml", "--yes", *given).code == 3
    assert b"europe-west" not in STATE.read_bytes()
    # (approve needs the var given: the run's own value of it was not stored)
    assert runbook("approve", "r.yaml", "ok", *given).code == 0
    r = runbook("apply", "r.yaml", "--yes", *given)
    assert r.code == 2 and "cannot be compared: it held a secret" in r.err, r.output
    r = runbook("apply", "r.yaml", "--yes", *given, "--accept-changes")
    assert r.code == 0 and "approvals voided" not in r.output, r.output
    assert ledger_lines() == ["b-europe-west"]
    assert b"europe-west" not in STATE.read_bytes()
