"""Crash safety of the ledger: SIGKILL inside ledger commits and outbox writes (after their
statements ran, before COMMIT; and right after it), at every commit of a cohort migration,
then resume: no member is marked twice in an attempt, none is lost, every one is told once per
attempt."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.engine import cohort_run as cr
from tests.engine.helpers import RUNBOOK

ROWS = 150


def _apply(cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("RUNBOOK_FAULT", None)
    if fault:
        env["RUNBOOK_FAULT"] = fault
    return subprocess.run(
        [RUNBOOK, "apply", "m.yaml", "--yes", "--var", "corrupt=early"],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def _setup(cwd: Path) -> None:
    cwd.mkdir()
    cr.legacy(str(cwd / "legacy.db"), rows=ROWS)
    cr.target(str(cwd / "new.db"))
    cr.write(str(cwd / "m.yaml"))


def _crash_and_resume(cwd: Path, fault: str) -> tuple[str, int]:
    _setup(cwd)
    first = _apply(cwd, fault)
    # wave early fails verify (the corrupt step) and is rolled back: exit 1 when not killed
    assert first.returncode in (-9, 1), first.stdout + first.stderr
    for _ in range(6):
        # the run is pinned to corrupt=early (SPEC §11): the fault is turned off, and accepted
        r = subprocess.run(
            [RUNBOOK, "apply", "m.yaml", "--yes", "--var", "corrupt=", "--accept-changes"],
            cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if r.returncode == 0:
            break
        assert r.returncode in (1, 3), r.stdout + r.stderr
        if r.returncode == 3:  # a step found running: the operator decides
            doc = json.loads(
                subprocess.run(
                    [RUNBOOK, "status", "m.yaml", "--format", "json"], cwd=cwd,
                    capture_output=True, text=True, check=True,
                ).stdout
            )  # fmt: skip
            for step in doc["steps"]:
                if step["status"] == "unknown":
                    subprocess.run(
                        [RUNBOOK, "resolve", "m.yaml", step["id"], "--as", "pending"],
                        cwd=cwd, check=True, capture_output=True,
                    )  # fmt: skip
    else:
        raise AssertionError(f"{fault}: the run never finished: {r.stdout}{r.stderr}")
    return fault, first.returncode


def _check(cwd: Path, fault: str) -> None:
    db = sqlite3.connect(cwd / ".runbook" / "cohorts" / "state.db")
    states = Counter(s for (s,) in db.execute("SELECT state FROM entity WHERE wave IS NOT NULL"))
    assert states == Counter({"verified": sum(states.values())}), (fault, states)  # none lost
    twice = db.execute(
        "SELECT key, state, attempt, count(*) FROM transition"
        " WHERE step IS NULL OR step NOT LIKE '%#rollback'"  # an undo takes a mark back
        " GROUP BY key, state, attempt HAVING count(*) > 1"
    ).fetchall()
    assert not twice, (fault, twice[:5])  # no member marked twice in one attempt
    told = db.execute(
        "SELECT key, step, attempt, count(*) FROM message WHERE state = 'sent'"
        " GROUP BY key, step, attempt HAVING count(*) > 1"
    ).fetchall()
    assert not told, (fault, told[:5])
    untold = db.execute(
        "SELECT e.key FROM entity e WHERE e.wave IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
        " message m WHERE m.key = e.key AND m.state = 'sent' AND m.step LIKE 'announce[%]')"
    ).fetchall()
    assert not untold, (fault, untold[:5])
    queued = db.execute(
        "SELECT count(*), count(DISTINCT message_id) FROM outbox WHERE step LIKE 'announce[%'"
    ).fetchone()
    told_rows = db.execute(
        "SELECT count(*) FROM message WHERE state = 'sent' AND step LIKE 'announce[%'"
    ).fetchone()[0]
    assert queued == (told_rows, told_rows), (fault, queued, told_rows)  # one row a message
    with sqlite3.connect(cwd / "new.db") as new, sqlite3.connect(cwd / "legacy.db") as old:
        moved = {r for r in new.execute("SELECT * FROM customers")}
        want = {r for r in old.execute("SELECT * FROM customers WHERE email IS NOT NULL")}
        assert moved == want, fault


@pytest.mark.slow
def test_sigkill_inside_every_ledger_commit_loses_and_doubles_no_member(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    _setup(probe)
    r = _apply(probe, "effects:100000")  # count the ledger commits of an undisturbed run
    assert r.returncode == 1, r.stdout + r.stderr
    # freeze, wave starts, the marks of each step and their undo, compensation: about 16
    # ledger commits in this run; the announcements and their ledger messages are 3 outbox
    # writes (pilot, early, early's postponement); a fault past the last one kills nothing
    commits, writes = 20, 4
    faults = [
        f"{point}:{n}"
        for kind, last in (("effects", commits), ("outbox", writes))
        for n in range(1, last + 1)
        for point in (kind, f"{kind}-committed")
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda f: _crash_and_resume(tmp_path / f.replace(":", "-"), f), faults)
        )
    killed = {f for f, code in results if code == -9}
    hit = [n for n in range(1, commits + 1) if f"effects:{n}" in killed]
    assert hit == list(range(1, len(hit) + 1)) and len(hit) >= 10, sorted(killed)
    hit = [n for n in range(1, writes + 1) if f"outbox:{n}" in killed]
    assert hit == list(range(1, len(hit) + 1)) and len(hit) == 3, sorted(killed)
    for fault, _ in results:
        _check(tmp_path / fault.replace(":", "-"), fault)
