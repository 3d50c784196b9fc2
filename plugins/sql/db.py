"""Database connections for the SQL actions, ``check`` and ``notify``.

A DSN is ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (built in) or
``postgresql://user:pass@host:port/db`` (psycopg 3, the ``postgres`` extra, imported on first
use).  Every message names the database by ``redact_dsn(dsn)``: a password never shows.
Driver errors become ``ActionFailed`` naming the statement's first line (masked before it is
cut) and the database's own message; its ``DETAIL:`` lines quote row values (data, not the
runbook's words), so they go to the failure's details, apart from the message.  ``connect(...,
read_only=True)`` opens a connection for reads (``sql.query``, ``check``, recipient queries,
``sql.verify``, cohort sources: SPEC §9) on which the SQL text cannot write to tables:

- PostgreSQL: read-only transactions for the whole session, and one statement per call: every
  statement goes through the extended protocol (a server-side prepared statement, which cannot
  hold two statements), and a ``COPY`` is first parsed the same way, so ``COMMIT; BEGIN READ
  WRITE; DELETE …`` fails before anything runs, as does ``SET SESSION CHARACTERISTICS … READ
  WRITE; COMMIT; …``.  A single ``SET transaction_read_only = off`` fails in a read-only
  transaction; a procedure cannot ``COMMIT`` inside the transaction block.  ``COPY`` other
  than ``COPY … TO STDOUT``/``FROM STDIN`` and ``DO`` blocks are refused before they reach the server
  (``readonly.copy_refused``): a read-only transaction does not stop ``COPY … TO PROGRAM``.
  Nor does it stop server functions that write no table — ``pg_terminate_backend``,
  ``pg_reload_conf``, ``lo_export``, ``pg_cancel_backend``, ``CHECKPOINT``, a user function
  that copies to a program: for a superuser these all run.  Reads need a role that is not a
  superuser and holds only ``SELECT`` (docs/security.md); the engine cannot enforce that.
- SQLite: ``PRAGMA query_only``, which the query text cannot lift: an authorizer refuses
  every PRAGMA but pure reads (``table_info``, ``index_list``, ``PRAGMA journal_mode`` without
  a value…), ``ATTACH``/``DETACH`` (and so ``VACUUM INTO``), ``REINDEX``, ``ANALYZE``; the engine lifts
  both for its own statements only (``Connection.engine_statements``).  Statements take bound parameters: a list for the driver's positional
style (``?`` on SQLite, ``%s`` on PostgreSQL) or a mapping for its named style (``:name`` on
SQLite, ``%(name)s`` on PostgreSQL).

Stable interface (other actions import it): ``connect``, ``fetch``, ``redact_dsn``,
``Connection``, ``sql_failed``, ``first_line``, ``jsonable``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import re
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from runbook_engine.actions import Masker
from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.sql.readonly import copy_refused

Params = Sequence[Any] | Mapping[str, Any]

Kind = Literal["sqlite", "postgresql"]
EXTRA_HINT = "install the postgres extra: pip install 'runbook-engine[postgres]'"
CONNECT_TIMEOUT = 10  # seconds to reach a PostgreSQL server
SQLITE_BUSY_TIMEOUT = 30.0  # seconds SQLite waits for a lock held by another writer

# SQLite errors that may pass on their own (a writer elsewhere, a full disk freed).
_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o", "database or disk is full")


def redact_dsn(dsn: str) -> str:
    """The DSN with its password (in the netloc or a ``password=`` parameter) as ``***``."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return dsn
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + hostport
    tail = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}://{netloc}{slash}{tail}"


def _passwords(dsn: str) -> list[str]:
    """The secret parts of a DSN, raw and percent-decoded, to scrub from driver messages."""
    found: list[str] = []
    try:
        parts = urlsplit(dsn)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    except ValueError:
        pass
    return sorted({p for p in found if p}, key=len, reverse=True)


def scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN (and its password) replaced by the redacted form."""
    if dsn and dsn in text:
        text = text.replace(dsn, redact_dsn(dsn))
    for secret in _passwords(dsn):
        text = text.replace(secret, "***")
    return text


def kind_of(dsn: str) -> Kind:
    scheme = dsn.split(":", 1)[0].lower() if ":" in dsn else ""
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise ActionFailed(
        f"unsupported DSN {redact_dsn(dsn)!r}: expected sqlite:///path.db or "
        "postgresql://user@host:port/db",
        retryable=False,
    )


def sqlite_path(dsn: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    if not dsn.lower().startswith("sqlite:///"):
        raise ActionFailed(
            f"bad SQLite DSN {dsn!r}: expected sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db",
            retryable=False,
        )
    path = unquote(dsn[len("sqlite:///") :].split("?", 1)[0])
    if not path:
        raise ActionFailed(f"bad SQLite DSN {dsn!r}: no file path", retryable=False)
    return path


def psycopg_module() -> Any:
    """psycopg, imported on first use; a clear failure when the extra is missing."""
    try:
        import psycopg
    except ImportError as exc:
        raise ActionFailed(
            f"PostgreSQL DSNs need psycopg 3 ({exc}): {EXTRA_HINT}", retryable=False
        ) from exc
    return psycopg


def first_line(sql: str, masker: Masker | None = None) -> str:
    """The first non-blank line of a statement, bounded, for messages; masked by ``masker``
    before it is cut."""
    for line in sql.strip().splitlines():
        if line.strip():
            text = line.strip()
            if masker is not None:
                cut = masker.head(text, 117)
                return cut if len(text) <= 120 else cut + "..."
            return text if len(text) <= 120 else text[:117] + "..."
    return ""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return any(word in str(exc).lower() for word in _SQLITE_TRANSIENT)
    if isinstance(exc, (sqlite3.Error, sqlite3.Warning)):
        return False
    psycopg = _loaded_psycopg()
    if psycopg is not None and isinstance(exc, psycopg.Error):
        return isinstance(exc, psycopg.OperationalError) and not isinstance(
            exc, psycopg.errors.QueryCanceled
        )
    return True


def _loaded_psycopg() -> Any:
    import sys

    return sys.modules.get("psycopg")


def db_message(exc: BaseException) -> str:
    """The database's own message: one paragraph, without psycopg's LINE/caret block and
    without ``DETAIL:`` (row values: see ``db_details``)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln for ln in text.splitlines() if ln.strip()]
    kept: list[str] = []
    for ln in lines:
        if ln.startswith(("LINE ", "  ", "HINT:", "DETAIL:")) and kept:
            if ln.startswith("HINT:"):
                kept.append(ln.strip())
            continue
        kept.append(ln.strip())
    return " ".join(kept)


