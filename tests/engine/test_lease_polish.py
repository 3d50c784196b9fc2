"""Issue 14, the polish of leases, approvals and readers on a state directory: `lock` changes
nothing on disk, `--lease` has bounds, `graph --status` (its old `--state` spelling is a
deprecated alias), the report marks expired approvals, and `approve` needs no `--var` for a
var that held a secret (the run's recorded vars decide)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

from tests.engine.helpers import journal, sh, status_json, write

STATE = Path(".runbook/t")
ME = pwd.getpwuid(os.getuid()).pw_name


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``root``: (mtime_ns, mode, content digest)."""
    out: dict[str, tuple[int, int, str]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path)] = (st.st_mtime_ns, st.st_mode, digest)
    return out


# -- 6: `runbook lock FILE` is a read-only inspection ---------------------------------------


def test_lock_changes_nothing_on_disk_not_even_the_lock_files_mtime(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert (STATE / "lock").exists()
    before = _snapshot(STATE)
    time.sleep(0.05)  # a touch now would give another mtime
    text = runbook("lock", "r.yaml")
    assert text.code == 0 and "t: nobody holds the lease (last held by" in text.out
    doc = runbook("lock", "r.yaml", "--format", "json")
    assert doc.code == 0 and json.loads(doc.out)["lease"]["state"] == "none"
    assert _snapshot(STATE) == before


# -- 4: --lease has bounds -------------------------------------------------------------------


def test_lease_above_an_hour_or_below_a_second_is_exit_2_located_on_apply_and_rollback(
    runbook,
) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt")]}])
    for command in ("apply", "rollback"):
        for bad in ("2h", "61m", "999999h", "0.5s", "-3s", "0s", "inf", "nan"):
            r = runbook(command, "r.yaml", "--yes", "--lease", bad)
            assert r.code == 2, (command, bad, r.output)
            assert "Invalid value for '--lease'" in r.err, (command, bad, r.err)
            assert "Traceback" not in r.err
        r = runbook(command, "r.yaml", "--yes", "--lease", "2h")
        assert "longer than 1h" in r.err and "1s to 1h" in r.err, r.err
    assert not STATE.exists()  # nothing written
    for command in ("apply", "rollback"):
        shown = " ".join(runbook(command, "--help").out.split())
        assert "from 1s to 1h" in shown, shown
    r = runbook("apply", "r.yaml", "--yes", "--lease", "1h")
    assert r.code == 0, r.output
    assert (STATE / "state.db").exists()
    assert json.loads(runbook("lock", "r.yaml", "--format", "json").out)["lease"]["seconds"] == 3600


# -- 7: the report marks expired approvals -----------------------------------------------------


def _approvals(doc: dict[str, Any]) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = doc["approvals"]
    return got


def test_report_marks_an_approval_whose_expires_passed_as_void_in_markdown_and_json(
    runbook,
) -> None:
    steps = [
        {"id": "ok", "action": "approval", "with": {"required": 2, "expires": "1s"}},
        sh("b", "echo b >> ledger.txt", needs=["ok"]),
    ]
    write("r.yaml", phases=[{"id": "p", "steps": steps}])
    assert runbook("apply", "r.yaml", "--yes").code == 3
    got = runbook("approve", "r.yaml", "ok", "--comment", "looks fine")
    assert got.code == 0, got.output
    before = journal(".runbook", "t")
    fresh = json.loads(runbook("report", "r.yaml", "--format", "json").out)
    assert [a["void"] for a in _approvals(fresh)] == [None]
    time.sleep(1.5)  # past `expires`
    doc = json.loads(runbook("report", "r.yaml", "--format", "json").out)
    (approval,) = _approvals(doc)
    assert approval["by"] == ME and approval["void"].startswith("expired (given at "), approval
    assert "expires: 1s" in approval["void"]
    md = runbook("report", "r.yaml")
    assert md.code == 0 and "looks fine (void: expired (given at " in md.out, md.out
    html = runbook("report", "r.yaml", "--format", "html")
    assert html.code == 0 and "looks fine (void: expired (given at " in html.out
    # as status says it
    assert "approval void: expired" in runbook("status", "r.yaml").out
    assert journal(".runbook", "t") == before  # the report wrote nothing


def test_report_keeps_an_expired_approval_that_was_acted_on_standing(runbook) -> None:
    steps = [
        {"id": "ok", "action": "approval", "with": {"expires": "1s"}},
        sh("b", "echo b >> ledger.txt", needs=["ok"]),
    ]
    write("r.yaml", phases=[{"id": "p", "steps": steps}])
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert runbook("approve", "r.yaml", "ok").code == 0
    assert runbook("apply", "r.yaml", "--yes").code == 0
    time.sleep(1.5)
    doc = json.loads(runbook("report", "r.yaml", "--format", "json").out)
    assert [a["void"] for a in _approvals(doc)] == [None]  # it was acted on: it stood


# -- 5: approve takes a secret-held var from the run, never asks for it ------------------------


def test_approve_without_var_on_a_run_whose_var_held_a_secret_is_recorded(
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
                    sh("a", "echo {{ secrets.tok }} > /dev/null"),
                    {"id": "ok", "action": "approval", "needs": ["a"]},
                    sh("b", "echo b-{{ vars.region }} >> ledger.txt", needs=["ok"]),
                ],
            }
        ],
    )
    monkeypatch.setenv("TOK", "europe-west")
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=europe-west")
    assert r.code == 3, r.output
    run = next(rec for rec in journal(".runbook", "t") if rec["t"] == "run")
    assert run["vars"] == {"region": "***"}  # held a secret's value: not stored
    monkeypatch.delenv("TOK")
    got = runbook("approve", "r.yaml", "ok", "--comment", "checked")
    assert got.code == 0, got.output
    assert "no default" not in got.output
    assert got.out.startswith(f"ok approved by {ME} for run ")
    recs = [rec for rec in journal(".runbook", "t") if rec["t"] == "approval"]
    assert [(a["by"], a["comment"], a["count"]) for a in recs] == [(ME, "checked", 1)]
    ok = next(s for s in status_json(runbook, "r.yaml")["steps"] if s["id"] == "ok")
    assert ok["status"] == "waiting"
    shown = runbook("status", "r.yaml").out
    assert "1 of 1 approval" in shown and "approval void" not in shown
    # a bad --var given is still exit 2, nothing written
    before = journal(".runbook", "t")
    bad = runbook("approve", "r.yaml", "ok", "--var", "nosuch=1")
    assert bad.code == 2 and "--var nosuch: no such variable" in bad.err
    assert journal(".runbook", "t") == before
