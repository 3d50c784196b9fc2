"""Statuses and records that tell the truth (issue 10, items 8-12, 18): each test names the
hole it closes."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

from tests.engine.helpers import (
    RUNBOOK,
    journal,
    ledger_lines,
    sh,
    status_json,
    wait_until,
    write,
)


def _pager_runbook() -> None:
    page = {
        "id": "page-dba",
        "action": "notify",
        "with": {
            "channel": "outbox",
            "to": ["dba@example.com"],
            "subject": "data-loss risk fired on {{ failed_step.id }}",
            "message": "run {{ run.id }}",
        },
    }
    write(
        "r.yaml",
        risks=[{"id": "loss", "likelihood": "low", "impact": "low", "contingencies": ["page-dba"]}],
        contingencies=[page],
        phases=[{"id": "p", "steps": [sh("verify", "test -e fixed", risks=["loss"])]}],
    )


def test_a_contingency_message_is_sent_once_per_firing_not_once_per_state(runbook) -> None:
    """Item 12: the second run's page was 'skipped_already_sent'."""
    _pager_runbook()
    assert runbook("apply", "r.yaml", "--yes").code == 1
    Path("fixed").touch()
    assert runbook("apply", "r.yaml", "--yes").code == 1  # finished after compensation
    Path("fixed").unlink()
    # --replace stays inside the run (SPEC §11): the same firing, not paged twice
    r = runbook("apply", "r.yaml", "--yes", "--replace", "verify")
    assert r.code == 1, r.output
    fired = [rec for rec in journal(".runbook", "t") if rec["t"] == "contingency"]
    assert len([rec for rec in fired if rec["status"] == "succeeded"]) == 1
    # a full rollback ends the run; a new run that fails again is a new firing: paged again
    Path("fixed").touch()
    assert runbook("apply", "r.yaml", "--yes").code == 1  # finished after compensation
    assert runbook("rollback", "r.yaml", "--yes").code == 0
    Path("fixed").unlink()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    pages = [
        rec
        for rec in journal(".runbook", "t")
        if rec["t"] == "contingency" and rec["status"] == "succeeded"
    ]
    assert len(pages) == 2 and pages[0]["run"] != pages[1]["run"]
    assert [p["outputs"]["sent"] for p in pages] == [1, 1]  # not skipped_already_sent
    con = sqlite3.connect(".runbook/t/state.db")
    rows = con.execute("SELECT run, step, attempt, message_id, state FROM outbox").fetchall()
    con.close()
    assert len(rows) == 2 and len({r[3] for r in rows}) == 2  # two messages, two Message-IDs
    assert [(r[1], r[2], r[4]) for r in rows] == [("page-dba", "verify/1", "queued")] * 2
    assert [r[0] for r in rows] == [p["run"] for p in pages]  # one per firing


def test_a_state_url_with_an_unsupported_scheme_is_exit_2_and_makes_no_folder(runbook) -> None:
    """Item 18: `--state-dir postgresql://u:p@host/db` made a folder named after the URL,
    password included."""
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    for url in ("mysql://u:s3cret@db.example/state", "s3://bucket/x", "file://x"):
        r = runbook("--state-dir", url, "apply", "r.yaml", "--yes")
        assert r.code == 2, r.output
        assert "not supported" in r.err and "s3cret" not in r.output
        assert not any(p.name.startswith(("mysql", "s3", "file")) for p in Path(".").iterdir())


def test_a_compensated_run_says_so_in_status_json_and_report(runbook) -> None:
    """Item 9: apply said 'succeeded after compensation (exit 1)' while status, its JSON and
    the report headline said plain 'succeeded'."""
    _pager_runbook()
    assert runbook("apply", "r.yaml", "--yes").code == 1
    Path("fixed").touch()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1 and "succeeded after compensation (exit 1)" in r.out
    text = runbook("status", "r.yaml").out
    assert "succeeded after compensation (its apply exited 1)" in text.splitlines()[0]
    doc = status_json(runbook, "r.yaml")
    run = doc["run"]
    assert (run["status"], run["compensated"], run["clean"]) == ("succeeded", True, False)
    assert run["holder"] is None  # nobody holds it and the run is over
    md = runbook("report", "r.yaml").out
    assert ": succeeded after compensation**" in md
    html = runbook("report", "r.yaml", "--format", "html").out
    assert "(succeeded after compensation)" in html


def test_status_after_kill_9_shows_the_holder_lost_never_plainly_running(runbook) -> None:
    """Item 11: after `kill -9`, status showed the run and its step `running` until the next
    apply."""
    write("r.yaml", phases=[{"id": "p", "steps": [sh("slow", "touch started; sleep 20")]}])
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(Path("started").exists, "step `slow` starts", proc)
        doc = status_json(runbook, "r.yaml")
        holder = doc["run"]["holder"]
        assert holder["alive"] is True and holder["pid"] == proc.pid
        assert holder["lost_since"] is None
        assert f"pid {proc.pid}" in runbook("status", "r.yaml").out
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    doc = status_json(runbook, "r.yaml")
    run = doc["run"]
    assert run["status"] == "running"  # the state says so: nothing wrote otherwise
    assert run["holder"]["alive"] is False and run["holder"]["lost_since"]
    first = runbook("status", "r.yaml").out.splitlines()[0]
    assert "running (holder lost since" in first and f"pid {proc.pid}" in first


def test_a_step_with_no_rollback_declared_is_left_in_place_not_rolled_back(runbook) -> None:
    """Item 8: rollback marked a step with no rollback declared `rolled_back` and exited 0,
    while its effect was still there."""
    undo = {"action": "shell", "with": {"command": "echo undo-a >> ledger.txt"}}
    no_rollback = {"id": "b", "action": "shell", "with": {"command": "echo b >> ledger.txt"}}
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt", rollback=undo),
                    no_rollback,  # changes something, says nothing about undoing it
                    sh("c", "echo c >> ledger.txt"),  # `rollback: none`: undone by definition
                ],
            }
        ],
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert "left in place (no rollback declared: their changes stay): b" in r.out
    st = {s["id"]: s["status"] for s in status_json(runbook, "r.yaml")["steps"]}
    assert st == {"a": "rolled_back", "b": "succeeded", "c": "rolled_back"}
    assert status_json(runbook, "r.yaml")["run"]["status"] == "failed"  # not rolled_back
    assert ledger_lines() == ["a", "b", "c", "undo-a"]  # the steps before b were still undone


def test_a_full_rollback_that_undid_everything_ends_the_run(runbook) -> None:
    """Item 8: the next apply starts a new run after a full rollback that undid everything."""
    undo = {"action": "shell", "with": {"command": "echo undo >> ledger.txt"}}
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt", rollback=undo)]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0
    first = status_json(runbook, "r.yaml")["run"]["id"]
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert status_json(runbook, "r.yaml")["run"]["status"] == "rolled_back"
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0 and status_json(runbook, "r.yaml")["run"]["id"] != first
    assert ledger_lines() == ["a", "undo", "a"]
