"""The run state on PostgreSQL (SPEC §8 "Backends"): the ``Database`` port over psycopg 3, and
the schema ``runbook`` that holds the state of many runbooks in one database.

The schema is versioned in ``runbook.meta`` (format, version) and created or migrated only by
``runbook state init URL`` (a role with CREATE on the database); every other command checks
it and refuses (exit 2) a database without it, or one written by a newer program. Operators'
roles need only USAGE on the schema, SELECT, INSERT, UPDATE on its tables and TEMPORARY on
the database (README); a writer checks them before it writes anything (``check_grants``).

Tables (every key starts with the runbook's name):

- ``state``: one row per runbook that has a state (made by the first command that writes);
- ``journal``: one row per record, ``(runbook, seq)`` its key; ``rec`` is the record's JSON as
  TEXT, byte for byte as written (never ``jsonb``: the audit chain hashes the stored text),
  ``hash`` its chain hash (``journal.py``);
- ``lease``: the holder of a runbook's lease, its epoch and the database time of its last
  renewal (``pglease.py``);
- ``outbox``: one row per message of a ``notify`` step (``outbox.py``), ``(runbook, run, step,
  attempt, recipient)`` unique (a message is queued once by constraint), delivered by the relay
  (``delivery.py``).
- ``cohort``, ``entity``, ``transition``, ``message`` (version 3): the ledger (``ledger.py``),
  the columns of the directory's tables (``schema.py``) with the runbook's name first.

The ledger's SQL is the directory's: each connection has temporary views named like the
directory's tables (``ledger_views``), each the runbook's rows of its table, whose ``runbook``
column defaults to the runbook's name; so ``SELECT … FROM entity`` and ``INSERT INTO
transition …`` mean this runbook's rows on either backend. What differs between the two
dialects is in ``dialect.py``.

A group commit is one transaction. Appenders of one runbook are serialised inside their
transaction by a transaction-level advisory lock, so that the previous hash and sequence
number read in it are the last ones; a lease holder's writes are fenced in the same
transaction (``fence``). A checkpoint of records only (no effects) is one statement, its own
transaction, one round trip (``FUSED_APPEND``, ``PgDatabase.append_once``): the fence, the
lock and the insert of records the client chained to the last record its connection wrote;
when another process appended since (``approve``, ``resolve``) or the epoch moved on, it writes
nothing and the checkpoint is written by the transaction, whose fence refuses a lost lease.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import StateError
from ..masking import mask_dsn
from .db import Database
from .location import shown

FORMAT = "runbook-state"
VERSION = 4

# version -> the statements that reach it from the version before
STEPS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE runbook.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE runbook.state (runbook TEXT PRIMARY KEY, created TEXT NOT NULL)",
        "CREATE TABLE runbook.journal (runbook TEXT NOT NULL REFERENCES runbook.state,"
        " seq BIGINT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL, rec TEXT NOT NULL,"
        " hash TEXT, PRIMARY KEY (runbook, seq))",
        # the lease of one runbook: who holds it, since when, renewed when (database clock),
        # and its epoch, bumped by every takeover (fencing)
        "CREATE TABLE runbook.lease (runbook TEXT PRIMARY KEY, epoch BIGINT NOT NULL DEFAULT 0,"
        ' host TEXT, pid INTEGER, "user" TEXT, started TIMESTAMPTZ, renewed_at TIMESTAMPTZ,'
        # proof: the holder's session holds the advisory lock (a holder that took over an
        # expired lease from a frozen one gets it only when that one's session ends)
        " lease_ms BIGINT, command TEXT, proof BOOLEAN NOT NULL DEFAULT false)",
    ),
    # the runbook's key for the keyed digests of its vars (``pinned.py``: never printed,
    # never journaled): one per runbook, as a state directory keeps its own in its meta
    2: ("ALTER TABLE runbook.state ADD COLUMN var_key TEXT",),
    # the ledger (ledger.py): the directory's tables (schema.py v2, v3's message.outbox), the
    # runbook first in every key. An entity's key is JSONB: the source's value with its type
    # (the number 1 and the text '1' are two keys, as SQLite's untyped column keeps them, and
    # come back as the same Python values), compared and indexed as one column; a text column
    # with a type beside it would need both in every join, index and parameter
    3: (
        "CREATE TABLE runbook.cohort (runbook TEXT NOT NULL REFERENCES runbook.state,"
        " name TEXT NOT NULL, frozen_at TEXT NOT NULL, run TEXT, digest TEXT NOT NULL,"
        " definition TEXT NOT NULL, summary TEXT NOT NULL, PRIMARY KEY (runbook, name))",
        "CREATE TABLE runbook.entity (runbook TEXT NOT NULL, cohort TEXT NOT NULL,"
        " key JSONB NOT NULL, wave TEXT, state TEXT NOT NULL, reason TEXT, stratum TEXT,"
        " rank BIGINT, attrs TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (runbook, cohort, key))",
        "CREATE INDEX entity_by_wave ON runbook.entity (runbook, cohort, wave, state)",
        "CREATE TABLE runbook.transition (runbook TEXT NOT NULL,"
        " seq BIGINT GENERATED BY DEFAULT AS IDENTITY, cohort TEXT NOT NULL, key JSONB NOT NULL,"
        " state TEXT NOT NULL, step TEXT, run TEXT, attempt INTEGER, reason TEXT,"
        " at TEXT NOT NULL, PRIMARY KEY (runbook, seq))",
        "CREATE INDEX transition_by_key ON runbook.transition (runbook, cohort, key)",
        "CREATE TABLE runbook.message (runbook TEXT NOT NULL,"
        " seq BIGINT GENERATED BY DEFAULT AS IDENTITY, cohort TEXT NOT NULL, key JSONB NOT NULL,"
        " step TEXT NOT NULL, attempt INTEGER NOT NULL, channel TEXT NOT NULL,"
        " message_id TEXT, state TEXT NOT NULL, at TEXT NOT NULL, outbox BIGINT,"
        " PRIMARY KEY (runbook, seq))",
        "CREATE UNIQUE INDEX message_once ON runbook.message"
        " (runbook, cohort, key, step, attempt, state)",
    ),
    # the outbox (``outbox.py``, ``delivery.py``), as the directory's ``schema.py`` version 3
    # holds it, keyed by the runbook's name first. ``id`` is an identity column (the queue's
    # order; an operator's INSERT needs no grant on its sequence). ``entity``: a message to a
    # cohort's member names its key as the ledger does (JSONB, version 3)
    4: (
        "CREATE TABLE runbook.outbox (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " runbook TEXT NOT NULL REFERENCES runbook.state, run TEXT NOT NULL,"
        " step TEXT NOT NULL, attempt TEXT NOT NULL, recipient TEXT NOT NULL, cohort TEXT,"
        " entity JSONB, channel TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,"
        " message_id TEXT NOT NULL, sender TEXT NOT NULL, address TEXT NOT NULL,"
        " name TEXT NOT NULL, locale TEXT, subject TEXT NOT NULL, body TEXT NOT NULL,"
        " headers TEXT NOT NULL, queued_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
        " claimed_by TEXT, UNIQUE (runbook, run, step, attempt, recipient))",
        # the relay's queue: a runbook's messages of one channel and state, in queue order
        "CREATE INDEX outbox_queue ON runbook.outbox (runbook, channel, state, id)",
    ),
}

# the ledger's tables, seen by each connection through a temporary view of the same name
LEDGER_TABLES = ("cohort", "entity", "transition", "message")


# the transaction-level lock that serialises the appenders of one runbook's journal
APPEND_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('runbook.journal:' || %s, 0))"
# the same, with the lease's epoch read under a share lock (a takeover waits for this
# transaction, and this one sees a takeover committed before it): ``pglease.fence``
FENCED_APPEND_LOCK = (
    "SELECT (SELECT epoch FROM runbook.lease WHERE runbook = %s FOR SHARE),"
    " pg_advisory_xact_lock(hashtextextended('runbook.journal:' || %s, 0))"
)

# One checkpoint in one statement, its own transaction (autocommit: no BEGIN, no COMMIT round
# trip), written by ``PgDatabase.append_once``: the lease's epoch read under a share lock (the
# fence), the appenders' lock, the journal's last record, and the insert of records chained
# by the client to the last record it wrote. The insert happens only when the epoch is the
# holder's and the last record is still the one the hashes were chained to; otherwise
# nothing is written and the caller writes in a transaction (``Store.flush``). The statement's
# snapshot is taken before the appenders' lock: an append committed by another process in
# between is not seen by ``last`` but collides on the key (runbook, seq), which aborts the
# whole statement (unique violation), so a record is never chained to a stale hash.
FUSED_APPEND = (
    "WITH fence AS MATERIALIZED (SELECT {epoch} AS epoch,"
    " pg_advisory_xact_lock(hashtextextended('runbook.journal:' || %(rb)s, 0)) AS locked),"
    " last AS MATERIALIZED (SELECT seq, hash FROM runbook.journal WHERE runbook = %(rb)s"
    " ORDER BY seq DESC LIMIT 1),"
    " ins AS (INSERT INTO runbook.journal (runbook, seq, at, kind, rec, hash)"
    " SELECT %(rb)s, v.seq, v.at, v.kind, v.rec, v.hash FROM (VALUES {values})"
    " AS v (seq, at, kind, rec, hash), fence"
    " WHERE fence.epoch IS NOT DISTINCT FROM %(epoch)s::bigint"
    " AND coalesce((SELECT seq FROM last), 0) = %(seq)s::bigint"
    " AND (SELECT hash FROM last) IS NOT DISTINCT FROM %(hash)s::text RETURNING 1)"
    " SELECT fence.epoch, (SELECT count(*) FROM ins) FROM fence"
)
_LEASE_EPOCH = "(SELECT epoch FROM runbook.lease WHERE runbook = %(rb)s FOR SHARE)"


def fused_append(fenced: bool, rows: int) -> str:
    """``FUSED_APPEND`` for ``rows`` records; ``fenced``: with the lease's epoch check (a
    writer without the lease, ``approve`` or ``resolve``, checks none)."""
    values = ", ".join(
        f"(%(s{i})s::bigint, %(a{i})s::text, %(k{i})s::text, %(r{i})s::text, %(h{i})s::text)"
        for i in range(rows)
    )
    return FUSED_APPEND.format(epoch=_LEASE_EPOCH if fenced else "NULL::bigint", values=values)


# the session's own search path, whatever the role's setting or the URL's `options` say: the
# ledger's unqualified names (``entity``, ``transition``…) are this session's temporary views
# (``ledger_views``), never a table of another schema; and a function or operator named
# unqualified (``hashtextextended``, ``->>``) is the system's, never one of another schema
# (PostgreSQL never looks functions up in ``pg_temp``, so only ``pg_catalog`` is searched for
# them). Every other name of the engine's SQL is qualified (``runbook.journal``)
SEARCH_PATH = "SET search_path = pg_temp, pg_catalog"

_PERCENT = re.compile(r"%[s%]|%")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StateError(
            "a PostgreSQL state needs psycopg 3: pip install 'runbook-engine[postgres]'"
        ) from None
    return psycopg


def application_name(what: str) -> str:
    """How this process's session shows itself to others (``pg_stat_activity``, which any
    role may read beside ``usename``, unlike the session's start): ``runbook WHAT T pid N
    @HOST``, cut to PostgreSQL's 63 bytes."""
    import os
    import socket

    text = f"runbook {what} {_now()[:19]}Z pid {os.getpid()} @{socket.gethostname()}"
    return text.encode()[:63].decode(errors="ignore")


