"""Who holds a runbook state's lease, as anyone may read it (``runbook lock``, ``status``,
and ``lease.py`` before it takes it): the ``lease`` row of ``state.db`` (epoch, holder,
duration, released) and the holder's file ``STATE_DIR/NAME/lease-EPOCH``, whose flock proves
the holder alive on this host and whose modification time is its last renewal. Times are
measured on the file system's clock (SPEC §11): "now" is the modification time of the
``lock`` file, touched by whoever takes the lease; a reader (``lock``, ``status``) takes it
from an anonymous file of that folder (``reader_now``), so that reading takes nothing and
changes nothing on disk, not even a modification time.

On PostgreSQL the same ``Probe`` is read from the ``runbook.lease`` row and its holder's
session, on the database clock (``pglease.read``); ``backend.probe`` reads either.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import LeaseLost
from .db import FILE

GUARD = "lock"  # flock held by a command while it opens the state; its mtime is "now"
PREFIX = "lease-"  # lease-EPOCH: flocked by that epoch's holder; its mtime is the last renewal
DEFAULT_SECONDS = 30.0

COLUMNS = "epoch, host, pid, user, command, started, seconds, released"


def iso(ts: float) -> str:
    """A timestamp as the state writes times: UTC, ISO 8601, milliseconds."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def user() -> str:
    """The OS user of this process, from the user database (never ``$USER``)."""
    from .identity import os_user

    return os_user()


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    user: str
    command: str
    started: str

    def describe(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid} since {self.started} (`{self.command}`)"

    def short(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid}"


@dataclass(frozen=True)
class Row:
    """The ``lease`` row: the current (or last) holder of the state."""

    epoch: int
    holder: Holder
    seconds: float
    released: str | None

    @classmethod
    def read(cls, query: Callable[[str], list[tuple[object, ...]]]) -> Row | None:
        rows = query(f"SELECT {COLUMNS} FROM lease WHERE id = 1")
        if not rows:
            return None
        epoch, host, pid, usr, command, started, seconds, released = rows[0]
        holder = Holder(str(host), int(str(pid)), str(usr), str(command), str(started))
        return cls(
            int(str(epoch)),
            holder,
            float(str(seconds)),
            None if released is None else str(released),
        )


@dataclass(frozen=True)
class Probe:
    """What a reader sees of the lease. ``state``: ``none`` (nobody holds it), ``held``,
    ``expired`` (not renewed for its duration: the next apply takes it over) or ``lost``
    (its holder's process is gone from this host)."""

    state: str
    epoch: int = 0
    holder: Holder | None = None  # the holder (state != none) or the last one
    seconds: float = DEFAULT_SECONDS
    renewed: str | None = None
    age: float | None = None  # seconds since it was taken, on the file's clock
    idle: float | None = None  # seconds since its last renewal, on the file's clock
    released: str | None = None

    @property
    def lost_since(self) -> str | None:
        """Since when the holder is lost: its last sign of life (its last renewal)."""
        return self.renewed if self.state in ("expired", "lost") else None

    def age_text(self) -> str:
        from ..format.durations import format_duration

        parts = []
        if self.age is not None:
            parts.append(f"held for {format_duration(max(0.0, self.age))}")
        if self.idle is not None:
            parts.append(f"renewed {format_duration(max(0.0, self.idle))} ago")
        parts.append(f"lease {_seconds(self.seconds)}")
        return ", ".join(parts)


def _seconds(seconds: float) -> str:
    from ..format.durations import format_duration

    return format_duration(seconds)


def shown_command(argv: list[str]) -> str:
    """The holder's command line as it is stored and shown: the values of ``--var`` and the
    passwords of URLs masked."""
    from ..masking import MASK, mask_url_passwords

    out: list[str] = ["runbook"]
    hide = False
    for arg in argv:
        if hide:
            name, sep, _ = arg.partition("=")
            arg, hide = (f"{name}={MASK}" if sep else MASK), False
        elif arg == "--var":
            hide = True
        elif arg.startswith("--var="):
            name, sep, _ = arg[len("--var=") :].partition("=")
            arg = f"--var={name}={MASK}" if sep else f"--var={MASK}"
        out.append(mask_url_passwords(arg))
    return " ".join(out)