def db_details(exc: BaseException, masker: Masker | None = None) -> str:
    """The ``DETAIL:`` lines of a database error (they quote row values), indented, for the
    failure's details; masked by ``masker``."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.startswith("DETAIL:")]
    text = "\n".join("    " + ln for ln in lines)
    return masker.mask(text) if masker is not None and text else text


def sql_failed(
    exc: BaseException,
    sql: str,
    dsn: str,
    *,
    context: str = "",
    outputs: Any = None,
    masker: Masker | None = None,
) -> ActionFailed:
    """An ``ActionFailed`` for a driver error: where, which statement, what the database said
    (its ``DETAIL:`` lines in the details)."""
    where = f"{context}: " if context else ""
    stmt = first_line(sql, masker)
    what = f"{stmt!r} failed: " if stmt else ""
    message = f"{redact_dsn(dsn)}: {where}{what}{db_message(exc)}"
    return ActionFailed(
        scrub(message, dsn),
        details=scrub(db_details(exc, masker), dsn),
        outputs=dict(outputs or {}),
        retryable=is_transient(exc),
    )


class Connection:
    """One open connection; a context manager that closes it.

    ``raw`` is the driver's connection (``sqlite3.Connection`` or ``psycopg.Connection``) for
    code that needs the driver's own speed paths; ``execute`` converts driver errors.
    SQLite connections are in autocommit mode (``BEGIN``/``COMMIT`` explicit, or use
    ``transaction()``); PostgreSQL ones open a transaction on the first statement.
    """

    def __init__(
        self,
        raw: Any,
        kind: Kind,
        dsn: str,
        masker: Masker | None = None,
        read_only: bool = False,
    ) -> None:
        self.raw = raw
        self.kind: Kind = kind
        self.dsn = dsn
        self.label = redact_dsn(dsn)
        self.param = "?" if kind == "sqlite" else "%s"
        self.masker = masker
        self.read_only = read_only

    @contextmanager
    def engine_statements(self) -> Iterator[Connection]:
        """The engine's own statements on a read-only SQLite connection (attaching the ledger
        or the other side, a temp table of members): the guard is lifted for them only."""
        if self.kind != "sqlite" or not self.read_only:
            yield self
            return
        self.raw.set_authorizer(None)
        self.raw.execute("PRAGMA query_only = OFF")
        try:
            yield self
        finally:
            self.raw.execute("PRAGMA query_only = ON")
            self.raw.set_authorizer(_read_only_authorizer)

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def execute(self, sql: str, params: Params = (), *, context: str = "") -> Any:
        """Run one statement with bound ``params`` (a list, or a mapping for named ones);
        return the driver's cursor."""
        bound: Any = dict(params) if isinstance(params, Mapping) else tuple(params)
        try:
            cur = self.raw.cursor()
            if self.kind == "sqlite":
                cur.execute(sql, bound)
            else:  # psycopg reads `%` as a placeholder only when parameters are given
                cur.execute(sql, bound if params else None)
            return cur
        except ActionFailed:
            raise
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise sql_failed(exc, sql, self.dsn, context=context, masker=self.masker) from None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        if self.kind == "sqlite":
            self.raw.execute("BEGIN")
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def commit(self) -> None:
        try:
            if self.kind == "sqlite":
                if self.raw.in_transaction:
                    self.raw.execute("COMMIT")
            else:
                self.raw.commit()
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise sql_failed(exc, "COMMIT", self.dsn, masker=self.masker) from None

    def rollback(self) -> None:
        with contextlib.suppress(Exception):  # a broken connection: nothing to roll back
            if self.kind == "sqlite":
                if self.raw.in_transaction:
                    self.raw.execute("ROLLBACK")
            else:
                self.raw.rollback()

    def interrupt(self) -> None:
        """Abort the statement running now (from another thread): cancellation."""
        with contextlib.suppress(Exception):  # best effort: the connection may be gone
            if self.kind == "sqlite":
                self.raw.interrupt()
            else:
                self.raw.cancel_safe(timeout=5.0)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing must not hide the outcome
            self.raw.close()


def is_driver_error(exc: BaseException) -> bool:
    if isinstance(exc, (sqlite3.Error, sqlite3.Warning)):
        return True
    psycopg = _loaded_psycopg()
    return psycopg is not None and isinstance(exc, psycopg.Error)