def connect(url: str, name: str | None = None) -> Any:
    """An autocommit connection (transactions are explicit); exit 2 when it cannot be made,
    the password masked. ``name``: its ``application_name`` (``application_name``)."""
    psycopg = _psycopg()
    extra = {"application_name": name} if name else {}
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=15, **extra)
    except psycopg.Error as exc:
        # libpq may quote a password as typed (a value it cannot decode): masked by value
        reason = mask_dsn(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc), url)
        reason = shown(reason)
        raise StateError(f"{shown(url)}: cannot connect to the state database ({reason})") from None
    try:
        conn.execute(SEARCH_PATH)
    except psycopg.Error as exc:
        conn.close()
        reason = shown(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        raise StateError(f"{shown(url)}: cannot use the state database ({reason})") from None
    return conn


class PgDatabase(Database):
    """One connection to the state database, bound to one runbook; the SQLite port's
    semantics (one lock, nested ``transaction`` joins the outer one). ``?`` parameters are
    taken as psycopg's ``%s``."""

    dialect = "postgresql"

    def __init__(self, url: str, runbook: str, conn: Any) -> None:
        self.path = f"{shown(url)} (runbook {runbook})"  # type: ignore[assignment]
        self.url = url
        self.runbook = runbook
        self.pcon: Any = conn
        self.lock = threading.RLock()
        self._depth = 0
        self._appending = False  # this transaction holds the appenders' lock
        # set by the lease holder (``Store.fence_with``): raises (exit 4) inside a write
        # transaction whose lease epoch is no longer the holder's
        self.fence: Callable[[Database], None] | None = None
        self.write_errors = (_psycopg().OperationalError,)
        # (seq, hash) of the last record this connection wrote: ``append_once`` chains to it
        self._head: tuple[int, str] | None = None

    def connection_lost(self, exc: BaseException) -> bool:
        """The server ended this connection (a restart, a failover, ``pg_terminate_backend``)
        or it cannot be reached."""
        return isinstance(exc, _psycopg().OperationalError) and bool(
            self.pcon.closed or self.pcon.broken
        )

    @staticmethod
    def _sql(sql: str) -> str:
        # with parameters, the portable SQL's `?` become psycopg's `%s` and a literal `%` (LIKE
        # '%#rollback') is doubled, as psycopg reads it then (a `%s` or `%%` written for
        # psycopg is left as it is); without, psycopg sends the text as it is
        return _PERCENT.sub(lambda m: m.group() if len(m.group()) == 2 else "%%", sql).replace(
            "?", "%s"
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.lock, self._denied():
            return self.pcon.execute(self._sql(sql) if params else sql, params or None)

    @contextlib.contextmanager
    def _denied(self) -> Iterator[None]:
        try:
            yield
        except _psycopg().errors.InsufficientPrivilege as exc:
            raise denied(self.url, str(exc).strip().splitlines()[0]) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        with self.lock, self._denied():
            cur = self.pcon.cursor()
            cur.executemany(self._sql(sql), list(rows))
            return cur

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock, self._denied():
            rows: list[tuple[Any, ...]] = self.pcon.execute(
                self._sql(sql) if params else sql, params or None
            ).fetchall()
            return rows

    @contextlib.contextmanager
    def transaction(self, fenced: bool = True) -> Iterator[Database]:
        """One transaction (a nested one joins the outer one). ``fence``, when set
        (``Store.fence_with``), runs first inside it, as on SQLite: the lease's epoch read
        under a share lock and the runbook's appenders' lock, in one statement."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                with self._denied(), self.pcon.transaction():
                    if fenced and self.fence is not None:
                        self.fence(self)
                        self._appending = True
                    yield self
            finally:
                self._depth = 0
                self._appending = False

    def before_append(self) -> None:
        """Inside a write transaction: the runbook's appenders serialised (the last sequence
        number and hash read next are the last ones). A fenced transaction holds that lock
        already (the fence takes it in the same statement: one round trip per checkpoint)."""
        if not self._appending:
            self.pcon.execute(APPEND_LOCK, (self.runbook,))
            self._appending = True

    def appended(self, seq: int, hash_: str) -> None:
        self._head = (seq, hash_)

    def _epoch(self) -> tuple[bool, int | None] | None:
        """(fenced, the lease's epoch) for ``append_once``; None when the fence is not the
        lease's on PostgreSQL (or the lease is lost): the transaction path decides."""
        if self.fence is None:
            return False, None
        # ``PgLease.fence`` (bound): its check is the one ``FUSED_APPEND`` repeats
        owner: Any = getattr(self.fence, "__self__", None)
        if getattr(owner, "FUSED_FENCE", False) is not True:
            return None
        epoch = owner.epoch
        if not isinstance(epoch, int) or owner.lost_error is not None:
            return None
        return True, epoch

    def append_once(self, records: Sequence[dict[str, Any]]) -> int | None:
        """One round trip per checkpoint (``FUSED_APPEND``): fenced, serialised, chained to the
        last record this connection wrote and committed by the one statement. None, with
        nothing written, when it does not apply (no record written by this connection yet,
        inside a transaction, more than 1,000 records, another process appended since, the
        epoch moved on): the caller then writes in a transaction, whose fence says why."""
        from . import journal

        with self.lock:
            fence = self._epoch()
            if self._depth or self._head is None or fence is None or not 0 < len(records) <= 1000:
                return None
            seq, prev = self._head
            rows = journal.chained(seq, prev, records)
            params: dict[str, Any] = {"rb": self.runbook, "epoch": fence[1], "seq": seq,
                                      "hash": prev}  # fmt: skip
            for i, (s, a, k, r, h) in enumerate(rows):
                params.update({f"s{i}": s, f"a{i}": a, f"k{i}": k, f"r{i}": r, f"h{i}": h})
            psycopg = _psycopg()
            try:
                with self._denied():
                    got = self.pcon.execute(fused_append(fence[0], len(rows)), params).fetchone()
            except psycopg.errors.UniqueViolation:  # appended by another process meanwhile
                self._head = None
                return None
            if got is None or int(got[1]) != len(rows):
                self._head = None
                return None
            self._head = (rows[-1][0], rows[-1][4])
            return seq + 1

    def copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """``COPY … FROM STDIN`` of ``rows`` (text format; a value is its text, None is
        NULL): the bulk load, never one INSERT per row. Returns the rows sent."""
        n = 0
        with self.lock, self._denied():
            cur = self.pcon.cursor()
            with cur.copy(sql) as cp:
                for row in rows:
                    cp.write_row(row)
                    n += 1
        return n

    def clock(self) -> datetime:
        """The database clock (an approval's age is judged by it, as it is dated by it); this
        machine's when the database cannot be read (the next read or write says why)."""
        try:
            with self.lock:
                got = self.pcon.execute(
                    "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"
                ).fetchone()[0]
        except _psycopg().Error:
            return datetime.now(UTC)
        return datetime.fromtimestamp(float(got), UTC)

    def session_user(self) -> str:
        return str(self.query("SELECT session_user")[0][0])

    def close(self) -> None:
        with self.lock, contextlib.suppress(Exception):
            self.pcon.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def marker_dir(url: str, name: str) -> Path:
    """A stand-in for ``STATE_DIR/NAME`` where the engine needs a path that names the state
    (the marker of the commands a step starts, ``processes.py``); nothing is written there."""
    import hashlib

    key = hashlib.sha256(shown(url).encode()).hexdigest()[:16]
    return Path("/nonexistent-runbook-pg-state") / key / name


def denied(url: str, what: str) -> StateError:
    """A role without the grants an operator needs (exit 2, saying which)."""
    return StateError(
        f"{shown(url)}: the role may not use the runbook state ({what}); an operator's role "
        "needs USAGE on the schema runbook, SELECT, INSERT, UPDATE on its tables and "
        'TEMPORARY on the database (README: "A team\'s state on PostgreSQL")'
    )


def _not_initialised(url: str) -> StateError:
    return StateError(
        f"{shown(url)}: this database has no runbook state schema; create it with "
        f"`runbook state init {shown(url)}` (a role with CREATE on the database), then try "
        "again"
    )


def check_schema(conn: Any, url: str) -> int:
    """The schema's version; exit 2 when there is none, another format, or a newer one."""
    row = conn.execute(
        "SELECT CASE WHEN to_regnamespace('runbook') IS NULL THEN NULL"
        " ELSE has_schema_privilege('runbook', 'USAGE') END"
    ).fetchone()
    if row is not None and row[0] is False:
        raise denied(url, "USAGE on the schema runbook")
    row = conn.execute("SELECT to_regclass('runbook.meta')").fetchone()
    if row is None or row[0] is None:
        raise _not_initialised(url)
    psycopg = _psycopg()
    try:
        meta = dict(conn.execute("SELECT key, value FROM runbook.meta").fetchall())
    except psycopg.errors.InsufficientPrivilege as exc:
        raise denied(url, str(exc).strip().splitlines()[0]) from None
    if meta.get("format") != FORMAT:
        raise StateError(f"{shown(url)}: the schema runbook is not a runbook state schema")
    try:
        version = int(meta.get("version", "0"))
    except ValueError:
        version = -1
    if version > VERSION or version < 1:
        raise StateError(
            f"{shown(url)}: the state schema was written by another version of runbook "
            f"(schema {meta.get('version')}, this program knows {VERSION}); it was left "
            "untouched"
        )
    if version < VERSION:
        raise StateError(
            f"{shown(url)}: the state schema is at version {version}, this program needs "
            f"{VERSION}: migrate it with `runbook state init {shown(url)}`"
        )
    return version


def added_tables(before: int) -> list[str]:
    """The tables the migration from version ``before`` created: the operators' roles need
    their grants given again (``GRANT ... ON ALL TABLES`` covers the tables of its time)."""
    out: list[str] = []
    for version in range(before + 1, VERSION + 1):
        for stmt in STEPS[version]:
            if stmt.startswith("CREATE TABLE "):
                out.append(stmt.split()[2])
    return out


# the tables the steps create: anything else in the schema was put there by someone else
_TABLES = frozenset(
    stmt.split()[2].split(".", 1)[1]
    for stmts in STEPS.values()
    for stmt in stmts
    if stmt.startswith("CREATE TABLE runbook.")
)
# the role that runs `state init` owns the schema, or is a member of the role that does
# (never through being a superuser: a superuser is "a member" of every role)
_SCHEMA_OWNER = (
    "SELECT n.nspowner::regrole::text, current_user,"
    " n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) OR n.nspowner IN ("
    " WITH RECURSIVE m(roleid) AS (SELECT roleid FROM pg_auth_members WHERE member ="
    " (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    " UNION SELECT a.roleid FROM pg_auth_members a JOIN m ON a.member = m.roleid)"
    " SELECT roleid FROM m)"
    " FROM pg_namespace n WHERE n.nspname = 'runbook'"
)
# every object of the schema, with the table that owns it when it is a sequence (an identity
# column's: the state's own when its table is)
_SCHEMA_OBJECTS = (
    "SELECT c.relname, c.relkind::text, (SELECT t.relname FROM pg_depend d"
    " JOIN pg_class t ON t.oid = d.refobjid WHERE d.classid = 'pg_class'::regclass"
    " AND d.objid = c.oid AND d.deptype IN ('a', 'i') AND t.relnamespace = c.relnamespace"
    " LIMIT 1) FROM pg_class c WHERE c.relnamespace = 'runbook'::regnamespace"
    " AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
    " UNION ALL SELECT p.proname, 'function', NULL FROM pg_proc p"
    " WHERE p.pronamespace = 'runbook'::regnamespace"
    " UNION ALL SELECT t.typname, 'type', NULL FROM pg_type t"
    " WHERE t.typnamespace = 'runbook'::regnamespace AND t.typtype IN ('c', 'd', 'e', 'r')"
    " AND t.typrelid = 0"
)


def _refuse_foreign_schema(conn: Any, url: str) -> None:
    """Exit 2 when a schema ``runbook`` is there that ``state init`` did not create: owned by
    another role (it could drop or replace the tables the state trusts), or holding objects
    that are not the state's. Nothing is created in it."""
    row = conn.execute(_SCHEMA_OWNER).fetchone()
    if row is None:
        return  # no schema yet: created now, owned by this role
    owner, me, mine = str(row[0]), str(row[1]), bool(row[2])
    if not mine:
        raise StateError(
            f"{shown(url)}: the schema runbook is owned by the role {owner}, not by {me} (nor "
            f"a role {me} is a member of): `state init` never adopts a schema it did not "
            f"create (its owner can drop or replace the state's tables); it was left "
            f"untouched. Check who made it, then drop it (`DROP SCHEMA runbook`) or `ALTER "
            f"SCHEMA runbook OWNER TO {me}` and run `state init` again"
        )
    foreign = sorted(
        f"{name} ({kind})"
        for name, kind, table in conn.execute(_SCHEMA_OBJECTS).fetchall()
        if not (kind in ("r", "p") and name in _TABLES) and not (kind == "S" and table in _TABLES)
    )
    if foreign:
        shown_objects = ", ".join(foreign[:10]) + (" …" if len(foreign) > 10 else "")
        raise StateError(
            f"{shown(url)}: the schema runbook holds objects that are not the runbook state's "
            f"({shown_objects}); `state init` never creates the state beside them: it was left "
            "untouched. Move them out of the schema runbook, then run `state init` again"
        )


def init(url: str) -> tuple[int | None, int]:
    """Create or migrate the schema ``runbook`` (idempotent): (version before or None, now).
    A schema newer than the program is exit 2, left untouched."""
    conn = connect(url)
    psycopg = _psycopg()
    try:
        with conn.transaction():
            # one init at a time (two operators at once)
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('runbook.init', 0))")
            _refuse_foreign_schema(conn, url)
            conn.execute("CREATE SCHEMA IF NOT EXISTS runbook")
            exists = conn.execute("SELECT to_regclass('runbook.meta')").fetchone()[0]
            before: int | None = None
            if exists is not None:
                meta = dict(conn.execute("SELECT key, value FROM runbook.meta").fetchall())
                if meta.get("format") != FORMAT:
                    raise StateError(
                        f"{shown(url)}: the schema runbook holds something else (no runbook "
                        "state format in runbook.meta); it was left untouched"
                    )
                try:
                    before = int(meta.get("version", "0"))
                except ValueError:
                    before = -1
                if before > VERSION or before < 1:
                    raise StateError(
                        f"{shown(url)}: the state schema is at version {meta.get('version')}, "
                        f"newer than this program's ({VERSION}); it was left untouched: use "
                        "a newer runbook"
                    )
            start = before or 0
            for version in range(start + 1, VERSION + 1):
                for stmt in STEPS[version]:
                    conn.execute(stmt)
            if before is None:
                conn.execute(
                    "INSERT INTO runbook.meta (key, value) VALUES ('format', %s), ('version', %s)",
                    (FORMAT, str(VERSION)),
                )
            else:
                conn.execute(
                    "UPDATE runbook.meta SET value = %s WHERE key = 'version'", (str(VERSION),)
                )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StateError(
            f"{shown(url)}: cannot create the schema runbook ({str(exc).strip()}); "
            "`state init` needs a role with CREATE on the database"
        ) from None
    finally:
        conn.close()
    return before, VERSION


