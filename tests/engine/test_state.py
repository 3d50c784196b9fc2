"""State: damaged, foreign, newer and earlier-version states, full disks; bad --var; locking; approvals; resolve."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.engine.helpers import RUNBOOK, journal, ledger_lines, sh, statuses, wait_until, write

STATE = Path(".runbook/t/state.db")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _applied(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {"id": "p", "steps": [sh("a", "echo a >> ledger.txt"), sh("b", "echo b >> ledger.txt")]}
        ],
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0


def _sql(statement: str, *params: object) -> None:
    con = sqlite3.connect(STATE, isolation_level=None)
    try:
        con.execute(statement, params)
    finally:
        con.close()


@pytest.mark.parametrize("command", [["status", "r.yaml"], ["apply", "r.yaml", "--yes"]])
def test_damaged_journal_record_is_exit_2_and_left_untouched(runbook, command: list[str]) -> None:
    _applied(runbook)
    _sql("UPDATE journal SET rec = substr(rec, 1, 20) WHERE seq = 2")
    before = _digest(STATE)
    r = runbook(*command)
    assert r.code == 2
    assert "journal record 2 is damaged" in r.err and "left untouched" in r.err
    assert "Traceback" not in r.output
    assert _digest(STATE) == before and ledger_lines() == ["a", "b"]


@pytest.mark.parametrize("command", [["status", "r.yaml"], ["apply", "r.yaml", "--yes"]])
def test_record_with_a_valid_frame_and_an_invalid_status_is_exit_2(runbook, command) -> None:
    """Issue 10, item 15: it was a traceback (exit 1)."""
    _applied(runbook)
    _sql("UPDATE journal SET rec = replace(rec, '\"succeeded\"', '\"succeedeX\"') WHERE seq = 3")
    before = _digest(STATE)
    r = runbook(*command)
    assert r.code == 2, r.output
    assert "journal record 3 is not a valid state record" in r.err
    assert "`status` cannot be 'succeedeX'" in r.err and "Traceback" not in r.output
    assert _digest(STATE) == before


def test_damaged_database_file_is_exit_2_and_left_untouched(runbook) -> None:
    _applied(runbook)
    data = bytearray(STATE.read_bytes())
    for i in range(4096 + 100, len(data), 97):  # every page after the header, trampled
        data[i] ^= 0x5A
    STATE.write_bytes(bytes(data))
    before = _digest(STATE)
    for command in (["status", "r.yaml"], ["apply", "r.yaml", "--yes"], ["report", "r.yaml"]):
        r = runbook(*command)
        assert r.code == 2, (command, r.output)
        assert "the state database cannot be read" in r.err or "not a runbook state" in r.err
        assert "Traceback" not in r.output
    assert _digest(STATE) == before and ledger_lines() == ["a", "b"]


def test_state_of_another_runbook_is_exit_2(runbook) -> None:
    _applied(runbook)
    _sql("UPDATE meta SET value = 'x' WHERE key = 'runbook'")
    before = _digest(STATE)
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "belongs to another runbook ('x', not 't')" in r.err
    assert _digest(STATE) == before


def test_state_of_a_newer_program_is_exit_2(runbook) -> None:
    _applied(runbook)
    _sql("UPDATE meta SET value = '99' WHERE key = 'version'")
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "schema 99, this program knows 5" in r.err


def test_foreign_file_is_not_a_state(runbook) -> None:
    _applied(runbook)
    for f in STATE.parent.glob("state.db*"):
        f.unlink()
    STATE.write_text("hello: world\n")
    r = runbook("status", "r.yaml")
    assert r.code == 2 and "not a runbook state database" in r.err
    assert STATE.read_text() == "hello: world\n"


def test_state_files_are_private_and_their_folders_synced(runbook) -> None:
    _applied(runbook)
    assert STATE.stat().st_mode & 0o777 == 0o600
    assert STATE.parent.stat().st_mode & 0o777 == 0o700
    assert Path(".runbook").stat().st_mode & 0o777 == 0o700
    assert not list(STATE.parent.glob(".state.db.new-*"))  # built aside, renamed into place


def _legacy_journal(records: list[dict]) -> bytes:
    from runbook_engine.state import legacy

    head = {"t": "header", "format": legacy.FORMAT, "runbook": "t", "at": "2026-11-01T00:00:00Z"}
    return b"".join(legacy.frame(r) for r in [head, *records])


def test_journal_of_an_earlier_version_is_read_then_imported_once(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {"id": "p", "steps": [sh("a", "echo a >> ledger.txt"), sh("b", "echo b >> ledger.txt")]}
        ],
    )
    at = "2026-11-01T00:00:01.000Z"
    old = [
        {"t": "run", "run": "r1", "status": "running", "at": at},
        {"t": "step", "id": "a", "status": "running", "attempt": 1, "run": "r1", "at": at},
        {"t": "step", "id": "a", "status": "succeeded", "attempt": 1, "run": "r1", "at": at},
        {"t": "run", "run": "r1", "status": "failed", "at": at},
    ]
    folder = Path(".runbook/t")
    folder.mkdir(parents=True)
    (folder / "journal.jsonl").write_bytes(_legacy_journal(old) + b'1234abcd {"t":"st')
    r = runbook("status", "r.yaml", "--format", "json")
    assert r.code == 0, r.output
    doc = json.loads(r.out)
    assert "dropped a torn last record" in doc["notice"]
    assert {s["id"]: s["status"] for s in doc["steps"]} == {"a": "succeeded", "b": "pending"}
    assert not STATE.exists()  # a reader never converts
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert "imported 4 records of" in r.out
    assert ledger_lines() == ["b"]  # `a` succeeded before the upgrade: not run again
    assert not (folder / "journal.jsonl").exists() and (folder / "journal.jsonl.imported").exists()
    kinds = [rec["t"] for rec in journal(".runbook", "t")]
    assert kinds[:4] == ["run", "step", "step", "run"]


def test_a_full_disk_stops_the_run_and_leaves_the_state_readable(runbook, tmp_path) -> None:
    """Issue 10, item 13: a failed write used to leave a partial record that made the state
    unreadable. Now a failed commit writes nothing, nothing more starts, and the state is the
    last checkpoint: a later apply resumes (the step in flight is `unknown`, never re-run)."""
    import resource

    steps = [
        sh(f"s{i}", f"echo s{i} >> ledger.txt; head -c 3000 /dev/zero > pad{i}") for i in range(40)
    ]
    write("r.yaml", phases=[{"id": "p", "steps": steps}])
    assert runbook("apply", "r.yaml", "--yes", "--only", "s0").code == 0  # the state exists
    size = STATE.stat().st_size

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = size + 40_000
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = subprocess.run(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,
        check=False,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "cannot write the state" in p.stdout + p.stderr and "Traceback" not in p.stderr
    done = ledger_lines()
    assert 1 < len(done) < 40
    st = statuses(runbook, "r.yaml")  # readable
    succeeded = [s for s, v in st.items() if v == "succeeded"]
    assert set(succeeded) <= set(done)
    r = runbook("apply", "r.yaml", "--yes")
    unknown = [s for s, v in statuses(runbook, "r.yaml").items() if v == "unknown"]
    if r.code == 3:  # the step whose success could not be written: the operator decides
        assert len(unknown) == 1 and unknown[0] in done
        assert runbook("resolve", "r.yaml", unknown[0], "--as", "succeeded").code == 0
        r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert sorted(ledger_lines()) == sorted(f"s{i}" for i in range(40))  # each exactly once


def test_bad_vars_are_exit_2_before_anything_runs(runbook) -> None:
    write(
        "r.yaml",
        vars={"n": 3, "region": {"type": "string"}, "flag": False},
        phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt")]}],
    )
    r = runbook(
        "apply", "r.yaml", "--yes", "--var", "n=three", "--var", "nope=1", "--var", "flag=maybe"
    )
    assert r.code == 2
    assert "--var n: expected an integer, got 'three'" in r.err
    assert "--var nope: no such variable" in r.err
    assert "--var flag: expected true or false" in r.err
    assert "variable 'region' has no default" in r.err
    assert not Path(".runbook").exists() and not Path("ledger.txt").exists()
    Path("vars.yaml").write_text("n: [1]\n")
    r = runbook("apply", "r.yaml", "--yes", "--var-file", "vars.yaml", "--var", "region=eu")
    assert r.code == 2 and "--var-file vars.yaml: n: expected integer, got list" in r.err


def test_missing_secret_is_exit_2_before_anything_runs(runbook, monkeypatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    write(
        "r.yaml",
        secrets={"tok": {"env": "NOPE_TOKEN"}},
        phases=[{"id": "p", "steps": [sh("a", "echo {{ secrets.tok }} >> ledger.txt")]}],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "environment variable NOPE_TOKEN is not set" in r.err
    assert not Path(".runbook").exists()


def test_second_apply_gets_exit_4_naming_the_holder() -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("slow", "touch started; sleep 30")]}])
    first = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(Path("started").exists, "step `slow` starts", first)
        second = subprocess.run(
            [RUNBOOK, "apply", "r.yaml", "--yes"], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 4
        assert f"pid {first.pid}" in second.stderr
        assert socket.gethostname() in second.stderr and "since 20" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the holder died: the next apply takes the lease over at once, with a notice
    third = subprocess.run(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": os.environ["PATH"]},
        input="",
    )
    assert f"took over the lease of {pwd.getpwuid(os.getuid()).pw_name}@" in third.stdout
    assert f"pid {first.pid}" in third.stdout and "its process is gone" in third.stdout
    assert third.returncode == 3  # `slow` was running when killed: unknown, so paused
    assert "resolve" in third.stdout


def test_lock_from_another_host_needs_unlock_force(runbook) -> None:
    """A holder on another host (its flock cannot be seen from here) with a live lease."""
    _applied(runbook)
    _sql(
        "UPDATE lease SET epoch = 5, host = 'far-away', pid = 1, user = 'ops', started = "
        "'2026-11-25T10:00:00.000Z', command = 'runbook apply', released = NULL"
    )
    Path(".runbook/t/lease-5").touch()  # renewed just now
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 4 and "ops@far-away pid 1" in r.err and "runbook lock FILE" in r.err
    assert runbook("unlock", "r.yaml").code == 2
    r = runbook("unlock", "r.yaml", "--force")
    assert r.code == 0 and "held by ops@far-away pid 1" in r.out
    assert runbook("apply", "r.yaml", "--yes").code == 0


def test_approval_pauses_checks_approvers_and_goes_on(runbook) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name  # the real identity `approve` records
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    {
                        "id": "gate",
                        "action": "approval",
                        "with": {"message": "checked the contract?", "approvers": ["maria", me]},
                    },
                    sh("after", "echo after >> ledger.txt", needs=["gate"]),
                    sh("free", "echo free >> ledger.txt"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 3
    assert "gate waits: checked the contract?" in r.out
    assert "runbook approve r.yaml gate [--comment TEXT]" in r.out
    assert ledger_lines() == ["free"]  # independent work went on
    r = runbook("approve", "r.yaml", "gate", "--by", "maria", "--comment", "clause 7 ok")
    assert r.code == 0, r.output
    assert f"gate approved by {me} on behalf of maria" in r.out
    r = runbook("approve", "r.yaml", "gate", "--by", "maria")  # a second one counts nothing
    assert r.code == 2 and f"already approved by {me}" in r.err
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["free", "after"]
    gate = next(
        s
        for s in json.loads(runbook("status", "r.yaml", "--format", "json").out)["steps"]
        if s["id"] == "gate"
    )
    assert gate["outputs"]["approved_by"] == me
    assert gate["outputs"]["on_behalf_of"] == "maria"
    assert gate["outputs"]["comment"] == "clause 7 ok"
    approvals = [x for x in journal(".runbook", "t") if x["t"] == "approval"]
    assert [(a["by"], a["on_behalf_of"]) for a in approvals] == [(me, "maria")]


def test_resolve_only_takes_unknown_steps(runbook) -> None:
    _applied(runbook)
    r = runbook("resolve", "r.yaml", "a", "--as", "pending")
    assert r.code == 2 and "a is succeeded, not unknown" in r.err


def test_statuses_after_success(runbook) -> None:
    _applied(runbook)
    assert statuses(runbook, "r.yaml") == {"a": "succeeded", "b": "succeeded"}
    assert ledger_lines() == ["a", "b"]