def connect(
    dsn: str, *, must_exist: bool = False, read_only: bool = False, masker: Masker | None = None
) -> Connection:
    """Open ``dsn``. ``must_exist``: a missing SQLite file is an error (not created empty).
    ``read_only``: nothing can be written through the connection (a write fails).
    ``masker``: statements named in error messages are masked before they are cut."""
    kind = kind_of(dsn)
    if kind == "sqlite":
        path = sqlite_path(dsn)
        if path != ":memory:":
            file = Path(path)
            if must_exist and not file.is_file():
                raise ActionFailed(
                    f"{redact_dsn(dsn)}: SQLite database file {path} does not exist",
                    retryable=False,
                )
            if not file.parent.is_dir():
                raise ActionFailed(
                    f"{redact_dsn(dsn)}: directory {file.parent} does not exist",
                    retryable=False,
                )
        try:
            raw = sqlite3.connect(
                path,
                timeout=SQLITE_BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
            if read_only:
                raw.execute("PRAGMA query_only = ON")
                raw.set_authorizer(_read_only_authorizer)
        except sqlite3.Error as exc:
            raise sql_failed(exc, "", dsn, context="cannot open") from None
        return Connection(raw, "sqlite", dsn, masker, read_only)
    psycopg = psycopg_module()
    try:
        if read_only:
            # one statement per call: every execute is prepared (extended protocol), every
            # COPY parsed first; and every transaction of the session read-only
            raw = psycopg.connect(
                dsn,
                connect_timeout=CONNECT_TIMEOUT,
                prepare_threshold=0,
                cursor_factory=_single_statement_cursor(psycopg),
            )
            raw.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            raw.commit()
            raw.read_only = True
        else:
            raw = psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise sql_failed(exc, "", dsn, context="cannot connect") from None
    return Connection(raw, "postgresql", dsn, masker, read_only)


# PRAGMAs a read may run: reads that take an argument (a table, an index)...
_PRAGMA_READS_WITH_ARG = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
# ...and settings it may only look at (`PRAGMA journal_mode`, never `= WAL`)
_PRAGMA_READS = _PRAGMA_READS_WITH_ARG | {
    "database_list",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
    "query_only",
    "user_version",
    "schema_version",
    "application_id",
    "data_version",
    "encoding",
    "foreign_keys",
    "journal_mode",
    "page_count",
    "page_size",
    "freelist_count",
}


def _read_only_authorizer(action: int, arg1: Any, arg2: Any, _db: Any, _source: Any) -> int:
    """SQLite: what the text of a read can never do on a read-only connection: any PRAGMA
    but the pure reads above (``PRAGMA journal_mode = WAL`` rewrote the file), ``ATTACH``,
    ``DETACH`` (and so ``VACUUM INTO``), ``REINDEX``, ``ANALYZE``."""
    if action == sqlite3.SQLITE_PRAGMA:
        name = str(arg1).lower()
        if name in _PRAGMA_READS_WITH_ARG or (name in _PRAGMA_READS and arg2 is None):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY
    if action in (
        sqlite3.SQLITE_ATTACH,
        sqlite3.SQLITE_DETACH,
        sqlite3.SQLITE_REINDEX,
        sqlite3.SQLITE_ANALYZE,
    ):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


_CURSOR: Any = None


def _single_statement_cursor(psycopg: Any) -> Any:
    """A psycopg cursor whose ``copy`` first has the server parse the statement alone (a
    prepared statement cannot hold two), so that a COPY's text cannot smuggle a ``COMMIT``."""
    global _CURSOR
    if _CURSOR is not None:
        return _CURSOR

    class SingleStatementCursor(psycopg.Cursor):  # type: ignore[misc]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            _refuse_copy(psycopg, self.connection, query)
            return super().execute(query, params, **kwargs)

        @contextmanager
        def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
            _refuse_copy(psycopg, self.connection, statement)
            _parse_alone(psycopg, self.connection, statement, params)
            with super().copy(statement, params, **kwargs) as out:
                yield out

    _CURSOR = SingleStatementCursor
    return _CURSOR


def _refuse_copy(psycopg: Any, conn: Any, statement: Any) -> None:
    """``COPY … TO '/file'`` or ``TO PROGRAM`` is no write to a table: a read-only transaction
    lets it run (``readonly.copy_refused``)."""
    if isinstance(statement, str):
        text = statement
    elif isinstance(statement, bytes):
        text = statement.decode(errors="replace")
    else:
        text = statement.as_string(conn)
    why = copy_refused(text)
    if why is not None:
        raise psycopg.ProgrammingError(why)


def _parse_alone(psycopg: Any, conn: Any, statement: Any, params: Any) -> None:
    if params:
        text = psycopg.ClientCursor(conn).mogrify(statement, params)
    else:
        text = statement if isinstance(statement, str) else statement.as_string(conn)
    result = conn.pgconn.prepare(b"", text.encode())
    if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
        message = (result.error_message or b"").decode(errors="replace").strip()
        raise psycopg.ProgrammingError(message or "the statement cannot be prepared")


def jsonable(value: Any) -> Any:
    """A database value as JSON can hold it: decimals and dates as strings, bytes as hex."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return (
            value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        )
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def fetch(
    dsn: str, sql: str, max_rows: int, params: Params = (), masker: Masker | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one query, read-only, with bound ``params``; its column names and at most
    ``max_rows`` rows (values as the driver gives them).  A statement that returns no rows
    gives ``([], [])``."""
    with connect(dsn, must_exist=True, read_only=True, masker=masker) as conn:
        cur = conn.execute(sql, params)
        try:
            if cur.description is None:
                return [], []
            columns = [str(d[0]) for d in cur.description]
            rows = [tuple(r) for r in cur.fetchmany(max_rows)] if max_rows > 0 else []
        except ActionFailed:
            raise
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise sql_failed(exc, sql, dsn, masker=masker) from None
        finally:
            conn.rollback()
        return columns, rows


def quote_ident(name: str) -> str:
    """``schema.table`` or ``column`` quoted for SQL (both engines use double quotes)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def sqlite_dsn(path: str | Path) -> str:
    """The DSN of a SQLite file (absolute paths get four slashes)."""
    return "sqlite:///" + quote(str(path), safe="/:")
