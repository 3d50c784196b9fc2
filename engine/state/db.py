"""The state database of one runbook: ``STATE_DIR/NAME/state.db``.

SQLite in WAL mode with ``synchronous=FULL``: a transaction is durable when its COMMIT returns,
and a crash at any instant leaves the last committed transaction whole (no torn records to
tell apart from damage). The journal, the ledger and the outbox are tables of this one
database, so that a step's success and what it did to its customers commit together.

The SQL is kept portable (``?`` parameters, ``ON CONFLICT``, no SQLite-only types) behind
``Database``, the port the PostgreSQL backend implements too. The schema is versioned in the
``meta`` table; a database written by a newer program is refused (exit 2), never rewritten.

Files are created 0600 in 0700 folders, and a new folder or file is made durable by an fsync
of its parent directory (a crash right after creation must not lose it).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import files
from ..errors import LockHeld, StateError
from ..files import fsync_dir
from . import schema

FILE = "state.db"
FORMAT = "runbook-state"
SCHEMA_VERSION = schema.VERSION


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700, each new one synced into its parent."""
    try:
        files.private_dir(path)
    except (NotADirectoryError, FileExistsError):
        raise StateError(f"{path}: not a directory; the state cannot live there") from None


class Database:
    """A connection with one lock: statements from several threads never interleave inside a
    transaction. ``transaction()`` is ``BEGIN IMMEDIATE`` … ``COMMIT`` (or ROLLBACK).

    ``fence``, when set (``Store.fence_with``), runs first inside every write transaction,
    under the write lock: the lease's epoch check (``lease.py``), so that a writer that lost
    its lease commits nothing."""

    dialect = "sqlite"
    # the errors of a write that failed for the disk or the server, not for our own values
    write_errors: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

    def clock(self) -> datetime:
        """The clock the state's times are judged by: this machine's on a file (the
        database's on PostgreSQL)."""
        return datetime.now(UTC)

    def connection_lost(self, exc: BaseException) -> bool:
        """``exc`` (one of ``write_errors``) came from a connection that is gone: never on a
        file."""
        del exc
        return False

    def __init__(self, path: Path, con: sqlite3.Connection) -> None:
        self.path = path
        self.con = con
        self.lock = threading.RLock()
        self._depth = 0
        self.fence: Callable[[Database], None] | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.con.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        with self.lock:
            return self.con.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.con.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def transaction(self, fenced: bool = True) -> Iterator[Database]:
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self.con.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                if fenced and self.fence is not None:
                    self.fence(self)
                yield self
            except BaseException:
                self._depth = 0
                with contextlib.suppress(sqlite3.Error):
                    self.con.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self.con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.con.execute("ROLLBACK")
                raise

    def before_append(self) -> None:
        """Inside a write transaction, before the journal's last record is read: nothing on
        SQLite (``BEGIN IMMEDIATE`` serialises the writers already)."""

    def appended(self, seq: int, hash_: str) -> None:
        """``journal.append`` wrote up to record ``seq`` whose chain hash is ``hash_`` (in the
        caller's transaction): nothing on SQLite."""

    def append_once(self, records: Sequence[dict[str, Any]]) -> int | None:
        """Append ``records`` (masked, stamped) fenced, chained and committed by one statement,
        outside any transaction: the sequence number of the first, or None when this backend
        has no such statement or it could not be used (the caller then writes them in a
        transaction). SQLite's commit is local: none."""
        del records
        return None

    def close(self) -> None:
        with self.lock:
            self.con.close()


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=30.0, cached_statements=64
    )
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def busy(exc: BaseException) -> bool:
    """``exc`` is SQLite's "database is locked": another connection is inside a write
    transaction (a command writing, or a holder stopped before its COMMIT) and the busy
    timeout ran out. The state is healthy: it is busy, not damaged."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


def busy_error(path: Path, who: str = "another runbook command") -> LockHeld:
    """Exit 4: the state is busy (``busy``), never called damaged; nothing was changed."""
    return LockHeld(
        f"{path}: the state is busy: {who} is inside a write; try again (nothing was "
        "changed by this command)"
    )


def damaged(path: Path, exc: sqlite3.Error) -> StateError | LockHeld:
    """A state that cannot be read (exit 2), or, when SQLite only said it is busy, a state
    that is busy (exit 4, ``busy_error``)."""
    if busy(exc):
        return busy_error(path)
    return StateError(
        f"{path}: the state database cannot be read ({exc}); it was left untouched. Restore "
        "it from a backup, or move it away to start over (the runbook's steps would then run "
        "again)"
    )


def _check_meta(path: Path, db: Database, name: str) -> None:
    try:
        rows = dict(db.query("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc) or "not a database" in str(exc):
            raise StateError(
                f"{path}: not a runbook state database; it was left untouched"
            ) from None
        raise damaged(path, exc) from None
    if rows.get("format") != FORMAT:
        raise StateError(f"{path}: not a runbook state database; it was left untouched")
    if rows.get("runbook") != name:
        raise StateError(
            f"{path}: this state belongs to another runbook ({rows.get('runbook')!r}, not "
            f"{name!r}); use another --state-dir or rename the runbook"
        )
    try:
        version = int(rows.get("version", "0"))
    except ValueError:
        version = -1
    if version > SCHEMA_VERSION or version < 1:
        raise StateError(
            f"{path}: the state was written by another version of runbook (schema "
            f"{rows.get('version')}, this program knows {SCHEMA_VERSION}); it was left untouched"
        )


def open_existing(path: Path, name: str) -> Database:
    """Open a state database for reading and writing; raises StateError when it is not this
    runbook's state or cannot be read. Nothing is written by opening."""
    try:
        db = Database(path, _connect(path))
        _check_meta(path, db, name)
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from None
    return db


