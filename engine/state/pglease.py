"""The lease of a runbook's state on PostgreSQL (SPEC §8 "Lease", §11).

The holder (host, pid, user = ``session_user``, started, command) is a row of
``runbook.lease``; its connection holds a session-level advisory lock on a key derived from the
runbook's name as proof of life (the server drops it when the session ends, however the
process died). ``renewed_at`` is set by the database clock from a renewal thread every
min(5 s, lease/3). A lease is taken over:

- at once when the advisory lock is free (the holder is provably gone), with a notice;
- else after expiry (``now() - renewed_at > lease``, on the database clock), with a notice
  naming the lost holder;
- otherwise refused: ``LockHeld`` (exit 4) naming the holder.

Every takeover (and ``unlock --force``) bumps ``epoch``. ``fence`` runs first inside each
write transaction of the holder (``Store.fence_with``, ``Database.transaction``: ``SELECT epoch
… FOR SHARE`` with the appenders' lock, one statement): when the epoch is no longer its own,
``LeaseLost`` (exit 4) is raised there, the transaction rolls back and nothing is written; the
run stops. A checkpoint written by one statement (``pg.FUSED_APPEND``) reads the epoch the same
way and inserts nothing when it is not this holder's; the transaction that follows raises.

``PgLease`` has the shape of the directory's ``Lease`` (``lease.py``): ``acquire``, ``fence``,
``release``, ``probe``, ``notice``, ``took_over``, ``lost``/``lost_error`` and ``on_lost``;
``backend.leased`` picks one or the other. ``read`` is the lease as anyone reads it (``runbook
lock``, ``status``), as ``holder.Probe``. ``approve`` and ``resolve`` never take it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput, LeaseLost, LockHeld
from ..masking import mask_url_passwords
from . import pg
from .db import Database
from .holder import DEFAULT_SECONDS, Holder, Losable, Probe, shown_command
from .location import shown


@dataclass
class PgHolder:
    host: str
    pid: int
    user: str
    started: str
    command: str
    renewed: str
    age: float  # seconds since the last renewal, database clock

    def describe(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid} since {self.started} (`{self.command}`)"

    def as_holder(self) -> Holder:
        return Holder(self.host, self.pid, self.user, self.command, self.started)


_HOLDER = (
    "SELECT host, pid, \"user\", to_char(started AT TIME ZONE 'UTC',"
    ' \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'), command,'
    " to_char(renewed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    " EXTRACT(EPOCH FROM clock_timestamp() - renewed_at), epoch, lease_ms, proof,"
    " EXTRACT(EPOCH FROM clock_timestamp() - started)"
    " FROM runbook.lease WHERE runbook = %s"
)


def _key(name: str) -> str:
    return "runbook.lease:" + name


def _holder(row: Any) -> PgHolder | None:
    if row is None or row[0] is None:
        return None
    return PgHolder(
        str(row[0]), int(row[1] or 0), str(row[2]), str(row[3]), str(row[4] or ""),
        str(row[5]), float(row[6] or 0.0),
    )  # fmt: skip


def _taken_by(row: Any) -> str:
    """Who took the lease: its holder, or ``unlock --force`` (which leaves no holder, only
    who forced it and when)."""
    holder = _holder(row)
    if holder is not None:
        return holder.describe()
    if row is not None and str(row[4] or "").startswith("runbook unlock"):
        return f"{row[2]} (`{row[4]}` at {row[3]})"
    return "another holder"


class _SessionGone(Exception):
    """The lease's session no longer holds its advisory lock."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return shown(text.splitlines()[0] if text else type(exc).__name__)


def _warn(text: str) -> None:
    """A notice from the renewal thread (no reporter there): on stderr, as errors are."""
    with contextlib.suppress(Exception):
        print(f"runbook: notice: {mask_url_passwords(text)}", file=sys.stderr, flush=True)


def interval(lease: float) -> float:
    """How often the holder renews: min(5 s, lease/3)."""
    return min(5.0, lease / 3.0)


