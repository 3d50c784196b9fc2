"""The lock of a runbook's state on PostgreSQL, as a lease (SPEC §8 "Lease", §11).

The holder (host, pid, user = ``session_user``, started, command) is a row of
``runbook.lease``; its connection holds a session-level advisory lock on a key derived from the
runbook's name as proof of life (the server drops it when the session ends, however the
process died). ``renewed_at`` is set by the database clock from a renewal thread every
min(5 s, lease/3). A lease is taken over:

- at once when the advisory lock is free (the holder is provably gone), with a notice;
- else after expiry (``now() - renewed_at > lease``, on the database clock), with a notice
  naming the lost holder;
- otherwise refused: ``LockHeld`` (exit 4) naming the holder.

Every takeover bumps ``epoch``. ``fence`` runs inside each journal write transaction of the
holder (``SELECT epoch … FOR SHARE``): when the epoch is no longer its own, ``LeaseLost`` (exit
4) is raised there, the transaction rolls back and nothing is written; the run stops.

The class offers ``acquire``/``release``/``fence``/``probe``, the shape the directory's lease
can share.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import LockHeld
from ..masking import mask_url_passwords
from . import pg


class LeaseLost(LockHeld):
    """The lease was taken over by another holder: this run writes nothing more (exit 4)."""


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


_HOLDER = (
    "SELECT host, pid, \"user\", to_char(started AT TIME ZONE 'UTC',"
    ' \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'), command,'
    " to_char(renewed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    " EXTRACT(EPOCH FROM clock_timestamp() - renewed_at), epoch, lease_ms, proof"
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


def interval(lease: float) -> float:
    """How often the holder renews: min(5 s, lease/3)."""
    return min(5.0, lease / 3.0)


class PgLease:
    def __init__(
        self, url: str, name: str, lease: float = 30.0, command: str | None = None
    ) -> None:
        self.url = url
        self.name = name
        self.lease = lease
        self.command = mask_url_passwords(command or " ".join(["runbook", *sys.argv[1:]]))
        self.conn: Any = None
        self.epoch: int | None = None
        self.notice: str | None = None
        self.lost: str | None = None
        self.user = ""
        self.proof = False  # this session holds the advisory lock
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking it --------------------------------------------------------------------
    def acquire(self) -> PgLease:
        conn = pg.connect(self.url)
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
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()
        return self

    def _take(self, conn: Any) -> None:
        alive_free = bool(
            conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_key(self.name),)
            ).fetchone()[0]
        )
        self.proof = alive_free
        psycopg = pg._psycopg()
        try:
            with conn.transaction():
                self._swap(conn, alive_free)
        except psycopg.errors.LockNotAvailable:
            raise LockHeld(
                "the state's lease is locked by a writer in the middle of a transaction "
                "(a stopped process?); try again later"
            ) from None

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
        if old is None and not alive_free:
            raise LockHeld(
                f"the state of {self.name} is being locked by another process right now; try again"
            )
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
        elif old is not None:
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
    def _renew_loop(self) -> None:
        while not self._stop.wait(interval(self.lease)):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Renew on the database clock; False (and ``lost`` set) when the epoch moved on."""
        with self._mutex:
            if self.conn is None or self.lost is not None:
                return False
            try:
                cur = self.conn.execute(
                    "UPDATE runbook.lease SET renewed_at = clock_timestamp()"
                    " WHERE runbook = %s AND epoch = %s",
                    (self.name, self.epoch),
                )
                if cur.rowcount == 1:
                    if not self.proof:  # the proof of life, once a lost holder's session ends
                        self._take_proof()
                    return True
                self.lost = self._lost_to()
            except Exception:  # noqa: BLE001 - the server away: the next write decides
                return True
            return False

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

    def _lost_to(self) -> str:
        row = self.conn.execute(_HOLDER, (self.name,)).fetchone()
        who = _holder(row)
        return f"lease lost to {who.describe() if who else 'another holder'}"

    def fence(self, db: pg.PgDatabase) -> None:
        """Inside a write transaction: the epoch is still ours, or ``LeaseLost`` (exit 4)
        and the transaction writes nothing."""
        row = db.pcon.execute(pg.FENCED_APPEND_LOCK, (self.name, db.runbook)).fetchone()
        if row is None or row[0] is None or int(row[0]) != self.epoch:
            holder = _holder(db.pcon.execute(_HOLDER, (self.name,)).fetchone())
            self.lost = (
                f"lease lost to {holder.describe() if holder else 'another holder'}: this run "
                "wrote nothing more and starts nothing more"
            )
            raise LeaseLost(self.lost)

    # -- giving it back ---------------------------------------------------------------
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
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


def probe(url: str, name: str) -> tuple[PgHolder | None, bool | None]:
    """Who holds a runbook's lease, without taking it: (holder, alive). ``alive`` is False
    when the holder's session is gone or its lease expired, True otherwise; (None, None)
    when nobody holds it."""
    conn = pg.connect(url)
    try:
        pg.check_schema(conn, url)
        row = conn.execute(_HOLDER, (name,)).fetchone()
        holder = _holder(row)
        if holder is None:
            return None, None
        free = bool(
            conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_key(name),)
            ).fetchone()[0]
        )
        if free:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_key(name),))
            if row[9]:  # it held the lock, and its session is gone
                return holder, False
        lease = float(row[8]) / 1000.0 if row[8] is not None else 30.0
        return holder, holder.age <= lease
    finally:
        conn.close()


def force_release(url: str, name: str) -> str:
    """``unlock --force`` on PostgreSQL: the holder cleared and the epoch advanced (a holder
    still writing is fenced); refused while the holder's session is alive. Returns who held
    it."""
    holder, alive = probe(url, name)
    if holder is not None and alive:
        raise LockHeld(
            f"the lease is held by {holder.describe()}, whose session is alive and renewing "
            "it: stop that run instead of forcing the lease"
        )
    conn = pg.connect(url)
    try:
        conn.execute(
            "UPDATE runbook.lease SET epoch = epoch + 1, host = NULL, pid = NULL,"
            ' "user" = NULL, started = NULL, renewed_at = NULL, command = NULL,'
            " proof = false WHERE runbook = %s",
            (name,),
        )
    finally:
        conn.close()
    return holder.describe() if holder else "nobody (the lease was already clear)"
