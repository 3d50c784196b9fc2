"""Pinned runs (SPEC §8 "Pinned runs", §11, issue 14 part 1): a run applies the runbook and
the vars it started with; a change that affects steps not yet done is refused (exit 2,
nothing written) until `apply --accept-changes`, which is journaled with who and both digests
and voids the approvals given under the old digest."""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
from pathlib import Path
from typing import Any

from tests.engine.helpers import journal, ledger_lines, run_process, sh, status_json, write

STATE = Path(".runbook/t/state.db")
ME = pwd.getpwuid(os.geteuid()).pw_name


def _runbook(b_command: str = "echo b-{{ vars.region }} >> ledger.txt", **top: Any) -> None:
    top.setdefault("vars", {"region": {"type": "string"}, "batch": 5})
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt"),
                    {"id": "ok", "action": "approval"},
                    sh("b", b_command),
                    sh("c", "echo c-{{ vars.batch }} >> ledger.txt"),
                ],
            }
        ],
        **top,
    )


def _rows() -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{STATE}?mode=ro", uri=True)
    try:
        return con.execute("SELECT seq, hash, rec FROM journal ORDER BY seq").fetchall()
    finally:
        con.close()


def _paused(runbook, *var: str) -> str:  # type: ignore[no-untyped-def]
    r = runbook("apply", "r.yaml", "--yes", *(var or ("--var", "region=eu")))
    assert r.code == 3, r.output
    run: str = status_json(runbook, "r.yaml")["run"]["id"]
    return run


def _accepts() -> list[dict[str, Any]]:
    return [r for r in journal(".runbook", "t") if r["t"] == "accept"]


def test_an_edited_pending_step_is_refused_with_exit_2_and_nothing_written(runbook) -> None:
    _runbook()
    run = _paused(runbook)
    old = journal(".runbook", "t")[0]["digest"]
    _runbook(b_command="echo B-{{ vars.region }} >> ledger.txt")
    before = _rows()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2
    assert f"r.yaml is not what run {run} started with, and steps not yet done are affected" in (
        r.err
    )
    assert f"runbook: {old} -> sha256:" in r.err
    assert "step b: definition changed" in r.err and "step c" not in r.err
    assert "Nothing was written" in r.err and "--accept-changes" in r.err
    assert "Traceback" not in r.output
    assert _rows() == before and ledger_lines() == ["a"]
    # plan says what the next apply will refuse, and exits 0
    p = runbook("plan", "r.yaml")
    assert p.code == 0 and "b (definition changed)" in p.err and "exits 2 until" in p.err
    assert _rows() == before


def test_accept_changes_records_who_and_both_digests_and_voids_the_approval(runbook) -> None:
    _runbook()
    run = _paused(runbook)
    old = journal(".runbook", "t")[0]["digest"]
    # approved under the old runbook (another process, as an approver would)
    a = run_process("approve", "r.yaml", "ok", "--comment", "looked at b")
    assert a.returncode == 0, a.stderr
    _runbook(b_command="echo B-{{ vars.region }} >> ledger.txt")
    r = runbook("apply", "r.yaml", "--yes", "--accept-changes")
    assert r.code == 3, r.output  # the approval was voided: it waits again
    assert f"accepted by {ME}; approvals voided: ok" in r.output
    (acc,) = _accepts()
    new = acc["to"]
    assert acc["run"] == run and acc["by"] == ME and acc["from"] == old and new != old
    assert acc["steps"] == ["b"] and acc["voided"] == ["ok"] and acc["explicit"] is True
    assert acc["changed_vars"] == [] and acc["vars"] == {"region": "eu", "batch": 5}
    assert status_json(runbook, "r.yaml")["run"]["id"] == run  # the same run goes on
    voids = [
        json.loads(v)
        for rec in journal(".runbook", "t")
        if rec["t"] == "record" and rec["step"] == "ok"
        for v in rec["items"].values()
    ]
    assert voids[0]["digest"] == old and "void" not in voids[0]  # bound to the old digest
    assert voids[1]["void"].startswith("changed since given (runbook ")
    assert voids[1]["was"]["comment"] == "looked at b"
    st = {s["id"]: s for s in status_json(runbook, "r.yaml")["steps"]}
    assert st["ok"]["status"] == "waiting" and "approval void: changed" in st["ok"]["error"]
    assert ledger_lines() == ["a"]
    # a new approval, of the new runbook, lets the run go on with the edit
    assert run_process("approve", "r.yaml", "ok").returncode == 0
    done = runbook("apply", "r.yaml", "--yes")
    assert done.code == 0, done.output
    assert ledger_lines() == ["a", "B-eu", "c-5"]
    assert runbook("audit", "r.yaml").code == 0