def open_reader(path: Path, name: str) -> Database:
    """Open a state database for reading only (``query_only``: any write is refused by SQLite
    itself); raises StateError as ``open_existing`` does."""
    db = open_existing(path, name)
    try:
        db.execute("PRAGMA query_only = ON")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise damaged(path, exc) from None
    return db


def setup(db: Database) -> None:
    """A writer's connection: the pragmas, and the schema brought to this program's."""
    pragmas(db)
    migrate(db)


def pragmas(db: Database) -> None:
    """WAL, and a commit durable when it returns."""
    try:
        mode = db.query("PRAGMA journal_mode = WAL")[0][0]
        db.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as exc:
        raise damaged(db.path, exc) from None
    if str(mode).lower() != "wal":
        raise StateError(f"{db.path}: the state database cannot use WAL mode ({mode})")


def migrate(db: Database) -> None:
    """Bring a database of an older schema to this program's, one version per transaction."""
    while needs_migration(db):
        with db.transaction():
            # read again inside the write transaction: a command beside this one (`approve`,
            # which takes no lock) may have migrated it meanwhile
            version = _version(db)
            if version >= SCHEMA_VERSION:
                break
            version += 1
            for stmt in schema.STEPS[version]:
                db.execute(stmt)
            db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(version),))


def _version(db: Database) -> int:
    return int(db.query("SELECT value FROM meta WHERE key = 'version'")[0][0])


def needs_migration(db: Database) -> bool:
    """The database is of an older schema than this program's (opening it for writing would
    migrate it)."""
    return _version(db) < SCHEMA_VERSION


def create(
    path: Path, name: str, at: str, fill: Callable[[Database], object] | None = None
) -> Database:
    """A new state database at ``path`` (its folder must exist), made whole before it gets its
    name: built 0600 under a temporary name (schema and meta in one transaction), closed,
    renamed into place, the folder synced. A crash at any instant leaves either no state or a
    complete empty one."""
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    db = Database(tmp, _connect(tmp))
    pragmas(db)
    with db.transaction():
        for version in sorted(schema.STEPS):
            for stmt in schema.STEPS[version]:
                db.execute(stmt)
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("format", FORMAT),
                ("version", str(SCHEMA_VERSION)),
                ("runbook", name),
                ("created", at),
            ],
        )
        if fill is not None:  # e.g. a journal of an earlier version: imported whole or not at all
            fill(db)
    db.close()  # the last connection: the WAL is checkpointed into the file and removed
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path.parent)
    db = open_existing(path, name)
    setup(db)
    return db
