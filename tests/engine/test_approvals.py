"""Real approvals (SPEC §8, §11, issue 14): `required` distinct identities, `approvers`,
`allow_self`, `expires`, bound to the run's runbook and vars; refusals exit 2 and journal
nothing; `approve` and `resolve` never take the run's lock.

The second identity is a real OS user made here with `useradd`, and `approve` runs as that
user (its uid, by `setpriv`; the one capability it keeps, reading folders it may not list,
only lets it reach this interpreter under /root). The tests run as root: root starts the run.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import RUNBOOK, journal, ledger_lines, run_process, sh, status_json, write

ME = pwd.getpwuid(os.getuid()).pw_name
OTHER = "rbapprover2"
STATE = Path(".runbook/t")


@pytest.fixture(scope="session")
def other_user() -> str:
    """A second OS user (made once, kept: the next session finds it)."""
    assert os.getuid() == 0, "these tests run as root: they make a second OS user"
    try:
        pwd.getpwnam(OTHER)
    except KeyError:
        got = subprocess.run(
            ["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", OTHER],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # 9: made meanwhile by another test process
        assert got.returncode in (0, 9), got.stderr
    return OTHER


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder the second user can reach (pytest's own lies under a 0700 folder)."""
    work = Path(tempfile.mkdtemp(prefix="rb-approvals-", dir="/tmp"))
    work.chmod(0o755)
    monkeypatch.chdir(work)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def as_other(*args: str, user: str = OTHER) -> subprocess.CompletedProcess[str]:
    """`runbook ARGS` as ``user``: the state is handed to that user first (root keeps its
    access), as a team member's copy would be theirs."""
    entry = pwd.getpwnam(user)
    for path in [Path(".runbook"), *Path(".runbook").rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    home = Path(tempfile.mkdtemp(prefix="rb-home-", dir="/tmp"))
    os.chown(home, entry.pw_uid, entry.pw_gid)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "NO_COLOR": "1", "LANG": "C.UTF-8"}
    try:
        return subprocess.run(
            [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--clear-groups",
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
                RUNBOOK,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _runbook(approval: dict[str, Any] | None = None, b: str = "echo b >> ledger.txt") -> None:
    step = {"id": "ok", "action": "approval", "with": approval or {}}
    write(
        "r.yaml",
        vars={"region": "eu"},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt"),
                    step,
                    sh("b", b),
                ],
            }
        ],
    )


