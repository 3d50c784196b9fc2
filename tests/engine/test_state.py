"""State: corrupt, foreign and torn journals; bad --var; locking; approvals; resolve."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.helpers import RUNBOOK, journal, ledger_lines, sh, statuses, write

JOURNAL = Path(".runbook/t/journal.jsonl")


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


@pytest.mark.parametrize("command", [["status", "r.yaml"], ["apply", "r.yaml", "--yes"]])
def test_damaged_journal_is_exit_2_and_left_untouched(runbook, command: list[str]) -> None:
    _applied(runbook)
    data = bytearray(JOURNAL.read_bytes())
    middle = data.index(b'"status":"running"')
    data[middle + 11] ^= 0x20  # flip a bit inside the 2nd record
    JOURNAL.write_bytes(bytes(data))
    before = _digest(JOURNAL)
    r = runbook(*command)
    assert r.code == 2
    assert "damaged at line 2" in r.err and "left untouched" in r.err
    assert "Traceback" not in r.output
    assert _digest(JOURNAL) == before


def test_state_of_another_runbook_is_exit_2(runbook) -> None:
    _applied(runbook)
    other = JOURNAL.read_bytes().replace(b'"runbook":"t"', b'"runbook":"x"', 1)
    # keep the frame valid: recompute the first record's CRC
    first, rest = other.split(b"\n", 1)
    import zlib

    body = first[9:]
    JOURNAL.write_bytes(b"%08x %s\n" % (zlib.crc32(body), body) + rest)
    before = _digest(JOURNAL)
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2 and "belongs to another runbook ('x', not 't')" in r.err
    assert _digest(JOURNAL) == before


def test_foreign_file_is_not_a_journal(runbook) -> None:
    _applied(runbook)
    JOURNAL.write_text("hello: world\n")
    r = runbook("status", "r.yaml")
    assert r.code == 2 and "not a runbook state journal" in r.err
    assert JOURNAL.read_text() == "hello: world\n"


def test_torn_last_record_is_dropped_with_a_notice_and_cut_on_next_write(runbook) -> None:
    _applied(runbook)
    JOURNAL.write_bytes(JOURNAL.read_bytes() + b'1234abcd {"t":"step","id":"a","sta')
    r = runbook("status", "r.yaml", "--format", "json")
    assert r.code == 0
    assert "dropped a torn last record" in json.loads(r.out)["notice"]
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0
    assert "dropped a torn last record" in r.out
    journal(".runbook", "t")  # every line parses again: the torn tail was cut


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
        for _ in range(100):
            if Path("started").exists():
                break
            time.sleep(0.05)
        second = subprocess.run(
            [RUNBOOK, "apply", "r.yaml", "--yes"], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 4
        assert f"pid {first.pid}" in second.stderr
        assert socket.gethostname() in second.stderr and "since 20" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the holder died: the next apply takes the lock over with a notice
    third = subprocess.run(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": os.environ["PATH"]},
        input="",
    )
    assert "took over a stale lock" in third.stdout
    assert third.returncode == 3  # `slow` was running when killed: unknown, so paused
    assert "resolve" in third.stdout


def test_lock_from_another_host_needs_unlock_force(runbook) -> None:
    _applied(runbook)
    lock = Path(".runbook/t/lock")
    lock.write_text(
        json.dumps(
            {
                "host": "far-away",
                "pid": 1,
                "user": "ops",
                "started_at": "2026-11-25T10:00:00Z",
                "command": "runbook apply",
            }
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 4 and "ops@far-away pid 1" in r.err and "unlock" in r.err
    assert runbook("unlock", "r.yaml").code == 2
    r = runbook("unlock", "r.yaml", "--force")
    assert r.code == 0 and "held by ops@far-away pid 1" in r.out
    assert runbook("apply", "r.yaml", "--yes").code == 0


def test_approval_pauses_checks_approvers_and_goes_on(runbook) -> None:
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
                        "with": {
                            "message": "checked the contract?",
                            "approvers": ["maria", "joao"],
                        },
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
    assert "runbook approve r.yaml gate --by NAME" in r.out
    assert ledger_lines() == ["free"]  # independent work went on
    r = runbook("approve", "r.yaml", "gate", "--by", "eve")
    assert r.code == 2 and "'eve' may not approve gate" in r.err
    r = runbook("approve", "r.yaml", "gate", "--by", "maria", "--comment", "clause 7 ok")
    assert r.code == 0
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["free", "after"]
    gate = next(
        s
        for s in json.loads(runbook("status", "r.yaml", "--format", "json").out)["steps"]
        if s["id"] == "gate"
    )
    assert gate["outputs"]["approved_by"] == "maria"
    assert gate["outputs"]["comment"] == "clause 7 ok"
    approvals = [x for x in journal(".runbook", "t") if x["t"] == "approval"]
    assert approvals[0]["by"] == "maria"


def test_resolve_only_takes_unknown_steps(runbook) -> None:
    _applied(runbook)
    r = runbook("resolve", "r.yaml", "a", "--as", "pending")
    assert r.code == 2 and "a is succeeded, not unknown" in r.err


def test_statuses_after_success(runbook) -> None:
    _applied(runbook)
    assert statuses(runbook, "r.yaml") == {"a": "succeeded", "b": "succeeded"}
    assert ledger_lines() == ["a", "b"]
