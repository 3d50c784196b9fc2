"""The lease of a runbook's state on a directory (SPEC §8, §11): one writer at a time.

The lease is a row of ``state.db`` (``lease``: epoch, holder, started, duration) and a file per
epoch, ``STATE_DIR/NAME/lease-EPOCH``:

- the holder keeps an ``flock`` on its epoch's file for its whole life: the kernel releases it
  when the holder dies, even by SIGKILL, so on this host a free flock proves the holder gone
  and its lease is taken over at once;
- the file's modification time is the last renewal: a thread touches it every
  min(5 s, lease/3) (no fsync, never the database's lock: it never blocks the scheduler).
  Expiry is measured on the file's clock (SPEC §11): "now" is the modification time of the
  ``lock`` file touched by whoever asks. A lease not renewed for its duration is expired and
  taken over, with a notice naming the lost holder, whatever the host (a SIGSTOPped holder
  still holds its flock).

Fencing: each takeover (and ``unlock --force``) advances the epoch in the same transaction
that records the new holder. ``fence(db)`` runs first inside every write transaction of the
holder (``Database.transaction``), under SQLite's write lock: a holder whose epoch is not the
row's any more commits nothing, and stops (``LeaseLost``, exit 4). ``approve`` and ``resolve``
never take the lease: they check and write their decisions in one transaction
(``decisions.py``), holding the ``lock`` file's flock (``guard``) only for the moment they open
the state, as every opener does. How the lease is read (the
row, the files, the clock) is ``holder.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import LeaseLost, LockHeld, StateError
from ..files import private_dir
from ..masking import Masker
from . import db as dbm
from .db import Database
from .holder import (
    COLUMNS,
    DEFAULT_SECONDS,
    GUARD,
    PREFIX,
    Holder,
    Losable,
    Probe,
    Row,
    file_now,
    flocked,
    iso,
    judge,
    probe,
    shown_command,
    user,
)
from .store import Store, state_path

GUARD_WAIT = 60.0  # seconds an opener waits for another one to finish opening


@contextlib.contextmanager
def guard(directory: Path, wait: float = GUARD_WAIT) -> Iterator[None]:
    """The ``lock`` file's flock while a command opens (or, for ``approve`` and ``resolve``,
    reads and writes) the state: held for moments, never for a run."""
    private_dir(directory)
    fd = open_private(directory / GUARD)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_size:  # what a dead run of an earlier version left
                    os.ftruncate(fd, 0)
                break
            except BlockingIOError:
                _earlier_version(fd)
                if time.monotonic() > deadline:
                    raise LockHeld(
                        f"{directory}: another runbook command has been opening this state "
                        f"for {wait:.0f}s; try again"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the flock


def open_private(path: Path, flags: int = 0) -> int:
    """``path`` opened read-write (created 0600), never following a symlink nor blocking on a
    FIFO; something other than a regular file in its place is exit 2, never waited on."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | flags, 0o600)
    except OSError as exc:
        raise StateError(
            f"{path}: cannot be opened ({exc.strerror}); it must be a regular file (remove "
            "what is in its place)"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StateError(f"{path}: not a regular file; remove what is in its place")
    return fd


def _earlier_version(fd: int) -> None:
    """An earlier version of runbook held ``lock`` for its whole run, with its holder written
    inside (this one never writes it): that run is named at once (exit 4), not waited for."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    if not raw.strip():
        return
    try:
        data = json.loads(raw)
        who = f"{data['user']}@{data['host']} pid {data['pid']} since {data['started_at']}"
    except (ValueError, KeyError, TypeError):
        who = "a run of an earlier version of runbook"
    raise LockHeld(
        f"the state is locked by {who} (a run of an earlier version of runbook, which holds "
        "`lock` until it ends); wait for it to end"
    )


def _set_row(
    db: Database, epoch: int, holder: Holder, seconds: float, released: str | None
) -> None:
    db.execute(
        f"INSERT INTO lease (id, {COLUMNS}) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, host = excluded.host, "
        "pid = excluded.pid, user = excluded.user, command = excluded.command, "
        "started = excluded.started, seconds = excluded.seconds, released = excluded.released",
        (
            epoch,
            holder.host,
            holder.pid,
            holder.user,
            holder.command,
            holder.started,
            seconds,
            released,
        ),
    )


class Lease(Losable):
    """This process's lease on one state: ``acquire`` (under ``guard``), a renewal thread,
    ``fence`` inside every write transaction, ``release``."""

    def __init__(
        self, directory: Path, seconds: float = DEFAULT_SECONDS, command: str | None = None
    ) -> None:
        self.dir = directory
        self.seconds = seconds
        self.command = command or shown_command(sys.argv[1:])
        self.epoch: int | None = None
        self.notice: str | None = None
        self.took_over: Holder | None = None  # the holder it was taken from
        self._init_lost()
        self._fd = -1
        self._file: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None

    @property
    def interval(self) -> float:
        """How often the lease is renewed: min(5 s, lease/3) (SPEC §8)."""
        return min(5.0, self.seconds / 3)

    def probe(self) -> Probe:
        """The lease of this state as a reader sees it (``probe``)."""
        return probe(self.dir)

    # -- taking it ---------------------------------------------------------------------
    def acquire(self, db: Database) -> Lease:
        """Take the lease, or raise ``LockHeld`` (exit 4) naming the holder and the lease's
        age. Call under ``guard`` with the state's database open."""
        path: Path | None = None
        fd = -1
        try:
            with db.transaction(fenced=False):
                row = Row.read(db.query)
                now = file_now(self.dir)
                seen = judge(self.dir, row, now)
                if seen.state == "held":
                    assert seen.holder is not None
                    raise LockHeld(
                        f"the state is locked by {seen.holder.describe()}: its lease is live "
                        f"({seen.age_text()}); `runbook lock FILE` shows it"
                    )
                if seen.state != "none":
                    assert seen.holder is not None
                    self.took_over = seen.holder
                    why = (
                        "its process is gone from this host"
                        if seen.state == "lost"
                        else f"its lease expired ({seen.age_text()}); if it still runs, it "
                        "is fenced: it writes nothing more and exits 4"
                    )
                    self.notice = f"took over the lease of {seen.holder.describe()}: {why}"
                epoch = (row.epoch if row else 0) + 1
                path = self.dir / f"{PREFIX}{epoch}"
                fd = open_private(path, os.O_TRUNC)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, json.dumps({"epoch": epoch, "pid": os.getpid()}).encode())
                os.utime(fd)
                started = iso(os.fstat(fd).st_mtime)
                me = Holder(socket.gethostname(), os.getpid(), user(), self.command, started)
                _set_row(db, epoch, me, self.seconds, None)
        except BaseException as exc:
            if fd >= 0:
                os.close(fd)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
            if dbm.busy(exc):
                raise busy(self.dir, db) from None
            raise
        self.epoch, self._fd, self._file = epoch, fd, path
        self._sweep()
        self._reader = sqlite3.connect(db.path, timeout=30.0, check_same_thread=False)
        self._reader.execute("PRAGMA query_only = ON")
        self._thread = threading.Thread(target=self._renewing, name="lease", daemon=True)
        self._thread.start()
        return self

    def _sweep(self) -> None:
        """Remove the files of earlier epochs whose holders are gone."""
        for old in self.dir.glob(f"{PREFIX}*"):
            if old == self._file or flocked(old):
                continue
            with contextlib.suppress(OSError):
                old.unlink()

    # -- keeping it --------------------------------------------------------------------
    def _renewing(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except LeaseLost:
                return
            except (sqlite3.Error, OSError) as exc:
                # a busy or slow disk: said (``Losable.on_renewal``); the next one tries again
                last = None
                with contextlib.suppress(OSError):
                    last = iso(os.fstat(self._fd).st_mtime)
                self._renewal_failed(str(exc) or type(exc).__name__, last)
                continue
            self._renewal_ok()

    def renew(self) -> None:
        """Touch this epoch's file, after checking the epoch is still ours (``LeaseLost``)."""
        if self.lost_error is not None:
            raise self.lost_error
        assert self._reader is not None
        row = Row.read(lambda sql: self._reader.execute(sql).fetchall())  # type: ignore[union-attr]
        if row is None or row.epoch != self.epoch:
            raise self._lose(row)
        os.utime(self._fd)

    def fence(self, db: Database) -> None:
        """Inside a write transaction: raise ``LeaseLost`` unless the epoch is still ours.
        One primary-key read, under the write lock: nothing commits after a takeover."""
        got = db.query("SELECT epoch FROM lease WHERE id = 1")
        if not got or got[0][0] != self.epoch:
            raise self._lose(Row.read(db.query))

    def _lose(self, row: Row | None) -> LeaseLost:
        if row is None:
            by = "somebody who removed it"
        elif row.holder.command.startswith("runbook unlock"):
            by = f"{row.holder.short()} (`{row.holder.command}` at {row.holder.started})"
        else:
            by = row.holder.describe()
        return self._lost_to(by)

    # -- giving it back ----------------------------------------------------------------
    def release(self, db: Database | None = None) -> None:
        """Stop renewing; mark the lease released (when it is still ours); drop the flock."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if db is not None and self.epoch is not None and self.lost_error is None:
            with contextlib.suppress(sqlite3.Error), db.transaction(fenced=False):
                db.execute(
                    "UPDATE lease SET released = ? WHERE id = 1 AND epoch = ?",
                    (iso(time.time()), self.epoch),
                )
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._fd >= 0:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.unlink()
            os.close(self._fd)
            self._fd = -1


def force(directory: Path, db: Database, command: str) -> tuple[Probe, int]:
    """``unlock --force``: advance the epoch (the holder, if any, is fenced) and mark the lease
    released. Returns what was there and the new epoch. Call under ``guard``. A holder
    inside a write (stopped before its COMMIT) keeps SQLite's write lock: that is exit 4
    naming it (``busy``), never an internal error."""
    try:
        with db.transaction(fenced=False):
            row = Row.read(db.query)
            seen = judge(directory, row, file_now(directory))
            epoch = (row.epoch if row else 0) + 1
            at = iso(time.time())
            me = Holder(socket.gethostname(), os.getpid(), user(), command, at)
            _set_row(db, epoch, me, row.seconds if row else DEFAULT_SECONDS, at)
    except sqlite3.OperationalError as exc:
        if dbm.busy(exc):
            raise busy(directory, db) from None
        raise
    return seen, epoch


def busy(directory: Path, db: Database) -> LockHeld:
    """Exit 4 when SQLite's write lock outlasted the busy timeout: another process is inside
    a write transaction (the lease's holder, stalled before its COMMIT, most likely). The
    holder is read outside any transaction (WAL: readers never wait on the writer)."""
    try:
        row = Row.read(db.query)
    except sqlite3.Error:
        row = None
    who = row.holder.describe() if row is not None else "another runbook process"
    return dbm.busy_error(directory, who)


@contextlib.contextmanager
def leased(
    state_dir: str | os.PathLike[str],
    name: str,
    masker: Masker,
    seconds: float = DEFAULT_SECONDS,
) -> Iterator[tuple[Store, Lease]]:
    """The state opened under this process's lease: taken under ``guard`` (or refused with
    exit 4), renewed by its thread, checked inside every write (``Store.fence_with``),
    released at the end."""
    directory = state_path(state_dir, name)
    lease = Lease(directory, seconds)
    with guard(directory):
        store = Store(state_dir, name, masker)
        try:
            lease.acquire(store.db)
            # the journal as of the takeover: what the old holder committed between the
            # Store's first fold and the takeover transaction (it was not fenced yet) is
            # folded in, so a step it started is seen running (then unknown, its leftovers
            # stopped) and never missed
            store.refresh()
        except BaseException:
            lease.release()
            store.close()
            raise
    store.fence_with(lease.fence)
    try:
        yield store, lease
    finally:
        lease.release(store.db)
        store.close()