def _rows() -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{STATE / 'state.db'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT seq, hash, rec FROM journal ORDER BY seq").fetchall()
    finally:
        con.close()


def _approvals() -> list[dict[str, Any]]:
    return [r for r in journal(".runbook", "t") if r["t"] == "approval"]


def _step(runbook: Any, sid: str) -> dict[str, Any]:
    doc = status_json(runbook, "r.yaml")
    return next(s for s in doc["steps"] if s["id"] == sid)


def _paused(runbook: Any) -> None:
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 3, r.output
    assert _step(runbook, "ok")["status"] == "waiting"


def _refused(result: Any, before: list[tuple[Any, ...]], *words: str) -> None:
    """Exit 2, the message, no traceback, and not one journal row more."""
    code = result.code if hasattr(result, "code") else result.returncode
    err = result.err if hasattr(result, "err") else result.stderr
    assert code == 2, (code, err)
    for w in words:
        assert w in err, err
    assert "Traceback" not in err
    assert _rows() == before


def test_required_two_waits_for_two_identities(runbook: Any, other_user: str, shared: Path) -> None:
    _runbook({"required": 2, "message": "two people sign off"})
    _paused(runbook)
    r = runbook("approve", "r.yaml", "ok", "--comment", "root looked")
    assert r.code == 0, r.output
    assert f"ok approved by {ME}" in r.out and "(1 of 2 approvals); it waits for 1 more" in r.out
    st = _step(runbook, "ok")
    assert st["status"] == "waiting" and st["approvals"]["approved_by"] == [ME]
    assert "two people sign off (1 of 2 approvals (root))" in st["error"]
    text = runbook("status", "r.yaml")
    assert "1 of 2 approvals" in text.out
    # one is not enough: the run still waits
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert ledger_lines() == ["a"]
    got = as_other("approve", "r.yaml", "ok", "--comment", "second pair of eyes")
    assert got.returncode == 0, got.stderr
    assert f"ok approved by {other_user}" in got.stdout and "(2 of 2 approvals)" in got.stdout
    rows = _approvals()
    assert [(a["by"], a["count"], a["required"]) for a in rows] == [
        (ME, 1, 2),
        (other_user, 2, 2),
    ]
    done = runbook("apply", "r.yaml", "--yes")
    assert done.code == 0, done.output
    assert ledger_lines() == ["a", "b"]
    outputs = _step(runbook, "ok")["outputs"]
    assert outputs["approved_by"] == f"{ME}, {other_user}"
    assert [a["by"] for a in outputs["approvals"]] == [ME, other_user]
    assert runbook("audit", "r.yaml").code == 0  # both processes wrote one chain


def test_the_starter_is_refused_without_allow_self(
    runbook: Any, other_user: str, shared: Path
) -> None:
    _runbook({"allow_self": False})
    _paused(runbook)
    before = _rows()
    r = runbook("approve", "r.yaml", "ok", "--by", "someone-else")
    _refused(r, before, f"'{ME}' started run", "may not approve ok (allow_self is false)")
    # another identity may
    got = as_other("approve", "r.yaml", "ok")
    assert got.returncode == 0, got.stderr
    assert [a["by"] for a in _approvals()] == [other_user]


def test_allow_self_defaults_to_true_on_a_state_directory(runbook: Any) -> None:
    _runbook({})
    _paused(runbook)
    r = runbook("approve", "r.yaml", "ok")
    assert r.code == 0, r.output
    assert [a["by"] for a in _approvals()] == [ME]


def test_a_name_not_in_approvers_is_refused(runbook: Any, other_user: str, shared: Path) -> None:
    _runbook({"approvers": [ME]})
    _paused(runbook)
    before = _rows()
    got = as_other("approve", "r.yaml", "ok", "--by", ME)
    _refused(got, before, f"'{other_user}' may not approve ok: its approvers are {ME}")
    assert f"--by {ME} only says on whose behalf" in got.stderr
    assert _step(runbook, "ok")["status"] == "waiting"


def test_a_second_approval_by_the_same_identity_is_refused(runbook: Any) -> None:
    _runbook({"required": 2})
    _paused(runbook)
    assert runbook("approve", "r.yaml", "ok").code == 0
    before = _rows()
    r = runbook("approve", "r.yaml", "ok", "--by", "a colleague")
    _refused(r, before, f"ok was already approved by {ME} at", "(1 of 2 approvals (root))")
    assert len(_approvals()) == 1


def test_an_expired_approval_does_not_count(runbook: Any) -> None:
    _runbook({"expires": "1s"})
    _paused(runbook)
    assert runbook("approve", "r.yaml", "ok").code == 0
    time.sleep(3)  # well past 1s, whatever the load
    st = _step(runbook, "ok")
    assert st["approvals"]["approved"] == 0
    assert "approval void: expired (given at" in st["error"] and "expires: 1s" in st["error"]
    assert "approval void: expired" in runbook("status", "r.yaml").out
    p = runbook("plan", "r.yaml")
    assert p.code == 0 and "approval void: expired" in p.out
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 3, r.output  # not counted: it waits again
    assert ledger_lines() == ["a"]
    # the same identity may approve again, and the fresh approval counts
    assert runbook("approve", "r.yaml", "ok").code == 0
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert ledger_lines() == ["a", "b"]


def test_an_edit_voids_the_approval_in_plan_and_status(runbook: Any) -> None:
    _runbook({"message": "ship it"})
    _paused(runbook)
    assert runbook("approve", "r.yaml", "ok").code == 0
    _runbook({"message": "ship it now"})  # the approval step itself edited
    st = _step(runbook, "ok")
    assert "approval void: the step was edited since it was given" in st["error"]
    assert "approval void: the step was edited" in runbook("status", "r.yaml").out
    p = runbook("plan", "r.yaml")
    assert "approval void: the step was edited since it was given" in p.out
    # another step edited: the runbook is another one all the same
    _runbook({"message": "ship it"}, b="echo B >> ledger.txt")
    p = runbook("plan", "r.yaml")
    assert "approval void: the runbook was edited since it was given" in p.out
    r = runbook("apply", "r.yaml", "--yes", "--accept-changes")
    assert r.code == 3, r.output
    assert "approvals voided: ok" in r.output
    st = _step(runbook, "ok")
    assert st["status"] == "waiting" and "approval void: changed since given" in st["error"]
    assert ledger_lines() == ["a"]


def test_other_vars_void_the_approval_in_plan(runbook: Any) -> None:
    _runbook({})
    _paused(runbook)
    assert runbook("approve", "r.yaml", "ok").code == 0
    p = runbook("plan", "r.yaml", "--var", "region=us")
    assert p.code == 0
    assert "approval void: other vars (region) than it was given for" in p.out
    assert "approval void" not in runbook("plan", "r.yaml").out  # the run's own vars
    r = runbook("apply", "r.yaml", "--yes", "--var", "region=us")
    assert r.code == 3, r.output  # no step uses region: accepted by itself, and voided
    assert "approvals voided: ok" in r.output
    st = _step(runbook, "ok")
    assert "approval void: changed since given (vars region)" in st["error"]
    assert st["approvals"]["approved"] == 0


def test_an_approver_with_another_copy_of_the_runbook_is_refused(runbook: Any) -> None:
    _runbook({})
    _paused(runbook)
    original = Path("r.yaml").read_text()
    _runbook({}, b="echo my-b >> ledger.txt")  # the approver's copy differs in another step
    before = _rows()
    r = runbook("approve", "r.yaml", "ok")
    _refused(r, before, "your copy of r.yaml differs from the runbook run", "approve the same")
    Path("r.yaml").write_text(original)
    assert runbook("approve", "r.yaml", "ok").code == 0


def test_approving_a_step_that_is_not_waiting_is_refused(runbook: Any) -> None:
    _runbook({})
    _paused(runbook)
    before = _rows()
    r = runbook("approve", "r.yaml", "a")
    _refused(r, before, "'a' is not an approval step")
    assert runbook("approve", "r.yaml", "ok").code == 0
    assert runbook("apply", "r.yaml", "--yes").code == 0
    before = _rows()
    r = runbook("approve", "r.yaml", "ok")
    _refused(r, before, "no run of t is in progress")


def test_resolve_is_refused_on_a_waiting_approval(runbook: Any) -> None:
    _runbook({})
    _paused(runbook)
    before = _rows()
    for as_ in ("succeeded", "failed", "pending"):
        r = runbook("resolve", "r.yaml", "ok", "--as", as_)
        _refused(r, before, "ok waits for an approval: resolve does not decide it")


def test_approve_never_takes_the_runs_lock_and_the_running_apply_reads_it(
    runbook: Any,
) -> None:
    """An approval given while an apply runs (it holds the lock: a second apply gets exit 4)
    is recorded at once, and the running apply goes on with it."""
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    {"id": "ok", "action": "approval"},
                    sh("after-ok", "echo after-ok >> ledger.txt", needs=["ok"]),
                    sh(
                        "slow",
                        "i=0; while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); "
                        "done; echo slow >> ledger.txt",
                    ),
                ],
            }
        ],
    )
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if STATE.joinpath("state.db").exists():
                try:
                    if _step(runbook, "ok")["status"] == "waiting":
                        break
                except (AssertionError, sqlite3.Error, StopIteration):
                    pass
            time.sleep(0.1)
        else:
            pytest.fail("the approval step never waited")
        held = run_process("apply", "r.yaml", "--yes")
        assert held.returncode == 4, held.stderr  # the running apply holds the lock
        started = time.monotonic()
        got = run_process("approve", "r.yaml", "ok", "--comment", "while it runs")
        assert got.returncode == 0, got.stderr
        assert time.monotonic() - started < 60  # it did not wait for the lock
        assert [a["comment"] for a in _approvals()] == ["while it runs"]
        Path("go").touch()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert sorted(ledger_lines()) == ["after-ok", "slow"]
    assert runbook("audit", "r.yaml").code == 0