def file_now(directory: Path) -> float:
    """Now on the clock of the state's file system: the mtime of the ``lock`` file, touched
    (a reader that may not touch it, or a state without one, uses this machine's clock)."""
    path = directory / GUARD
    try:
        os.utime(path, follow_symlinks=False)
        return os.lstat(path).st_mtime
    except OSError:
        return time.time()


def reader_now(directory: Path) -> float:
    """Now on the clock of the state's file system, read without changing anything there
    (``lock`` and ``status`` only read): the modification time of an anonymous file made in
    that folder (``O_TMPFILE``: never linked, gone when closed, the folder untouched); this
    machine's clock where the file system cannot make one (or the reader may not)."""
    flags = getattr(os, "O_TMPFILE", 0)
    if not flags:
        return time.time()
    try:
        fd = os.open(directory, flags | os.O_WRONLY, 0o600)
    except OSError:
        return time.time()
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def _fetch(con: sqlite3.Connection, sql: str) -> list[tuple[object, ...]]:
    return con.execute(sql).fetchall()


def _read_row(path: Path) -> tuple[bool, Row | None]:
    """Whether the state has a ``lease`` table, and its row, read without writing anything:
    with no write-ahead log beside it (no process has the database open), read as an
    immutable file (SQLite makes no ``-wal``/``-shm`` files for it, the folder untouched);
    otherwise through the log that is there. A read that fails the first way is made the
    second (a writer opened it meanwhile)."""
    from urllib.parse import quote

    wal = path.with_name(path.name + "-wal")
    uris = [f"file:{quote(str(path))}?mode=ro"]
    if not os.path.lexists(wal):
        uris.insert(0, f"file:{quote(str(path))}?mode=ro&immutable=1")
    for i, uri in enumerate(uris):
        try:
            con = sqlite3.connect(uri, uri=True, timeout=30.0)
        except sqlite3.Error:
            if i + 1 < len(uris):
                continue
            raise
        try:
            con.execute("PRAGMA query_only = ON")
            tables = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lease'"
            ).fetchall()
            row = Row.read(functools.partial(_fetch, con)) if tables else None
            return bool(tables), row
        except sqlite3.DatabaseError:
            if i + 1 < len(uris):
                continue
            raise
        finally:
            con.close()
    raise AssertionError("unreachable")