def test_other_vars_are_refused_then_accepted_likewise(runbook) -> None:
    _runbook()
    run = _paused(runbook)
    assert run_process("approve", "r.yaml", "ok").returncode == 0  # the run's vars, no --var
    before = _rows()
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=us")
    assert r.code == 2
    assert 'var region: "eu" -> "us"' in r.err and "step b: uses changed vars: region" in r.err
    assert "step c" not in r.err and "runbook: sha256" not in r.err  # c uses batch
    assert _rows() == before and ledger_lines() == ["a"]
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=us", "--accept-changes")
    assert r.code == 3, r.output
    (acc,) = _accepts()
    assert acc["from"] == acc["to"] and acc["changed_vars"] == ["region"]
    assert acc["vars"] == {"region": "us", "batch": 5} and acc["voided"] == ["ok"]
    assert acc["by"] == ME and acc["run"] == run
    assert run_process("approve", "r.yaml", "ok").returncode == 0
    # the run is pinned to the accepted vars now: a resume without --var uses them
    done = runbook("apply", "r.yaml", "--yes")
    assert done.code == 0, done.output
    assert ledger_lines() == ["a", "b-us", "c-5"]


def test_a_resume_without_var_uses_the_runs_vars(runbook) -> None:
    _runbook()
    _paused(runbook, "--var", "region=eu", "--var", "batch=7")
    assert run_process("approve", "r.yaml", "ok").returncode == 0
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["a", "b-eu", "c-7"] and _accepts() == []


