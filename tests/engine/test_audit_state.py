"""The holes the audit of issue 10 found in decisions and statuses, each closed and named here:
`--by` replaced the real identity (item 5), a rollback killed mid-way was not said lost and
left its processes running (item 11), a journal row of the wrong shape gave a traceback (item
12), and the smaller ones of item 13 (mentions in the report, a DSN as --state-dir, the
rollback advice, the contract's crash-log path)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.engine.helpers import (
    RUNBOOK,
    journal,
    runbook_yaml,
    sh,
    status_json,
    wait_until,
    write,
)

ME = pwd.getpwuid(os.geteuid()).pw_name  # the real identity: the OS user of the process
STATE = Path(".runbook/t/state.db")


def _approval(approvers: list[str] | None = None) -> None:
    gate: dict[str, Any] = {"id": "gate", "action": "approval", "with": {"message": "ok?"}}
    if approvers is not None:
        gate["with"]["approvers"] = approvers
    write("r.yaml", phases=[{"id": "p", "steps": [gate, sh("after", "touch after.done")]}])


def _approvals() -> list[dict[str, Any]]:
    return [r for r in journal(".runbook", "t") if r["t"] == "approval"]


# -- item 5 -------------------------------------------------------------------------------------


def test_by_never_replaces_the_real_identity_nor_bypasses_approvers(runbook: Any) -> None:
    """As root, `approve ap2.yaml gate` was refused but `--by alice` accepted, and the journal
    recorded only `"by": "alice"`."""
    _approval(["alice"])
    assert runbook("apply", "r.yaml", "--yes").code == 3
    r = runbook("approve", "r.yaml", "gate", "--by", "alice")
    assert r.code == 2 and f"'{ME}' may not approve gate: its approvers are alice" in r.err
    assert _approvals() == [] and not Path("after.done").exists()
    assert runbook("apply", "r.yaml", "--yes").code == 3  # still waiting
    # approvers list real identities; --by is recorded beside the identity, never instead
    import shutil

    shutil.rmtree(".runbook")
    _approval([ME])
    assert runbook("apply", "r.yaml", "--yes").code == 3
    r = runbook("approve", "r.yaml", "gate", "--by", "alice", "--comment", "checked")
    assert r.code == 0 and f"gate approved by {ME} on behalf of alice" in r.out, r.output
    (rec,) = _approvals()
    assert (rec["by"], rec["on_behalf_of"], rec["comment"]) == (ME, "alice", "checked")
    assert runbook("apply", "r.yaml", "--yes").code == 0 and Path("after.done").exists()


def test_an_approval_counts_once_and_only_on_a_waiting_step(runbook: Any) -> None:
    _approval()
    r = runbook("approve", "r.yaml", "gate")
    assert r.code == 2 and "no run of t is in progress" in r.err
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert runbook("approve", "r.yaml", "gate").code == 0
    r = runbook("approve", "r.yaml", "gate", "--by", "bob")
    assert r.code == 2 and f"gate was already approved by {ME}" in r.err
    assert len(_approvals()) == 1
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("approve", "r.yaml", "gate")
    assert r.code == 2 and "no run of t is in progress" in r.err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--by", "alice\nrun 1: succeeded"),
        ("--by", "\x1b[2J\x1b[31malice"),
        ("--comment", "ok\r\nforged line"),
        ("--comment", "fine \x1b]0;title\x07"),
        ("--comment", "rtl \u202e txet"),
    ],
)
def test_by_and_comment_with_a_line_break_or_escape_are_refused(
    runbook: Any, option: str, value: str
) -> None:
    _approval()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    before = hashlib.sha256(STATE.read_bytes()).hexdigest()
    r = runbook("approve", "r.yaml", "gate", option, value)
    assert r.code == 2 and f"{option}: one line of printable text, please" in r.err
    assert "\x1b" not in r.output and hashlib.sha256(STATE.read_bytes()).hexdigest() == before


def test_mentions_and_html_in_a_comment_are_inert_in_the_report(runbook: Any) -> None:
    _approval()
    assert runbook("apply", "r.yaml", "--yes").code == 3
    comment = "@everyone <script>alert(1)</script>"
    assert runbook("approve", "r.yaml", "gate", "--comment", comment).code == 0
    assert runbook("apply", "r.yaml", "--yes").code == 0
    md = runbook("report", "r.yaml").out
    assert "@everyone" not in md and "<script>" not in md
    assert "@\u200beveryone &lt;script&gt;" in md
    assert runbook("report", "r.yaml", "--format", "html", "--output", "r.html").code == 0
    page = Path("r.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


def test_resolve_records_the_real_identity_and_by_as_on_behalf_of(runbook: Any) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0
    con = sqlite3.connect(STATE, isolation_level=None)
    try:  # as a crash leaves it: the step unknown
        rec = {"t": "step", "id": "a", "status": "unknown", "reason": "apply", "run": "x"}
        con.execute(
            "UPDATE journal SET rec = ? WHERE seq = (SELECT max(seq) FROM journal)",
            (json.dumps({**rec, "at": "2026-01-01T00:00:00.000Z"}),),
        )
    finally:
        con.close()
    r = runbook("resolve", "r.yaml", "a", "--as", "succeeded", "--by", "maria")
    assert r.code == 0, r.output
    last = journal(".runbook", "t")[-1]
    assert (last["by"], last["on_behalf_of"]) == (ME, "maria")
    assert last["reason"] == f"resolved by {ME} on behalf of maria"


# -- item 11 ------------------------------------------------------------------------------------

KILLED = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: ktest}
phases:
  - id: p
    steps:
      - id: a
        action: shell
        with: {command: "touch a.done"}
        rollback: {action: shell, with: {command: "sleep 30.71; rm -f a.done"}}
      - id: b
        action: shell
        with: {command: "sleep 10.171; touch b.done"}
        rollback: {action: shell, with: {command: "rm -f b.done"}}
"""


