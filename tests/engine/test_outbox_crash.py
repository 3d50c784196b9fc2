"""Exactly-once into the outbox across crashes (SPEC §10-§11): a notify step telling thousands
of members is killed with SIGKILL inside a batch's transaction (before COMMIT), right after a
COMMIT, and at an instant chosen from outside; the crash leaves whole batches, and the resumed
run queues every member once, with one ledger message each and one file each in the folder."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine import cohort_run as cr
from tests.engine.helpers import RUNBOOK

MEMBERS = 4_500  # 5 batches of 1,000, the last one half full
BATCH = 1_000


def _setup(cwd: Path) -> None:
    cwd.mkdir()
    os.chdir(cwd)
    cr.legacy(rows=MEMBERS, no_contact_every=10**9)
    cr.target()
    steps = cr.steps()[:1]
    steps[0]["with"]["outbox"] = "mail"
    cr.write(
        name="t",
        cohort=cr.cohort(waves=[{"id": "all", "size": "rest"}], stratify_by=[]),
        phases=[{"id": "rollout", "waves": {"cohort": "customers"}, "steps": steps}],
    )


def _apply(fault: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ}
    env.pop("RUNBOOK_FAULT", None)
    if fault:
        env["RUNBOOK_FAULT"] = fault
    return subprocess.Popen(
        [RUNBOOK, "apply", "m.yaml", "--yes"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _queued() -> int:
    path = Path(".runbook/t/state.db")
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        has = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone()
        return int(con.execute("SELECT count(*) FROM outbox").fetchone()[0]) if has else 0
    finally:
        con.close()


def _resume_and_check(killed_with: int) -> None:
    before = _queued()
    assert before % BATCH == 0 or before == MEMBERS, before  # whole batches only
    assert before == killed_with, (before, killed_with)
    proc = _apply()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    ledger = sqlite3.connect(".runbook/t/state.db")
    try:
        total, entities, ids = ledger.execute(
            "SELECT count(*), count(DISTINCT entity), count(DISTINCT message_id) FROM outbox"
        ).fetchone()
        assert (total, entities, ids) == (MEMBERS, MEMBERS, MEMBERS)  # every member, once
        told = ledger.execute(
            "SELECT count(*), count(DISTINCT key) FROM message WHERE state = 'sent'"
        ).fetchone()
        assert told == (MEMBERS, MEMBERS)
        linked = ledger.execute(
            "SELECT count(*) FROM message m JOIN outbox o ON o.id = m.outbox"
            " WHERE o.entity = m.key AND o.message_id = m.message_id"
        ).fetchone()[0]
        assert linked == MEMBERS  # each ledger message is its outbox row
        states = ledger.execute("SELECT state, count(*) FROM entity GROUP BY state").fetchall()
        assert states == [("notified", MEMBERS)]
        tokens = {
            mid[1:].split("@")[0] for (mid,) in ledger.execute("SELECT message_id FROM outbox")
        }
    finally:
        ledger.close()
    files = {p.stem for p in Path("mail").iterdir()}
    assert files == tokens  # one file per message, none missing after the crash
    assert not [p for p in Path("mail").iterdir() if p.suffix != ".eml"]  # no temp file left


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "left"),
    [
        ("outbox:1", 0),  # killed inside the first batch: nothing of it committed
        ("outbox:3", 2 * BATCH),
        ("outbox:5", 4 * BATCH),  # inside the last (half) batch
        ("outbox-committed:1", BATCH),  # right after a COMMIT, before its files
        ("outbox-committed:3", 3 * BATCH),
        ("outbox-committed:5", MEMBERS),  # the whole step queued, its success not recorded
    ],
)
def test_sigkill_inside_a_batch_leaves_whole_batches_and_every_member_is_queued_once(
    tmp_path: Path, fault: str, left: int
) -> None:
    _setup(tmp_path / "w")
    proc = _apply(fault)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, out
    _resume_and_check(left)


@pytest.mark.slow
def test_sigkill_from_outside_while_batches_are_written(tmp_path: Path) -> None:
    _setup(tmp_path / "w")
    proc = _apply()
    deadline = time.monotonic() + 120
    while _queued() < BATCH and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    got = _queued()
    assert got % BATCH == 0 and BATCH <= got < MEMBERS, got  # killed between two batches
    _resume_and_check(got)