def test_a_change_to_succeeded_steps_only_goes_on_and_is_flagged(runbook) -> None:
    _runbook()
    _paused(runbook)
    assert run_process("approve", "r.yaml", "ok").returncode == 0
    write(
        "r.yaml",
        vars={"region": {"type": "string"}, "batch": 5},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo A >> ledger.txt"),
                    {"id": "ok", "action": "approval"},
                    sh("b", "echo b-{{ vars.region }} >> ledger.txt"),
                    sh("c", "echo c-{{ vars.batch }} >> ledger.txt"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    # nothing not yet done is affected: no --accept-changes needed; the approval, bound to
    # the old digest, is voided all the same (SPEC §8: an edit voids it)
    assert r.code == 3, r.output
    assert "no step not yet done is affected; approvals voided: ok" in r.output
    (acc,) = _accepts()
    assert acc["steps"] == [] and acc["explicit"] is False and acc["by"] == ME
    assert run_process("approve", "r.yaml", "ok").returncode == 0
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert ledger_lines() == ["a", "b-eu", "c-5"]  # a is not run again
    st = {s["id"]: s for s in status_json(runbook, "r.yaml")["steps"]}
    assert st["a"]["changed"] is True


def test_an_added_step_is_a_change_to_accept(runbook) -> None:
    _runbook()
    _paused(runbook)
    write(
        "r.yaml",
        vars={"region": {"type": "string"}, "batch": 5},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt"),
                    {"id": "ok", "action": "approval"},
                    sh("b", "echo b-{{ vars.region }} >> ledger.txt"),
                    sh("c", "echo c-{{ vars.batch }} >> ledger.txt"),
                    sh("d", "echo d >> ledger.txt"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "step d: added" in r.err


def test_the_summary_never_shows_a_secret_value(runbook, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PIN_TOKEN", "s3cr3t-pin-value")
    _runbook(
        b_command="echo {{ secrets.tok }} {{ vars.note }} > /dev/null",
        vars={"region": {"type": "string"}, "batch": 5, "note": "x"},
        secrets={"tok": {"env": "PIN_TOKEN"}},
    )
    _paused(runbook)
    changed = ("--var", "region=eu", "--var", "note=s3cr3t-pin-value")
    r = runbook("apply", "r.yaml", "--yes", *changed)
    assert r.code == 2 and 'var note: "x" -> "***"' in r.err
    assert "s3cr3t-pin-value" not in r.output
    r = runbook("apply", "r.yaml", "--yes", *changed, "--accept-changes")
    assert r.code == 3 and "s3cr3t-pin-value" not in r.output
    assert b"s3cr3t-pin-value" not in STATE.read_bytes()


def test_a_rollback_without_var_uses_the_runs_vars(runbook) -> None:
    write(
        "r.yaml",
        vars={"region": {"type": "string"}},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh(
                        "a",
                        "echo a-{{ vars.region }} >> ledger.txt",
                        rollback={
                            "action": "shell",
                            "with": {"command": "echo undo-{{ vars.region }} >> ledger.txt"},
                        },
                    )
                ],
            }
        ],
    )
    assert runbook("apply", "r.yaml", "--yes", "--var", "region=eu").code == 0
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["a-eu", "undo-eu"]


def test_vars_given_on_a_resume_are_the_whole_set(runbook) -> None:
    """A --var on a resume does not keep the run's other vars: given vars are all the vars
    (the runbook's defaults for the rest), and any difference is a change to accept."""
    _runbook()
    _paused(runbook, "--var", "region=eu", "--var", "batch=7")
    before = _rows()
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=eu")
    assert (
        r.code == 2 and "var batch: 7 -> 5" in r.err and "step c: uses changed vars: batch" in r.err
    )
    assert "var region" not in r.err and _rows() == before


def test_the_runs_starter_is_the_os_user_not_user_from_the_environment(tmp_path: Path) -> None:
    """`allow_self: false` compares the approver with the starter: both are the real
    identity, so `USER=someone-else runbook apply` cannot make the starter an approver."""
    _runbook()
    env = {**os.environ, "USER": "someone-else", "LOGNAME": "someone-else"}
    r = run_process("apply", "r.yaml", "--yes", "--var", "region=eu", env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    (start,) = [rec for rec in journal(".runbook", "t") if rec["t"] == "run" and "user" in rec]
    assert start["user"] == ME != "someone-else"


# -- holes left in the first part (issue 14), each test named after its hole ---------------


def _edited_after_pause(runbook) -> None:  # type: ignore[no-untyped-def]
    _runbook()
    _paused(runbook)
    _runbook(b_command="echo B-{{ vars.region }} >> ledger.txt")


def test_hole_a_refused_apply_migrated_an_older_state_schema(runbook) -> None:  # type: ignore[no-untyped-def]
    """An apply refused for changes (exit 2) migrated the schema before it refused."""
    _edited_after_pause(runbook)
    con = sqlite3.connect(STATE)
    con.execute("ALTER TABLE journal DROP COLUMN hash")  # the schema of version 3
    con.execute("UPDATE meta SET value = '3' WHERE key = 'version'")
    con.commit()
    con.close()
    before = STATE.read_bytes()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "Nothing was written" in r.err, r.output
    assert STATE.read_bytes() == before
    con = sqlite3.connect(f"file:{STATE}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == ("3",)
        columns = [row[1] for row in con.execute("PRAGMA table_info(journal)")]
    finally:
        con.close()
    assert "hash" not in columns
    assert not Path(".runbook/t/lock").exists() or Path(".runbook/t/lock").read_bytes() == b""


def test_hole_a_refused_apply_imported_a_legacy_journal(runbook) -> None:  # type: ignore[no-untyped-def]
    """An apply refused for changes (exit 2) imported journal.jsonl into a new state.db."""
    from runbook_engine.state import legacy

    _edited_after_pause(runbook)
    head = {"t": "header", "format": legacy.FORMAT, "runbook": "t", "at": "2026-11-01T00:00:00Z"}
    records = [json.loads(rec) for _seq, _hash, rec in _rows()]
    folder = STATE.parent
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (folder / name).unlink(missing_ok=True)
    old = b"".join(legacy.frame(r) for r in [head, *records])
    (folder / "journal.jsonl").write_bytes(old)
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "Nothing was written" in r.err, r.output
    assert (folder / "journal.jsonl").read_bytes() == old
    assert not (folder / "state.db").exists()
    assert not (folder / "journal.jsonl.imported").exists()
    assert ledger_lines() == ["a"]


def _with_contingency(command: str) -> None:
    write(
        "r.yaml",
        vars={"region": {"type": "string"}, "batch": 5},
        risks=[
            {
                "id": "loss",
                "description": "rows lost",
                "likelihood": "low",
                "impact": "high",
                "mitigation": "backup",
                "owner": "dba",
                "contingencies": ["page"],
            }
        ],
        contingencies=[{"id": "page", "action": "shell", "with": {"command": command}}],
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt"),
                    {"id": "ok", "action": "approval"},
                    sh("b", "echo b >> ledger.txt", risks=["loss"]),
                ],
            }
        ],
    )


def test_hole_an_edited_contingency_did_not_affect_the_steps_that_fire_it(runbook) -> None:  # type: ignore[no-untyped-def]
    _with_contingency("echo paged >> pages.txt")
    _paused(runbook)
    _with_contingency("echo PAGED >> pages.txt")
    before = _rows()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2, r.output
    assert "step b: a contingency it fires changed (page)" in r.err
    assert "step a" not in r.err and "step ok" not in r.err
    assert _rows() == before
    r = runbook("apply", "r.yaml", "--yes", "--accept-changes")
    assert r.code == 3, r.output
    (acc,) = _accepts()
    assert acc["steps"] == ["b"] and "b" in acc["context"]


def test_hole_a_var_reaching_only_a_cohort_source_did_not_affect_its_wave_steps(runbook) -> None:  # type: ignore[no-untyped-def]
    from tests.engine.helpers import write_subs_runbook

    for name in ("legacy.db", "copy.db"):
        con = sqlite3.connect(name)
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
        con.executemany(
            "INSERT INTO customers VALUES (?, ?)", [(i, f"c{i}@example.com") for i in (1, 2, 3)]
        )
        con.commit()
        con.close()
    steps = [
        {"id": "ok", "action": "approval"},
        sh("after", "echo after-{{ wave.id }} >> ledger.txt"),
    ]
    write_subs_runbook("t", steps, [{"id": "all", "size": "rest"}])
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 3, r.output
    before = _rows()
    r = runbook("apply", "r.yaml", "--yes", "--var", "legacy_db=sqlite:///copy.db")
    assert r.code == 2, r.output
    assert "step ok[all]: uses changed vars: legacy_db" in r.err
    assert "step after[all]: uses changed vars: legacy_db" in r.err
    assert _rows() == before and ledger_lines() == []


def test_hole_the_lock_holder_was_the_user_from_the_environment(runbook) -> None:  # type: ignore[no-untyped-def]
    """The lock's holder came from getpass ($USER/$LOGNAME first): it is the OS user."""
    import subprocess
    import time

    from tests.engine.helpers import RUNBOOK

    write("r.yaml", phases=[{"id": "p", "steps": [sh("slow", "sleep 30")]}])
    env = {**os.environ, "USER": "someone-else", "LOGNAME": "someone-else"}
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        holder = None
        deadline = time.monotonic() + 120
        while holder is None and time.monotonic() < deadline:
            r = runbook("lock", "r.yaml", "--format", "json")
            assert r.code == 0, r.output
            holder = json.loads(r.out)["lease"]["holder"]
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert holder is not None, "the apply never took the lease"
    assert holder["user"] == ME != "someone-else"