def _pids(word: str) -> list[int]:
    """Processes of this test's folder whose command line holds ``word``."""
    here = str(Path.cwd())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if word in cmd and cwd == here:
            found.append(int(entry))
    return found


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [RUNBOOK, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line:
            break
    raise AssertionError(f"never saw {text!r}")


def test_kill_9_of_an_apply_leaves_no_command_running_past_the_next_apply(
    runbook: Any,
) -> None:
    """After kill -9 of an apply, the step's shell process group (`sleep …; touch b.done`)
    kept running as an orphan and touched b.done later."""
    Path("k.yaml").write_text(KILLED)
    proc = _start("apply", "k.yaml", "--yes")
    try:
        _wait_for(proc, "▶ b started")
        wait_until(lambda: len(_pids("10.171")) == 2, "b's shell and its sleep run", proc)
        touch_at = time.monotonic() + 10.171  # when the orphan would touch b.done
        proc.kill()
        proc.wait(timeout=60)
        status = runbook("status", "k.yaml")
        assert "running (holder lost since" in status.out, status.out
        r = runbook("apply", "k.yaml", "--yes")
        assert "stopped 2 process(es) the lost run left running: b (pid" in r.out, r.output
        assert r.code == 3 and "b is unknown (it was running" in r.out
        assert _pids("10.171") == []
        time.sleep(max(0.0, touch_at + 0.5 - time.monotonic()))  # past that moment
        assert not Path("b.done").exists()
    finally:
        for pid in _pids("10.171"):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_during_a_rollback_is_said_lost_and_resolved_as_a_rollback(runbook: Any) -> None:
    """After kill -9 during a `rollback`, status showed a step `rolling_back` with the holder
    dead but `lost_since: null`, the next apply advised `resolve … --as
    succeeded|failed|pending` (where `--as failed` is refused), and the rollback's command ran on."""
    Path("k.yaml").write_text(KILLED.replace("sleep 10.171; ", ""))
    assert runbook("apply", "k.yaml", "--yes").code == 0
    proc = _start("rollback", "k.yaml", "--yes")
    try:
        _wait_for(proc, "↶ a rolling back")
        wait_until(lambda: len(_pids("30.71")) == 2, "a's rollback and its sleep run", proc)
        proc.kill()
        proc.wait(timeout=60)
        doc = status_json(runbook, "k.yaml")
        holder = doc["run"]["holder"]
        assert holder["alive"] is False and holder["lost_since"] is not None
        assert holder["resume_with"] == "rollback"
        assert "holder lost since" in runbook("status", "k.yaml").out
        assert _pids("30.71")
        r = runbook("apply", "k.yaml", "--yes")
        assert "stopped 2 process(es) the lost run left running: a#rollback" in r.out, r.output
        assert r.code == 3 and "--as rolled_back|rollback_failed|succeeded" in r.out
        assert "--as succeeded|failed|pending" not in r.out
        r = runbook("resolve", "k.yaml", "a", "--as", "rolled_back")
        assert r.code == 0, r.output
        a = next(s for s in status_json(runbook, "k.yaml")["steps"] if s["id"] == "a")
        assert a["status"] == "rolled_back" and a["error"] is None  # no stale crash error
        assert _pids("30.71") == []
    finally:
        for pid in _pids("30.71"):
            os.kill(pid, signal.SIGKILL)


# -- item 12 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("at", 12345, "`at` must be an ISO 8601 time, not 12345"),
        ("attempt", "x", "`attempt` cannot be 'x'"),
        ("outputs", [1, 2], "`outputs` cannot be [1, 2]"),
        ("duration", "fast", "`duration` cannot be 'fast'"),
        ("error", {"x": 1}, "`error` cannot be {'x': 1}"),
    ],
)
def test_a_journal_row_of_the_wrong_shape_is_exit_2_naming_it(
    runbook: Any, field: str, value: object, says: str
) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true"), sh("b", "true")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0
    con = sqlite3.connect(STATE, isolation_level=None)
    try:
        (seq, raw) = con.execute(
            "SELECT seq, rec FROM journal WHERE rec LIKE '%\"succeeded\"%' ORDER BY seq LIMIT 1"
        ).fetchone()
        rec = json.loads(raw)
        rec[field] = value
        con.execute("UPDATE journal SET rec = ? WHERE seq = ?", (json.dumps(rec), seq))
    finally:
        con.close()
    before = hashlib.sha256(STATE.read_bytes()).hexdigest()
    for command in (("status", "r.yaml"), ("plan", "r.yaml"), ("apply", "r.yaml", "--yes")):
        r = runbook(*command)
        assert r.code == 2, (command, r.output)
        assert f"journal record {seq} is not a valid state record" in r.err and says in r.err
        assert "Traceback" not in r.output and "internal error" not in r.output
    assert hashlib.sha256(STATE.read_bytes()).hexdigest() == before