class PgLease(Losable):
    """This process's lease on one runbook's state on PostgreSQL: ``acquire``, a renewal
    thread, ``fence`` inside every write transaction, ``release``."""

    # ``fence`` is the epoch check on ``runbook.lease`` that ``pg.FUSED_APPEND`` repeats
    FUSED_FENCE = True

    def __init__(
        self, url: str, name: str, lease: float = DEFAULT_SECONDS, command: str | None = None
    ) -> None:
        self.url = url
        self.name = name
        self.lease = lease
        self.seconds = lease
        self.command = mask_url_passwords(command or shown_command(sys.argv[1:]))
        self.conn: Any = None
        self.epoch: int | None = None
        self.notice: str | None = None
        self.took_over: Holder | None = None  # the holder it was taken from
        self._init_lost()
        self.user = ""
        self.renewed: str | None = None  # the last renewal, database clock
        self.proof = False  # this session holds the advisory lock
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed: float | None = None  # monotonic time of the last renewal

    def probe(self) -> Probe:
        """The lease of this runbook as a reader sees it (``read``)."""
        return read(self.url, self.name)

    # -- taking it --------------------------------------------------------------------
    def acquire(self, db: Database | None = None) -> PgLease:
        """Take the lease on its own connection (``db``, the store's, is not used: the lease
        is taken before the state is opened), or raise ``LockHeld`` (exit 4) naming the
        holder."""
        del db
        conn = pg.connect(self.url, pg.application_name("lease"))
        try:
            pg.check_schema(conn, self.url)
            self._take(conn)
        except pg._psycopg().errors.InsufficientPrivilege as exc:
            conn.close()
            raise pg.denied(self.url, str(exc).strip().splitlines()[0]) from None
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        # a renewal never waits on the lease row longer than its interval (another session
        # holding it locked): it fails, and the failure is said (``Losable._renewal_failed``)
        with contextlib.suppress(Exception):
            conn.execute(f"SET lock_timeout = '{max(1, int(self.interval * 1000))}ms'")
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()
        return self

    def _take(self, conn: Any) -> None:
        """Take it, or ``LockHeld``. Another process taking it at this instant (its session
        holds the advisory lock, its holder row not committed yet) is waited for a moment
        (``RACE_WAIT``): then its row names it (refused as any live holder is); if it never
        comes, the refusal names the session that holds the advisory lock."""
        psycopg = pg._psycopg()
        deadline = time.monotonic() + RACE_WAIT
        while True:
            alive_free = bool(
                conn.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_key(self.name),)
                ).fetchone()[0]
            )
            self.proof = alive_free
            try:
                with conn.transaction():
                    self._swap(conn, alive_free)
                return
            except psycopg.errors.LockNotAvailable:
                raise _busy(conn, self.name) from None
            except _Racing:
                if time.monotonic() > deadline:
                    raise _racing(conn, self.name) from None
                time.sleep(0.1)

    def _swap(self, conn: Any, alive_free: bool) -> None:
        conn.execute("SET LOCAL lock_timeout = '10s'")
        conn.execute(
            "INSERT INTO runbook.lease (runbook) VALUES (%s) ON CONFLICT (runbook) DO NOTHING",
            (self.name,),
        )
        row = conn.execute(_HOLDER + " FOR UPDATE", (self.name,)).fetchone()
        old = _holder(row)
        lease_ms = row[8]
        if old is not None and alive_free and not row[9]:
            # the holder never held the advisory lock (it took over from a frozen holder
            # whose session ended since): a free lock proves nothing, its lease decides
            alive_free = False
        forced = old is None and str(row[4] or "").startswith("runbook unlock")
        if old is None and not alive_free and forced:
            # `unlock --force` fenced the last holder (its epoch is gone) whose session still
            # holds the advisory lock (a frozen process): that lock proves nothing about the
            # new epoch. Taken without the proof; it comes when that session ends.
            self.notice = (
                f"took the lease cleared by {_taken_by(row)}; the session of the holder it "
                "fenced is still open (that process stops at its next renewal or write)"
            )
        elif old is None and not alive_free:
            raise _Racing  # another process is taking it right now: `_take` waits a moment
        if old is not None and not alive_free:
            held_for = (float(lease_ms) / 1000.0) if lease_ms is not None else self.lease
            if old.age <= held_for:
                raise LockHeld(
                    f"the state is locked by {old.describe()}; its lease was renewed "
                    f"{old.age:.1f}s ago (lease {held_for:g}s)"
                )
            self.notice = (
                f"took over the lease of {old.describe()}: not renewed for {old.age:.1f}s "
                f"(lease {held_for:g}s); that run is lost and will stop at its next write"
            )
            self.took_over = old.as_holder()
        elif old is not None:
            self.took_over = old.as_holder()
            self.notice = (
                f"took over the lease of {old.describe()}: its session is gone (the "
                "process ended without releasing it)"
            )
        me = conn.execute(
            "UPDATE runbook.lease SET epoch = epoch + 1, host = %s, pid = %s,"
            ' "user" = session_user, started = clock_timestamp(),'
            " renewed_at = clock_timestamp(), lease_ms = %s, command = %s, proof = %s"
            ' WHERE runbook = %s RETURNING epoch, "user"',
            (socket.gethostname(), os.getpid(), int(self.lease * 1000), self.command,
             self.proof, self.name),
        ).fetchone()  # fmt: skip
        self.epoch, self.user = int(me[0]), str(me[1])

    # -- keeping it -------------------------------------------------------------------
    @property
    def interval(self) -> float:
        return interval(self.lease)

    def _lose(self, by: str) -> LeaseLost:
        return self._lost_to(by)

    def _renew_loop(self) -> None:
        while not self._stop.wait(interval(self.lease)):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Renew on the database clock; False (and ``lost`` set) when the lease is lost: the
        epoch moved on, or the session that holds the advisory lock (the proof of life) ended.

        A session that ended is never taken again: anyone may take a lease over at once when
        its holder's advisory lock is free (SPEC §11), so the run stops (exit 4). It reads the
        lease on a new connection until the lease expires, to name who took it over. A
        transient error on a live session is retried at the next renewal until the lease
        expires; a failed renewal is said, as is the first that succeeds again
        (``Losable.on_renewal``)."""
        psycopg = pg._psycopg()
        failed: str | None = None
        with self._mutex:
            if self.conn is None or self.lost_error is not None:
                return False
            if self._renewed is None:
                self._renewed = time.monotonic()
            try:
                if self.proof and not self._holds_lock():
                    raise _SessionGone("its session no longer holds the lease's advisory lock")
                cur = self.conn.execute(
                    "UPDATE runbook.lease SET renewed_at = clock_timestamp()"
                    " WHERE runbook = %s AND epoch = %s RETURNING"
                    " to_char(renewed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                    (self.name, self.epoch),
                )
                row = cur.fetchone()
                if row is not None:
                    self.renewed = str(row[0])
                    if not self.proof:  # the proof of life, once a lost holder's session ends
                        self._take_proof()
                    self._renewed = time.monotonic()
                    by = None
                else:
                    by = _taken_by(self.conn.execute(_HOLDER, (self.name,)).fetchone())
            except (psycopg.Error, _SessionGone) as exc:
                gone = isinstance(exc, _SessionGone) or bool(self.conn.closed or self.conn.broken)
                reason = _first_line(exc)
                if not gone and time.monotonic() - self._renewed <= self.lease:
                    failed, by = reason, None  # retried at the next renewal
                else:
                    _warn(
                        f"could not renew the lease of the state of {self.name} ({reason}): "
                        + ("its session ended, " if gone else "")
                        + "the lease is no longer proven; this run stops"
                    )
                    by = self._who_took(reason, gone)
        # outside the mutex: the callbacks may take their own locks
        if failed is not None:
            self._renewal_failed(failed, self.renewed)
            return True
        if by is None:
            self._renewal_ok()
            return True
        self._lose(by)
        return False

    def _holds_lock(self) -> bool:
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks, hashtextextended(%s, 0) AS k"
            " WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
            " AND objsubid = 1 AND classid::bigint = ((k >> 32) & 4294967295)"
            " AND objid::bigint = (k & 4294967295))",
            (_key(self.name),),
        ).fetchone()
        return bool(row and row[0])

    def _who_took(self, reason: str, gone: bool = True) -> str:
        """Who took the lease over, read on new connections until it expires (the run is
        stopping either way); else why it is lost."""
        with contextlib.suppress(Exception):
            self.conn.close()
        deadline = (self._renewed or time.monotonic()) + self.lease + 1.0
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                conn = pg.connect(self.url)
                try:
                    row = conn.execute(_HOLDER, (self.name,)).fetchone()
                finally:
                    conn.close()
                if row is None or row[7] is None or int(row[7]) != self.epoch:
                    return _taken_by(row)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not gone:
            return f"nobody yet: it expired unrenewed ({reason}), so anyone may take it over"
        return f"nobody yet: its session ended ({reason}), so anyone may take it over at once"

    def _take_proof(self) -> None:
        got = self.conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_key(self.name),)
        ).fetchone()
        if got is not None and got[0]:
            self.proof = True
            self.conn.execute(
                "UPDATE runbook.lease SET proof = true WHERE runbook = %s AND epoch = %s",
                (self.name, self.epoch),
            )

    def fence(self, db: Database) -> None:
        """First inside a write transaction (``Store.fence_with``): the epoch is still ours,
        or ``LeaseLost`` (exit 4) and the transaction writes nothing. The appenders' lock is
        taken in the same statement."""
        assert isinstance(db, pg.PgDatabase)
        if self.lost_error is not None:  # found lost at a renewal, whatever the epoch says now
            raise self.lost_error
        row = db.pcon.execute(pg.FENCED_APPEND_LOCK, (self.name, db.runbook)).fetchone()
        if row is None or row[0] is None or int(row[0]) != self.epoch:
            raise self._lose(_taken_by(db.pcon.execute(_HOLDER, (self.name,)).fetchone()))

    # -- giving it back ---------------------------------------------------------------
    def release(self, db: Database | None = None) -> None:
        """Stop renewing; clear the holder (when the lease is still ours); close the session
        (its advisory lock goes with it)."""
        del db
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._mutex:
            if self.conn is None:
                return
            with contextlib.suppress(Exception):
                self.conn.execute(
                    'UPDATE runbook.lease SET host = NULL, pid = NULL, "user" = NULL,'
                    " started = NULL, renewed_at = NULL, command = NULL, proof = false"
                    " WHERE runbook = %s AND epoch = %s",
                    (self.name, self.epoch),
                )
            with contextlib.suppress(Exception):
                self.conn.close()  # the advisory lock goes with the session
            self.conn = None

    def __enter__(self) -> PgLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def judge(conn: Any, name: str) -> Probe:
    """The lease of runbook ``name`` as its row and the holder's session say, on the
    database clock: ``held``, ``expired`` (not renewed for its lease), ``lost`` (its session
    is gone) or ``none``."""
    row = conn.execute(_HOLDER, (name,)).fetchone()
    if row is None:
        return Probe("none")
    epoch = int(row[7] or 0)
    holder = _holder(row)
    seconds = float(row[8]) / 1000.0 if row[8] is not None else DEFAULT_SECONDS
    if holder is None:
        return Probe("none", epoch, None, seconds)
    age = float(row[10]) if row[10] is not None else None
    base = (epoch, holder.as_holder(), seconds, holder.renewed, age, holder.age)
    free = bool(
        conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_key(name),)
        ).fetchone()[0]
    )
    if free:
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_key(name),))
        if row[9]:  # it held the lock, and its session is gone
            return Probe("lost", *base)
    if holder.age > seconds:
        return Probe("expired", *base)
    return Probe("held", *base)


def read(url: str, name: str) -> Probe:
    """The lease of a runbook's state on PostgreSQL, read without taking it (``runbook
    lock``, ``status``); ``none`` when the runbook has no lease row."""
    conn = pg.connect(url)
    try:
        pg.check_schema(conn, url)
        return judge(conn, name)
    finally:
        conn.close()


def force(url: str, name: str, command: str) -> tuple[Probe, int]:
    """``unlock --force`` on PostgreSQL: the holder cleared and the epoch advanced (a holder
    still writing is fenced), as on a directory. Returns what was there and the new epoch."""
    conn = pg.connect(url)
    try:
        pg.check_schema(conn, url)
        if not conn.execute("SELECT 1 FROM runbook.state WHERE runbook = %s", (name,)).fetchall():
            raise InvalidInput(f"no state of {name} in {shown(url)}: nothing to clear")
        with conn.transaction():
            # a holder stopped inside a write keeps its row lock: exit 4 naming it, not a wait
            conn.execute("SET LOCAL lock_timeout = '10s'")
            conn.execute(
                "INSERT INTO runbook.lease (runbook) VALUES (%s) ON CONFLICT (runbook) DO NOTHING",
                (name,),
            )
            conn.execute("SELECT 1 FROM runbook.lease WHERE runbook = %s FOR UPDATE", (name,))
            seen = judge(conn, name)
            # no holder any more; who forced it, and when, stay (the fenced run names them)
            epoch = conn.execute(
                "UPDATE runbook.lease SET epoch = epoch + 1, host = NULL, pid = NULL,"
                ' "user" = session_user, started = clock_timestamp(), renewed_at = NULL,'
                " command = %s, proof = false WHERE runbook = %s RETURNING epoch",
                (mask_url_passwords(command), name),
            ).fetchone()[0]
    except pg._psycopg().errors.LockNotAvailable:
        raise _busy(conn, name) from None
    except pg._psycopg().errors.InsufficientPrivilege as exc:
        raise pg.denied(url, str(exc).strip().splitlines()[0]) from None
    finally:
        conn.close()
    return seen, int(epoch)


RACE_WAIT = 5.0  # seconds a taker waits for another one taking the lease at this instant


class _Racing(Exception):
    """Nobody holds the lease, but another session holds its advisory lock: it is being
    taken (or released) at this instant."""


def _racing(conn: Any, name: str) -> LockHeld:
    """Exit 4 when another session kept the lease's advisory lock without a holder row for
    ``RACE_WAIT``: named by its role and its ``application_name`` (``runbook lease T pid N
    @HOST`` for a runbook process; ``pg_stat_activity`` shows any role both), with the last
    holder the row names."""
    who = "another session"
    try:
        row = conn.execute(
            "SELECT a.usename, a.application_name FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " CROSS JOIN (SELECT hashtextextended(%s, 0) AS k) key"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid::text::bigint = (key.k >> 32) & 4294967295"
            " AND l.objid::text::bigint = key.k & 4294967295 AND l.objsubid = 1"
            " AND l.pid <> pg_backend_pid() LIMIT 1",
            (_key(name),),
        ).fetchone()
        if row is not None:
            user, app = (str(row[0]) if row[0] else "?"), str(row[1] or "").strip()
            who = f"{user} ({app})" if app else f"{user} (a session without a name)"
        last = conn.execute(_HOLDER, (name,)).fetchone()
    except pg._psycopg().Error:  # the refusal is said whatever the read gives
        last = None
    before = ""
    if last is not None and last[4]:
        before = f"; the lease was last taken by {last[2]} (`{last[4]}` at {last[3]})"
    return LockHeld(
        f"the state of {name} is being taken right now by {who}: its session holds the "
        f"lease's lock, and no holder was recorded in {RACE_WAIT:g}s{before}; try again, "
        "and see `runbook lock FILE`"
    )


def writer(conn: Any, name: str) -> str:
    """Who is inside a write when a lock stays taken past ``lock_timeout``: the lease's
    holder (stopped inside a write, most likely), read without waiting (a plain read never
    waits on a row lock), or "another runbook process"."""
    try:
        seen = judge(conn, name)
        return seen.holder.describe() if seen.holder is not None else "another runbook process"
    except pg._psycopg().Error:  # the refusal is said whatever the read gives
        return "another runbook process"


def busy_error(name: str, who: str, more: str = "") -> LockHeld:
    """Exit 4: the state is busy, ``who`` inside a write."""
    also = f" ({more})" if more else ""
    return LockHeld(f"the state of {name} is busy: {who} is inside a write{also}; try again")


def _busy(conn: Any, name: str) -> LockHeld:
    """Exit 4 when the lease row stays locked past ``lock_timeout`` (a takeover, ``unlock
    --force``), naming the writer (``writer``)."""
    return busy_error(name, writer(conn, name))