def test_resolve_on_a_waiting_gate_takes_only_failed_and_no_lock(runbook: Any) -> None:
    step = {
        "id": "gate",
        "action": "check",
        "with": {"command": "echo notanumber", "condition": "value == 1", "interval": "0s"},
        "rollback": "none",
    }
    write("r.yaml", phases=[{"id": "p", "steps": [step, sh("after", "true")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 3
    before = _rows()
    r = runbook("resolve", "r.yaml", "gate", "--as", "succeeded")
    _refused(r, before, "resolve takes only `--as failed` there")
    r = runbook("resolve", "r.yaml", "gate", "--as", "failed", "--comment", "too risky")
    assert r.code == 0, r.output
    gates = [x for x in journal(".runbook", "t") if x["t"] == "gate"]
    assert [(g["decision"], g["by"]) for g in gates] == [("failed", ME)]


def test_hole_accept_changes_did_not_void_a_gate_decision_not_yet_acted_on(runbook: Any) -> None:
    step = {
        "id": "gate",
        "action": "check",
        "with": {"command": "echo notanumber", "condition": "value == 1", "interval": "0s"},
        "rollback": "none",
    }
    write(
        "r.yaml",
        phases=[{"id": "p", "steps": [step, sh("after", "echo after >> ledger.txt")]}],
    )
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert runbook("approve", "r.yaml", "gate", "--comment", "ok under v1").code == 0
    write(
        "r.yaml",
        phases=[{"id": "p", "steps": [step, sh("after", "echo AFTER >> ledger.txt")]}],
    )
    r = runbook("apply", "r.yaml", "--yes", "--accept-changes")
    # the decision was given on the old runbook: voided, the gate measures again and waits
    assert r.code == 3, r.output
    assert "approvals voided: gate" in r.output
    (acc,) = [x for x in journal(".runbook", "t") if x["t"] == "accept"]
    assert acc["voided"] == ["gate"]
    voids = [
        json.loads(v)
        for x in journal(".runbook", "t")
        if x["t"] == "record" and x["step"] == "gate"
        for k, v in x["items"].items()
        if k.startswith("gate.decision.") and "void" in json.loads(v)
    ]
    assert len(voids) == 1 and voids[0]["was"]["comment"] == "ok under v1"
    assert ledger_lines() == []


def test_bad_approval_keys_are_located_errors_and_apply_writes_nothing(runbook: Any) -> None:
    Path("r.yaml").write_text(
        "apiVersion: runbook/v1\n"
        "kind: Runbook\n"
        "metadata: {name: t}\n"
        "phases:\n"
        "  - id: p\n"
        "    steps:\n"
        "      - id: ok\n"
        "        action: approval\n"
        "        with: {required: 0, expires: soon, allow_self: maybe}\n"
        "      - id: two\n"
        "        action: approval\n"
        "        with: {required: 3, approvers: [maria, joao]}\n"
    )
    r = runbook("validate", "r.yaml")
    assert r.code == 2
    assert "r.yaml:9:26: phases[0].steps[0].with.required: 0 is less than the minimum of 1" in (
        r.err
    )
    assert "r.yaml:9:38: phases[0].steps[0].with.expires: invalid duration 'soon'" in r.err
    assert "r.yaml:9:56: phases[0].steps[0].with.allow_self: expected boolean" in r.err
    assert (
        "r.yaml:12:26: phases[0].steps[1].with.required: 3 approvals are required but "
        "approvers names only 2" in r.err
    )
    assert runbook("apply", "r.yaml", "--yes").code == 2
    assert not Path(".runbook").exists()


def test_the_schema_offers_the_approval_keys_to_editors(runbook: Any) -> None:
    r = runbook("schema", "--action", "approval")
    assert r.code == 0
    props = json.loads(r.out)["properties"]
    for key in ("required", "approvers", "allow_self", "expires", "message"):
        assert props[key]["description"], key


def test_two_approvals_by_one_identity_at_the_same_instant_count_once(runbook: Any) -> None:
    """The check and the write are one transaction: of two `approve` started together by the
    same identity, one records and the other is refused (exit 2)."""
    _runbook({"required": 2})
    _paused(runbook)
    procs = [
        subprocess.Popen(
            [RUNBOOK, "approve", "r.yaml", "ok", "--comment", f"try {i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [(p.wait(timeout=120), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    (refused,) = [err for code, (_out, err) in results if code == 2]
    assert f"ok was already approved by {ME} at" in refused
    assert len(_approvals()) == 1
    assert _step(runbook, "ok")["approvals"]["approved"] == 1


def test_resolve_fails_a_waiting_gate_while_an_apply_runs_and_holds_the_lock(
    runbook: Any,
) -> None:
    gate = {
        "id": "gate",
        "action": "check",
        "with": {"command": "echo notanumber", "condition": "value == 1", "interval": "0s"},
        "rollback": "none",
        "on_failure": "continue",
    }
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    gate,
                    sh("after-gate", "echo after-gate >> ledger.txt", needs=["gate"]),
                    sh(
                        "slow",
                        "i=0; while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); "
                        "done; echo slow >> ledger.txt",
                    ),
                ],
            }
        ],
    )
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if STATE.joinpath("state.db").exists():
                try:
                    if _step(runbook, "gate")["status"] == "waiting":
                        break
                except (AssertionError, sqlite3.Error, StopIteration):
                    pass
            time.sleep(0.1)
        else:
            pytest.fail("the gate never waited")
        assert run_process("apply", "r.yaml", "--yes").returncode == 4  # the lock is held
        got = run_process("resolve", "r.yaml", "gate", "--as", "failed", "--comment", "no")
        assert got.returncode == 0, got.stderr
        Path("go").touch()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the running apply read the decision: the gate failed (on_failure: continue)
    assert proc.returncode == 1, out + err
    st = _step(runbook, "gate")
    assert st["status"] == "failed" and "failed by the decision of" in st["error"]
    assert ledger_lines() == ["slow"]
