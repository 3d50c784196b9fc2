"""The checkpoint on PostgreSQL in one statement (``PgDatabase.append_once``, issue 14): fenced,
serialised with the other appenders, chained and committed at once; refused, with nothing
written, to a writer whose lease moved on; and never chained beside a record another process
appended meanwhile (it falls back to the transaction, which chains after it)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import LeaseLost
from runbook_engine.masking import Masker
from runbook_engine.state import backend, chain, pg
from runbook_engine.state.store import Store
from tests.engine.helpers import RUNBOOK, runbook_yaml, sh


def _sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _journal(url: str, name: str) -> list[tuple[int, str, str]]:
    """(seq, record text, hash) of the runbook's records, in order."""
    rows = _sql(url, "SELECT seq, rec, hash FROM runbook.journal WHERE runbook = %s ORDER BY seq",
                (name,))  # fmt: skip
    return [(int(s), str(r), str(h)) for s, r, h in rows]


def _rec(step: str, status: str) -> dict[str, Any]:
    return {"t": "step", "id": step, "status": status, "attempt": 1}


@pytest.fixture
def held(pg_dsn: str) -> Iterator[tuple[Store, Any]]:
    """A store on PostgreSQL under this process's lease, its first record written (the
    transaction's path: the one statement chains to the last record its connection wrote)."""
    pg.init(pg_dsn)
    with backend.leased(pg_dsn, "ck", Masker()) as (store, lease):
        store.stage(_rec("s0", "pending"))
        store.flush()
        yield store, lease


def test_a_group_of_records_is_written_by_one_statement_in_one_transaction_and_audits(
    pg_dsn: str, held: tuple[Store, Any]
) -> None:
    store, _ = held
    stamped = [{**_rec(f"s{i}", "pending"), "at": "2026-12-02T13:00:00.000Z"} for i in (1, 2)]
    assert store.db.append_once(stamped) == 2  # chained to record 1, committed
    assert store.refresh() == {"s1", "s2"}
    for i in range(5):
        store.stage(_rec(f"s{i + 3}", "pending"))
    store.flush()
    assert store.seq == 8
    rows = _journal(pg_dsn, "ck")
    assert [seq for seq, _, _ in rows] == list(range(1, 9))
    # the group of five is one transaction (one commit), as the directory's one fsync
    xids = _sql(pg_dsn, "SELECT count(DISTINCT xmin::text) FROM runbook.journal"
                " WHERE runbook = 'ck' AND seq BETWEEN 4 AND 8")  # fmt: skip
    assert xids == [(1,)]
    assert [json.loads(text)["id"] for _, text, _ in rows] == [f"s{i}" for i in range(8)]
    got = chain.audit(store.db)
    assert got.holds and got.records == 8 and got.last == 8 and got.head == rows[-1][2]
    assert store.state.steps["s7"].status.value == "pending"  # folded as written


def test_a_fenced_out_writer_writes_nothing_and_its_flush_is_exit_4(
    pg_dsn: str, held: tuple[Store, Any]
) -> None:
    store, lease = held
    before = _journal(pg_dsn, "ck")
    # another holder took the lease over (its takeover bumps the epoch)
    _sql(pg_dsn, "UPDATE runbook.lease SET epoch = epoch + 1 WHERE runbook = 'ck'")
    stamped = {**_rec("s1", "running"), "at": "2026-12-02T13:00:00.000Z"}
    assert store.db.append_once([stamped]) is None
    assert _journal(pg_dsn, "ck") == before
    store.stage(_rec("s1", "running"))
    with pytest.raises(LeaseLost) as lost:
        store.flush()
    assert lost.value.exit_code == 4 and "lost the lease of the state" in str(lost.value)
    assert _journal(pg_dsn, "ck") == before
    assert lease.lost_error is not None


def test_a_record_another_process_appended_between_checkpoints_is_chained_before(
    pg_dsn: str, held: tuple[Store, Any]
) -> None:
    store, _ = held
    # `approve` or `resolve`: a writer without the lease, on its own connection
    other = Store(pg_dsn, "ck", Masker())
    try:
        other.commit({"t": "record", "step": "s0", "items": {"by": "other"}})
    finally:
        other.close()
    store.stage(_rec("s1", "running"))
    store.flush()
    rows = _journal(pg_dsn, "ck")
    assert [json.loads(text)["t"] for _, text, _ in rows] == ["step", "record", "step"]
    assert chain.audit(store.db).holds
    assert store.refresh() == {"s0"}  # the other's record is folded in, its own is not twice
    assert store.state.records["s0"] == {"by": "other"}


def test_a_record_appended_while_the_checkpoint_waits_for_the_appenders_lock_is_chained_before(
    pg_dsn: str, held: tuple[Store, Any]
) -> None:
    """The one statement's snapshot is older than the lock it waits for: the record committed
    meanwhile is not seen as the last one, but its key collides, the statement writes
    nothing, and the transaction's path chains after it."""
    import psycopg

    from runbook_engine.state import journal

    store, _ = held
    base = _journal(pg_dsn, "ck")[-1]
    other = psycopg.connect(pg_dsn, autocommit=True)
    try:
        tx = other.transaction()
        tx.__enter__()
        other.execute(pg.APPEND_LOCK, ("ck",))
        text = journal.encode({"t": "record", "step": "s0", "items": {"by": "other"},
                               "at": "2026-12-02T13:00:00.000Z"})  # fmt: skip
        other.execute(
            "INSERT INTO runbook.journal (runbook, seq, at, kind, rec, hash)"
            " VALUES ('ck', %s, '2026-12-02T13:00:00.000Z', 'record', %s, %s)",
            (base[0] + 1, text, journal.link(base[2], base[0] + 1, text)),
        )
        store.stage(_rec("s1", "running"))
        done: list[BaseException | None] = []

        def flush() -> None:
            try:
                store.flush()
                done.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                done.append(exc)

        writer = threading.Thread(target=flush)
        writer.start()
        deadline = time.monotonic() + 60
        while not _sql(pg_dsn, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                       " AND wait_event = 'advisory' AND datname = current_database()"):  # fmt: skip
            assert time.monotonic() < deadline, "the checkpoint never waited for the lock"
            time.sleep(0.02)
        tx.__exit__(None, None, None)  # commit the other's record
        writer.join(timeout=60)
    finally:
        other.close()
    assert done == [None]
    rows = _journal(pg_dsn, "ck")
    assert [json.loads(t)["t"] for _, t, _ in rows[-2:]] == ["record", "step"]
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    assert chain.audit(store.db).holds


def test_an_apply_whose_epoch_moved_on_is_exit_4_at_its_next_write_and_writes_nothing(
    pg_dsn: str, tmp_path: Path
) -> None:
    pg.init(pg_dsn)
    steps = [
        sh("s1", "touch started; while [ ! -f release ]; do sleep 0.05; done; echo s1 >> ledger"),
        sh("s2", "echo s2 >> ledger", needs=["s1"]),
    ]
    (tmp_path / "r.yaml").write_text(runbook_yaml("fx", phases=[{"id": "p", "steps": steps}]))
    env = {**os.environ, "RUNBOOK_STATE": pg_dsn}
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--lease", "60s"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        _sql(pg_dsn, "UPDATE runbook.lease SET epoch = epoch + 1 WHERE runbook = 'fx'")
        fenced_at = _journal(pg_dsn, "fx")
        (tmp_path / "release").touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 4, out + err
    assert "lost the lease of the state" in err and "Traceback" not in err
    assert _journal(pg_dsn, "fx") == fenced_at  # s1's result and s2's start: not written
    assert (tmp_path / "ledger").read_text().split() == ["s1"]
