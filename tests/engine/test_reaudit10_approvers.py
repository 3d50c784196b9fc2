"""Issue 10 re-audit, items 7 and 9: `approve --var approver=root` passed `approvers:
["{{ vars.approver }}"]` (approval steps and gates), and a `--comment` holding a declared
secret's value was stored and reported unmasked.  The tests run as root; the runbook's own
approver is alice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import journal, runbook_yaml, sh, status_json

VARS = {"approver": {"type": "string", "default": "alice"}}


def _approval() -> None:
    step = {
        "id": "gate",
        "action": "approval",
        "with": {"message": "ok?", "approvers": ["{{ vars.approver }}"]},
    }
    Path("r.yaml").write_text(
        runbook_yaml("ident", vars=VARS, phases=[{"id": "p", "steps": [step, sh("after", "true")]}])
    )


def _gate() -> None:
    step = {
        "id": "gate",
        "action": "check",
        "with": {
            "command": "echo notanumber",
            "condition": "value == 1",
            "interval": "0s",
            "approvers": ["{{ vars.approver }}"],
        },
        "rollback": "none",
    }
    Path("r.yaml").write_text(
        runbook_yaml("ident", vars=VARS, phases=[{"id": "p", "steps": [step, sh("after", "true")]}])
    )


@pytest.mark.parametrize("make", [_approval, _gate], ids=["approval", "gate"])
def test_approve_var_approver_cannot_widen_approvers_rendered_from_the_runs_vars(
    runbook: Any, make: Any
) -> None:
    make()
    assert runbook("apply", "r.yaml", "--yes").code == 3, "the run waits at the gate"
    before = journal(".runbook", "ident")
    r = runbook("approve", "r.yaml", "gate", "--var", "approver=root")
    assert r.code == 2, r.output
    assert "'root' may not" in r.err and "its approvers are alice" in r.err, r.err
    assert journal(".runbook", "ident") == before
    gate = next(s for s in status_json(runbook, "r.yaml")["steps"] if s["id"] == "gate")
    assert gate["status"] == "waiting"


def test_approve_comment_and_by_holding_a_secret_are_masked_in_journal_and_report(
    runbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Sup3rSecretValue"
    monkeypatch.setenv("SEC3_TOKEN", secret)
    step = {"id": "gate", "action": "approval", "with": {"message": "ok?"}}
    Path("r.yaml").write_text(
        runbook_yaml(
            "ident",
            secrets={"tok": {"env": "SEC3_TOKEN"}},
            phases=[
                {
                    "id": "p",
                    "steps": [step, sh("after", "echo {{ secrets.tok | length }}")],
                }
            ],
        )
    )
    assert runbook("apply", "r.yaml", "--yes").code == 3
    r = runbook("approve", "r.yaml", "gate", "--comment", f"token is {secret} ok", "--by", secret)
    assert r.code == 0, r.output
    assert secret not in r.output
    disk = b"".join(p.read_bytes() for p in Path(".runbook").rglob("*") if p.is_file())
    assert secret.encode() not in disk
    rec = [e for e in journal(".runbook", "ident") if e.get("t") == "approval"]
    assert rec and "token is " in json.dumps(rec[-1]) and secret not in json.dumps(rec[-1])
    for fmt in ("markdown", "html", "json"):
        rep = runbook("report", "r.yaml", "--format", fmt)
        assert rep.code == 0 and secret not in rep.output, rep.output