# tables a run writes after it has started (the ledger's from its waves, ``outbox.py``'s from
# its steps' threads): their grants are checked when a writer opens the state, before anything
# is written, since a table that `state init` adds has none until the database's owner grants
# them (README), and a grant may be revoked from one table only
CHECKED = (*LEDGER_TABLES, "outbox")


def check_temporary(conn: Any, url: str) -> None:
    """Exit 2 unless the role may create this session's temporary views (``ledger_views``):
    checked before anything is written."""
    row = conn.execute(
        "SELECT has_database_privilege(current_database(), 'TEMPORARY'), current_database()"
    ).fetchone()
    if not row[0]:
        raise denied(url, f"no TEMPORARY on the database {row[1]}")


def check_grants(conn: Any, url: str) -> None:
    """Exit 2 naming what the role lacks: TEMPORARY on the database, SELECT, INSERT, UPDATE
    on the ``CHECKED`` tables."""
    check_temporary(conn, url)
    names = [f"runbook.{table}" for table in CHECKED]
    rows = conn.execute(  # one round trip for every table, in CHECKED's order
        "SELECT t, has_table_privilege(t, 'SELECT'), has_table_privilege(t, 'INSERT'),"
        " has_table_privilege(t, 'UPDATE') FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, n)"
        " ORDER BY n",
        (names,),
    ).fetchall()
    for name, *grants in rows:
        missing = [
            p for p, ok in zip(("SELECT", "INSERT", "UPDATE"), grants, strict=True) if not ok
        ]
        if missing:
            raise denied(url, f"no {', '.join(missing)} on the table {name}")