# -- item 13 ------------------------------------------------------------------------------------


def test_mentions_in_an_error_are_inert_in_the_report_markdown(runbook: Any) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [sh("a", "echo '@everyone <b>x</b>' >&2; exit 3", on_failure="continue")],
            }
        ],
    )
    assert runbook("apply", "r.yaml", "--yes").code == 1
    md = runbook("report", "r.yaml").out
    outside = md.replace("````", "```")
    assert "@everyone" not in outside.split("```")[0]  # the summary, tables: no mention
    assert "@\u200beveryone" in md


@pytest.mark.parametrize(
    "value", ["postgresql:/u:pw-9f@h", "u:hunter2-9f@host:5432/db", "redis://:pw-9f@h/0"]
)
def test_a_state_dir_that_is_a_dsn_with_a_password_is_exit_2_and_makes_no_folder(
    runbook: Any, value: str
) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    r = runbook("--state-dir", value, "apply", "r.yaml", "--yes")
    assert r.code == 2 and "give a directory" in r.err, r.output
    assert "pw-9f" not in r.err and "hunter2" not in r.err and ":***@" in r.err
    assert list(Path.cwd().iterdir()) == [Path.cwd() / "r.yaml"]


def test_a_rollback_that_left_steps_in_place_does_not_say_resume(runbook: Any) -> None:
    Path("r.yaml").write_text(
        runbook_yaml(
            phases=[
                {
                    "id": "p",
                    "steps": [
                        {
                            "id": "a",
                            "action": "shell",
                            "with": {"command": "touch a.done"},
                            "rollback": {"action": "shell", "with": {"command": "rm -f a.done"}},
                        },
                        {"id": "b", "action": "shell", "with": {"command": "touch b.done"}},
                    ],
                }
            ]
        )
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 1 and "left in place (no rollback declared" in r.out, r.output
    assert "resume with: runbook rollback" not in r.out
    assert "nothing more to roll back: undo those steps by hand" in r.out


def test_the_contract_names_where_crash_logs_really_go() -> None:
    text = (ROOT / "docs" / "contract.md").read_text()
    assert "runbook-logs" not in text and "$TMPDIR" not in text
    assert "STATE_DIR/.logs/" in text
