"""Issue 12 audit: the holes found in foreach (a crash during a per-member rollback, resolve
--member with --all-unknown, the advice on members cut by a crash, members failed within
max_failed with no `marks:`)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.engine.helpers import RUNBOOK, journal, status_json, write_subs_runbook


def _base(rows: int) -> None:
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
        db.executemany(
            "INSERT INTO customers VALUES (?, ?)",
            [(i, f"c{i}@example.com") for i in range(1, rows + 1)],
        )


def _runbook(rows: int, **step: Any) -> None:
    _base(rows)
    move: dict[str, Any] = {
        "id": "move",
        "action": "shell",
        "marks": "moved",
        "foreach": {"cohort": "subs", "concurrency": 4},
        "retries": {"attempts": 1},
        "with": {"command": "echo {{ member.key }} >> calls.txt"},
        "rollback": {
            "action": "shell",
            "with": {"command": "sleep 0.02; echo {{ member.key }} >> undo.txt"},
        },
    }
    move.update(step)
    move = {k: v for k, v in move.items() if v is not None}
    write_subs_runbook("fa", [move], [{"id": "all", "size": "rest"}])


def _ledger(sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect("file:.runbook/fa/state.db?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _lines(path: str) -> list[int]:
    p = Path(path)
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def _kill_when(path: str, more_than: int, args: list[str]) -> None:
    proc = subprocess.Popen([RUNBOOK, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(6000):  # up to a minute on a loaded machine
        if len(_lines(path)) > more_than:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the calls in flight (orphaned shells) finish their line first


def test_a_crash_during_a_per_member_rollback_is_resumed_and_resolved_member_by_member(
    runbook,
) -> None:
    _runbook(200)
    assert runbook("apply", "r.yaml", "--yes").code == 0
    _kill_when("undo.txt", 40, ["rollback", "r.yaml", "--wave", "p.all", "--yes"])
    undone_before = _lines("undo.txt")
    assert 40 < len(undone_before) < 200

    r = runbook("rollback", "r.yaml", "--wave", "p.all", "--yes")
    # members undone before the crash are not called again; the rest are; the calls cut by
    # the crash (a shell: not idempotent) wait for the operator
    assert r.code == 3, r.output
    assert "member call(s) were cut by a crash" in r.out
    assert "runbook resolve r.yaml 'move[all]' --member KEY" in r.out
    calls = _ledger("SELECT 1")  # the state is readable
    assert calls
    recs = [x for x in journal(".runbook", "fa") if x["t"] == "members"]
    unknown = sorted(
        {k for x in recs if x["step"] == "move[all]#rollback" for k in x.get("unknown", ())}
    )
    assert unknown
    undo = _lines("undo.txt")
    assert sorted(k for k in undo if k not in unknown) == sorted(
        k for k in range(1, 201) if k not in unknown
    )  # each member not cut undone exactly once
    # SPEC §11: compensated exactly the members undone; the ones cut stay as they were
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [
        ("compensated", 200 - len(unknown)),
        ("moved", len(unknown)),
    ]
    assert status_json(runbook, "r.yaml")["steps"][0]["status"] == "unknown"
    # step-level resolve is refused: its members decide (nothing written)
    before = len(journal(".runbook", "fa"))
    r = runbook("resolve", "r.yaml", "move[all]", "--as", "rolled_back")
    assert r.code == 2 and "--member KEY" in r.err, r.output
    assert len(journal(".runbook", "fa")) == before

    done = set(_lines("undo.txt"))
    first, *rest = unknown
    r = runbook(
        "resolve", "r.yaml", "move[all]", "--member", str(first),
        "--as", "succeeded" if first in done else "pending",
    )  # fmt: skip
    assert r.code == 0, r.output
    assert "of its rollback resolved" in r.out
    doc = status_json(runbook, "r.yaml")["steps"][0]
    assert sorted(doc["unknown_members"]) == rest  # the members still undecided, not the old list
    for k in rest:
        r = runbook(
            "resolve", "r.yaml", "move[all]", "--member", str(k),
            "--as", "succeeded" if k in done else "pending",
        )  # fmt: skip
        assert r.code == 0, r.output
    r = runbook("rollback", "r.yaml", "--wave", "p.all", "--yes")
    assert r.code == 0, r.output
    assert sorted(_lines("undo.txt")) == list(range(1, 201))  # each member undone once
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [("compensated", 200)]
    assert status_json(runbook, "r.yaml")["steps"][0]["status"] == "rolled_back"


def test_a_per_member_rollback_that_fails_for_some_compensates_exactly_the_others(
    runbook,
) -> None:
    _runbook(
        30,
        rollback={
            "action": "shell",
            "with": {"command": "test {{ member.key }} -gt 3 && echo {{ member.key }} >> undo.txt"},
        },
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("rollback", "r.yaml", "--wave", "p.all", "--yes")
    assert r.code == 1, r.output
    undone = _lines("undo.txt")
    assert f"{len(undone)} member(s) compensated" in r.out
    assert sorted(
        k for (k,) in _ledger("SELECT key FROM entity WHERE state = 'compensated'")
    ) == sorted(undone)
    assert all(k > 3 for k in undone)
    moved = [k for (k,) in _ledger("SELECT key FROM entity WHERE state = 'moved' ORDER BY key")]
    assert moved == sorted(set(range(1, 31)) - set(undone))


def test_a_per_member_rollback_with_members_failed_within_max_failed_is_not_rolled_back(
    runbook,
) -> None:
    _runbook(
        30,
        foreach={"cohort": "subs", "concurrency": 4, "max_failed": 5},
        rollback={
            "action": "shell",
            "with": {"command": "test {{ member.key }} -gt 3 && echo {{ member.key }} >> undo.txt"},
        },
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("rollback", "r.yaml", "--wave", "p.all", "--yes")
    assert r.code == 1, r.output
    assert "3 member(s) not undone" in r.out
    assert status_json(runbook, "r.yaml")["steps"][0]["status"] == "rollback_failed"
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [
        ("compensated", 27),
        ("moved", 3),
    ]


def _cut_forward(runbook: Any) -> list[int]:
    """A forward foreach run killed mid-way, then resumed: members cut wait (exit 3)."""
    _runbook(120, **{"with": {"command": "sleep 0.02; echo {{ member.key }} >> calls.txt"}})
    _kill_when("calls.txt", 30, ["apply", "r.yaml", "--yes"])
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 3, r.output
    # the advice names the command that works, never `approve`
    assert "runbook resolve r.yaml 'move[all]' --member KEY --as" in r.out
    assert "approve with" not in r.out and "runbook approve" not in r.out
    recs = [x for x in journal(".runbook", "fa") if x["t"] == "members"]
    return sorted({k for x in recs for k in x.get("unknown", ())})


def test_resolve_member_with_all_unknown_is_refused_and_writes_nothing(runbook) -> None:
    unknown = _cut_forward(runbook)
    before = journal(".runbook", "fa")
    states = _ledger("SELECT key, state FROM entity ORDER BY key")
    r = runbook(
        "resolve", "r.yaml", "move[all]", "--member", str(unknown[0]), "--all-unknown",
        "--as", "succeeded",
    )  # fmt: skip
    assert r.code == 2, r.output
    assert "--all-unknown exclude each other" in r.err and "nothing was resolved" in r.err
    assert journal(".runbook", "fa") == before
    assert _ledger("SELECT key, state FROM entity ORDER BY key") == states
    assert (
        sorted(k for (k,) in _ledger("SELECT key FROM entity WHERE state = 'unknown'")) == unknown
    )


def test_waiting_members_are_decided_by_resolve_member_and_status_lists_those_left(
    runbook,
) -> None:
    unknown = _cut_forward(runbook)
    before = len(journal(".runbook", "fa"))
    r = runbook("approve", "r.yaml", "move[all]")
    assert r.code == 2, r.output
    assert "--member KEY" in r.err and "approve it with" not in r.err
    r = runbook("resolve", "r.yaml", "move[all]", "--as", "succeeded")
    assert r.code == 2, r.output
    assert "--member KEY" in r.err and "runbook approve" not in r.err
    assert len(journal(".runbook", "fa")) == before  # refusals write nothing
    r = runbook("status", "r.yaml")
    assert r.code == 0
    assert "runbook resolve r.yaml 'move[all]' --member KEY" in r.out
    assert "approve" not in r.out
    first, *rest = unknown
    r = runbook("resolve", "r.yaml", "move[all]", "--member", str(first), "--as", "pending")
    assert r.code == 0, r.output
    doc = status_json(runbook, "r.yaml")["steps"][0]
    assert sorted(doc["unknown_members"]) == rest
    text = runbook("status", "r.yaml").out
    assert f"{len(rest)} member call(s) cut by a crash still unknown" in text
    if rest:
        assert str(rest[0]) in text
    assert f"({first}" not in text and f" {first}," not in text


def test_members_failed_within_max_failed_without_marks_make_the_run_not_clean(
    runbook,
) -> None:
    _runbook(
        5,
        marks=None,
        rollback="none",
        foreach={"cohort": "subs", "max_failed": 10},
        **{"with": {"command": "test {{ member.key }} -gt 2"}},
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert "NOT CLEAN" in r.out
    assert "cohort subs, wave all: 2 member(s) not done (first: 1, 2)" in r.out
    assert _ledger("SELECT key, state FROM entity ORDER BY key") == [
        (1, "failed"),
        (2, "failed"),
        (3, "pending"),
        (4, "pending"),
        (5, "pending"),
    ]
    run = status_json(runbook, "r.yaml")["run"]
    assert run["clean"] is False and run["status"] == "succeeded"


def test_a_member_key_of_dots_never_walks_out_of_a_url_path(runbook, provider) -> None:
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, email TEXT)")
        db.executemany(
            "INSERT INTO customers VALUES (?, ?)",
            [("..", "a@x"), (".", "b@x"), ("k.1", "c@x"), ("k2", "d@x")],
        )
    step = {
        "id": "del",
        "action": "http",
        "rollback": "none",
        "foreach": {"cohort": "subs", "concurrency": 1, "max_failed": 2},
        "with": {
            "method": "DELETE",
            "url": provider.url + "/accounts/{{ member.key }}/card?k={{ member.key }}",
            "json": {"customer": "{{ member.key }}"},
        },
    }
    write_subs_runbook("fa", [step], [{"id": "all", "size": "rest"}])
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output  # two members failed (within max_failed): not clean
    assert "2 member(s) not done (first: .., .)" in r.out
    assert dict(provider.deleted) == {"k.1": 1, "k2": 1}  # never called for the dots
    assert _ledger("SELECT key, state FROM entity ORDER BY key") == [
        (".", "failed"),
        ("..", "failed"),
        ("k.1", "pending"),
        ("k2", "pending"),
    ]
    (reason,) = _ledger("SELECT reason FROM entity WHERE key = '..'")[0]
    assert "dots only would walk out of the path" in reason


def test_a_crash_during_a_keyed_per_member_rollback_resumes_without_a_decision(
    runbook, provider
) -> None:
    """An http rollback sends its Idempotency-Key: members cut by the crash are called again
    (same key), the ones undone are not; no operator decision is needed."""
    undo = {
        "action": "http",
        "with": {
            "method": "DELETE",
            "url": provider.url + "/migrate",
            "json": {"customer": "{{ member.key }}"},
        },
    }
    _runbook(120, rollback=undo)
    assert runbook("apply", "r.yaml", "--yes").code == 0
    provider.delay = 0.02
    proc = subprocess.Popen(
        [RUNBOOK, "rollback", "r.yaml", "--wave", "p.all", "--yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(6000):
        if len(provider.deleted) > 30:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    before = dict(provider.deleted)
    assert 30 < len(before) < 120
    provider.delay = 0.0
    r = runbook("rollback", "r.yaml", "--wave", "p.all", "--yes")
    assert r.code == 0, r.output
    assert set(provider.deleted) == set(range(1, 121))
    # a member undone before the crash (recorded done) is never called again; the ones cut
    # are called again with the same key
    keys = [k for k in provider.calls if "#rollback" in k]
    assert len(keys) == 120 and max(provider.calls[k] for k in keys) <= 2
    assert sum(provider.calls[k] for k in keys) - 120 <= 4  # at most the calls in flight again
    assert _ledger("SELECT state, count(*) FROM entity GROUP BY state") == [("compensated", 120)]