def ledger_views(conn: Any, name: str) -> None:
    """This session's views of runbook ``name``'s ledger rows, named like the directory's
    tables (``pg_temp`` is searched first: ``SEARCH_PATH``): the ledger's SQL runs unchanged
    on both backends, and a row inserted through a view belongs to the runbook (the view's
    default)."""
    from psycopg import sql

    stmts = []
    for table in LEDGER_TABLES:
        stmts.append(
            sql.SQL(
                "CREATE TEMP VIEW {v} AS SELECT * FROM runbook.{t} WHERE runbook = {n};"
                " ALTER VIEW {v} ALTER COLUMN runbook SET DEFAULT {n};"
            ).format(
                v=sql.Identifier("pg_temp", table), t=sql.Identifier(table), n=sql.Literal(name)
            )
        )
    conn.execute(sql.SQL(" ").join(stmts))


def open_db(url: str, name: str, *, write: bool) -> PgDatabase | None:
    """The state of runbook ``name`` in the database at ``url``. For a writer, the runbook
    is registered (its state exists from now on); for a reader, None when it has no state."""
    conn = connect(url)
    try:
        check_schema(conn, url)
        db = PgDatabase(url, name, conn)
        if write:
            check_grants(conn, url)
            db.execute(
                "INSERT INTO runbook.state (runbook, created) VALUES (%s, %s) "
                "ON CONFLICT (runbook) DO NOTHING",
                (name, _now()),
            )
        elif not db.query("SELECT 1 FROM runbook.state WHERE runbook = %s", (name,)):
            conn.close()
            return None
        else:
            check_temporary(conn, url)
        with db._denied():
            ledger_views(conn, name)
        return db
    except BaseException:
        conn.close()
        raise


def session_user(url: str) -> str:
    """The database's name for whoever connects with ``url``: the identity on PostgreSQL."""
    conn = connect(url)
    try:
        return str(conn.execute("SELECT session_user").fetchone()[0])
    finally:
        conn.close()
