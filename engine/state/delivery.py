"""The outbox seen from outside a run: counts, the messages to export, and the relay's queue
(``runbook outbox``; SPEC §10-§11). These read and write the state without the run's lock:
the relay is another process than ``apply`` and may run beside it.

What may run at once, and why it is safe: ``apply`` only inserts ``queued`` rows (and keeps the
rows of its ``email``/``webhook`` sends); the relay only moves ``channel = 'outbox'`` rows from
``queued`` on. Every change is one short transaction (SQLite: ``BEGIN IMMEDIATE``, one writer
at a time, readers never blocked in WAL mode; PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two
relays never claim one row). A claim marks a row ``sending`` with its claimant (host, pid,
process start time); a row found ``sending`` whose claimant is provably gone (this host, that
process no longer there) was cut mid-send: it becomes ``uncertain`` and is not sent again
unless asked (``requeue_uncertain``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..actions import OutboxRow
from ..errors import StateError
from . import db as dbm
from . import dialect, location
from .db import Database
from .outbox import _ROW, has_outbox, row_of, scope
from .store import now, state_path

RELAYED = "outbox"  # the one channel the relay delivers; email and webhook sent themselves


def counts(db: Database) -> list[tuple[str, str, int]]:
    """(channel, state, count) of every message, channels and states in a fixed order."""
    if not has_outbox(db):
        return []
    table, mine, args = scope(db)
    rows = db.query(
        f"SELECT channel, state, count(*) FROM {table} WHERE {mine}channel IS NOT NULL"
        " GROUP BY channel, state",
        args,
    )
    return [(c, s, int(n)) for c, s, n in rows]


def messages(db: Database, channel: str = RELAYED) -> Iterator[tuple[OutboxRow, str, str]]:
    """(row, step, queued_at) of every message of ``channel``, in queue order, streamed."""
    if not has_outbox(db):
        return
    last = 0
    table, mine, args = scope(db)
    while True:
        got = db.query(
            f"SELECT id, {_ROW}, step, queued_at FROM {table} WHERE {mine}channel = ? AND id > ?"
            " ORDER BY id LIMIT 1000",
            (*args, channel, last),
        )
        if not got:
            return
        for r in got:
            yield row_of(r[1:12]), r[12], r[13]
        last = got[-1][0]


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None if it is gone
    or this system cannot say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat.rsplit(b")", 1)[1].split()[19].decode()


def claimant() -> str:
    """This process, as a claim names it: ``host pid start``."""
    pid = os.getpid()
    return f"{socket.gethostname()} {pid} {process_start(pid) or '-'}"


def gone(who: str | None) -> bool:
    """Whether the claimant ``who`` is provably gone: on this host, and its process (the same
    pid started at the same time) no longer there. On another host it cannot be told."""
    if not who:
        return True
    host, _, rest = who.partition(" ")
    pid_text, _, start = rest.partition(" ")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    now_start = process_start(int(pid_text))
    if now_start is not None:
        return start not in ("-", now_start)
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _cut(who: str | None) -> str:
    host, _, rest = (who or "").partition(" ")
    pid = rest.partition(" ")[0]
    by = f"the relay (pid {pid} on {host})" if pid else "a relay"
    return f"{by} stopped while sending it: it may have been delivered"


@dataclass(frozen=True)
class Claimed:
    id: int
    row: OutboxRow
    step: str
    queued_at: str


class RelayQueue:
    """The relay's side of the outbox table: claim one message at a time, settle it."""

    def __init__(self, db: Database, who: str | None = None) -> None:
        self.db = db
        self.who = who or claimant()
        self.last = 0  # rows up to here were looked at by this relay
        self.table, self.mine, self.args = scope(db)

    def settle_orphans(self) -> int:
        """Rows left ``sending`` by a relay that is gone: ``uncertain``."""
        if not has_outbox(self.db):
            return 0
        with self.db.transaction():
            rows = self.db.query(
                f"SELECT id, claimed_by FROM {self.table} WHERE {self.mine}channel = ?"
                " AND state = 'sending'",
                (*self.args, RELAYED),
            )
            cut = [(i, w) for i, w in rows if w != self.who and gone(w)]
            self.db.executemany(
                f"UPDATE {self.table} SET state = 'uncertain', reason = ?, updated_at = ?"
                " WHERE id = ? AND state = 'sending'",
                [(_cut(w), now(), i) for i, w in cut],
            )
        return len(cut)

    def requeue_uncertain(self) -> int:
        """``--resend-uncertain``: uncertain messages are queued again (and sent again)."""
        if not has_outbox(self.db):
            return 0
        with self.db.transaction():
            cur = self.db.execute(
                f"UPDATE {self.table} SET state = 'queued', reason = NULL, updated_at = ?"
                f" WHERE {self.mine}channel = ? AND state = 'uncertain'",
                (now(), *self.args, RELAYED),
            )
        return int(cur.rowcount)

    def left(self) -> dict[str, int]:
        """state -> count of the relayed channel's messages not sent."""
        return {s: n for c, s, n in counts(self.db) if c == RELAYED and s != "sent"}

    def next(self, done: tuple[int, str, str | None] | None = None) -> Claimed | None:
        """One transaction: settle ``done`` (id, state, reason) and claim the next queued
        message (``sending``, by this relay), or None when there is none."""
        if not has_outbox(self.db):
            return None
        skip = dialect.skip_locked(self.db)  # two relays never claim one row
        at = now()
        with self.db.transaction():
            if done is not None:
                self._settle(done, at)
            got = self.db.query(
                f"SELECT id, {_ROW}, step, queued_at FROM {self.table} WHERE {self.mine}"
                f"channel = ? AND state = 'queued' AND id > ? ORDER BY id LIMIT 1{skip}",
                (*self.args, RELAYED, self.last),
            )
            if not got:
                return None
            r = got[0]
            claimed = self.db.execute(
                f"UPDATE {self.table} SET state = 'sending', claimed_by = ?, updated_at = ?"
                " WHERE id = ? AND state = 'queued'",
                (self.who, at, r[0]),
            ).rowcount
        self.last = int(r[0])
        if claimed != 1:  # another relay took it between the two statements
            return self.next()
        return Claimed(int(r[0]), row_of(r[1:12]), r[12], r[13])

    def finish(self, done: tuple[int, str, str | None] | None) -> None:
        if done is not None:
            with self.db.transaction():
                self._settle(done, now())

    def _settle(self, done: tuple[int, str, str | None], at: str) -> None:
        mid, state, reason = done
        self.db.execute(
            f"UPDATE {self.table} SET state = ?, reason = ?, updated_at = ? WHERE id = ?"
            " AND state = 'sending' AND claimed_by = ?",
            (state, reason, at, mid, self.who),
        )


def writable(path: Path, name: str) -> Database:
    """The state database for the relay: read and write, ``synchronous=FULL``, no migration
    (a state of an older schema has no outbox: nothing to relay). Raises StateError as
    ``db.open_existing`` does."""
    db = dbm.open_existing(path, name)
    try:
        dbm.pragmas(db)
    except StateError:
        db.close()
        raise
    return db


@contextlib.contextmanager
def opened(state: str | os.PathLike[str], name: str, *, write: bool) -> Iterator[Database | None]:
    """The runbook's state for ``runbook outbox``, or None when it has none: a directory's
    ``state.db`` (a reader's ``query_only``; the relay's ``writable``), or its rows in the
    PostgreSQL database at ``state`` (a reader's session read-only). Never takes the lease."""
    if not write:
        from .journeys import reader

        with reader(state, name) as got:
            yield got
        return
    if location.is_postgres(state):
        from . import pg

        pdb = pg.open_db(str(state), name, write=False)  # no state: nothing is registered
        if pdb is None:
            yield None
            return
        try:
            yield pdb
        finally:
            pdb.close()
        return
    path = state_path(state, name) / dbm.FILE
    if not path.exists():
        yield None
        return
    db = writable(path, name)
    try:
        yield db
    finally:
        db.close()