def flocked(path: Path) -> bool:
    """Whether a process holds the flock of ``path`` now (False when there is no file; True
    when it cannot be opened to tell, or is not a regular file: only expiry decides then).
    Opened without blocking and without following a symlink: a FIFO in its place is judged,
    never waited on."""
    fd = _open_regular(path)
    if fd is None:
        return os.path.lexists(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _open_regular(path: Path) -> int | None:
    """``path`` opened read-only when it is a regular file (no symlink followed, never
    blocking on a FIFO); None when it is missing, cannot be opened, or is something else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def judge(directory: Path, row: Row | None, now: float) -> Probe:
    """The lease as ``row`` and the epoch's file say, at ``now`` (the file's clock)."""
    if row is None:
        return Probe("none")
    if row.released:
        return Probe("none", row.epoch, row.holder, row.seconds, released=row.released)
    path = directory / f"{PREFIX}{row.epoch}"
    try:
        age: float | None = now - _ts(row.holder.started)
    except ValueError:  # not a time this program wrote
        age = None
    try:
        renewed = os.lstat(path).st_mtime
    except FileNotFoundError:  # its holder was gone before it could renew, or removed
        return Probe("lost", row.epoch, row.holder, row.seconds, row.holder.started, age)
    base = Probe("held", row.epoch, row.holder, row.seconds, iso(renewed), age, now - renewed)
    if row.holder.host == socket.gethostname() and not flocked(path):
        return _with(base, "lost")
    if now - renewed > row.seconds:
        return _with(base, "expired")
    return base


def _with(p: Probe, state: str) -> Probe:
    return Probe(state, p.epoch, p.holder, p.seconds, p.renewed, p.age, p.idle, p.released)


def probe(directory: Path) -> Probe:
    """The lease of a state, read without taking anything (``lock``, ``status``). A state
    of an earlier schema (no ``lease`` table) has the holder an earlier version wrote in the
    ``lock`` file it holds for its whole run (``earlier_holder``); a state that is not a
    database (or is damaged) is exit 2 (``StateError``), never "nobody holds it"."""
    from . import db as dbm

    path = directory / FILE
    if not path.exists():
        return Probe("none")
    try:
        tables, row = _read_row(path)
    except sqlite3.Error as exc:
        raise dbm.damaged(path, exc) from None
    if not tables:  # an older schema: no lease; a run of an earlier version holds `lock`
        old = earlier_holder(directory)
        if old is None:
            return Probe("none")
        try:
            age: float | None = reader_now(directory) - _ts(old.started)
        except ValueError:
            age = None
        return Probe("held", 0, old, DEFAULT_SECONDS, None, age)
    return judge(directory, row, reader_now(directory))


def earlier_holder(directory: Path) -> Holder | None:
    """The run of an earlier version of runbook holding the ``lock`` file (it holds its flock
    for its whole run, its holder written inside; this version never writes it), or None."""
    import json

    fd = _open_regular(directory / GUARD)
    if fd is None:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.read(fd, 65536)
        else:
            return None  # nobody holds it
        if not raw.strip():
            return None  # a command of this version opening the state, for a moment
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        return Holder(
            str(data["host"]),
            int(data["pid"]),
            str(data["user"]),
            f"{data.get('command', 'runbook')} — an earlier version of runbook, holding `lock`",
            str(data["started_at"]),
        )
    except (ValueError, KeyError, TypeError):
        return Holder("?", 0, "?", "a run of an earlier version of runbook, holding `lock`", "?")


class Losable:
    """What both leases (a directory's, PostgreSQL's) do when theirs is found lost: ``lost``
    is set once, ``lost_error`` is the one ``LeaseLost`` every later write raises, and the
    ``on_lost`` callbacks (cancel the running actions) run once, in the thread that found it.

    A renewal that fails (the disk or the database away, the lease row locked) is said at once
    to the ``on_renewal`` callbacks (``renewal_failed``, the reporter's notice and JSON event),
    and so is the first renewal that succeeds again (``renewal_recovered``); a lease found lost
    goes the ``on_lost`` way (exit 4)."""

    seconds: float

    def _init_lost(self) -> None:
        self.lost = threading.Event()
        self.lost_error: LeaseLost | None = None
        self._on_lost: list[Callable[[], None]] = []
        self._on_renewal: list[Callable[[str, str], None]] = []
        self._failing_since: float | None = None  # monotonic time of the first failure

    def on_renewal(self, callback: Callable[[str, str], None]) -> None:
        """``callback(state, text)`` runs (in the renewal thread) when a renewal fails
        (``renewal_failed``) and when one succeeds again (``renewal_recovered``)."""
        self._on_renewal.append(callback)

    def _renewal_said(self, state: str, text: str) -> None:
        for callback in self._on_renewal:
            with contextlib.suppress(Exception):
                callback(state, text)

    def _renewal_failed(self, reason: str, last: str | None) -> None:
        """A renewal failed: said once per stretch of failures."""
        if self._failing_since is not None:
            return
        self._failing_since = time.monotonic()
        since = f" at {last}" if last else ""
        self._renewal_said(
            "renewal_failed",
            f"the lease renewal failed ({reason}); the lease expires {_seconds(self.seconds)} "
            f"after its last renewal{since}, and another apply may then take it over: "
            "retrying at each renewal",
        )

    def _renewal_ok(self) -> None:
        """A renewal succeeded: said when it ends a stretch of failures."""
        if self._failing_since is None:
            return
        took = time.monotonic() - self._failing_since
        self._failing_since = None
        self._renewal_said(
            "renewal_recovered",
            f"the lease was renewed again after {_seconds(round(took, 1))} of failed renewals",
        )

    def on_lost(self, callback: Callable[[], None]) -> None:
        """``callback`` runs (in the renewal thread) when the lease is found lost."""
        self._on_lost.append(callback)
        if self.lost.is_set():
            callback()

    def _lost_to(self, by: str) -> LeaseLost:
        if self.lost_error is None:
            self.lost_error = LeaseLost(
                f"lost the lease of the state to {by}: this run started nothing more, "
                "cancelled its running actions and wrote nothing after losing it; see "
                "`runbook lock FILE` and `runbook status FILE`"
            )
            self.lost.set()
            for callback in self._on_lost:
                with contextlib.suppress(Exception):
                    callback()
        return self.lost_error
