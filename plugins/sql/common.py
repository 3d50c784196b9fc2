"""What the SQL actions share: table introspection, keys, cancellation, progress.

Tables come from the schema's pattern (``name`` or ``schema.name``) and are written unquoted,
so PostgreSQL folds their case as an operator expects; columns are quoted with their exact
names as the database reports them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from runbook_engine.actions import ActionContext
from runbook_engine.errors import ActionFailed

from .db import Connection, is_driver_error, quote_ident, sql_failed

# Column categories: how values are created, compared and normalised across engines.
INT, NUMERIC, FLOAT, BOOL, TEXT, BLOB = "int", "numeric", "float", "bool", "text", "blob"
TIMESTAMP, TIMESTAMPTZ, DATE, JSON, OTHER = "timestamp", "timestamptz", "date", "json", "other"
_PG_TEXT = {"text", "varchar", "bpchar", "name", "citext"}
_PG_CATEGORY = {
    "int2": INT, "int4": INT, "int8": INT, "numeric": NUMERIC, "float4": FLOAT,
    "float8": FLOAT, "bool": BOOL, "bytea": BLOB, "timestamp": TIMESTAMP,
    "timestamptz": TIMESTAMPTZ, "date": DATE, "json": JSON, "jsonb": JSON,
    **{name: TEXT for name in _PG_TEXT},
}  # fmt: skip


@dataclass(frozen=True)
class Column:
    name: str
    decl: str  # the declared type as the database states it ("numeric(12,2)", "TEXT", "")
    category: str
    pk: bool = False

    @property
    def q(self) -> str:
        return quote_ident(self.name)


def sqlite_category(decl: str) -> str:
    """SQLite's affinity rules (datatype3.html §3.1), refined for dates and booleans."""
    d = decl.upper()
    if "INT" in d:
        return INT
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return TEXT
    if "BLOB" in d or not d:
        return BLOB if d else OTHER
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return FLOAT
    if "BOOL" in d:
        return BOOL
    if "TIMESTAMP" in d or "DATETIME" in d:
        return TIMESTAMP
    if "DATE" in d:
        return DATE
    if "JSON" in d:
        return JSON
    return NUMERIC


@dataclass(frozen=True)
class Table:
    """A table on one side: its name as written in SQL and its columns in order."""

    conn: Connection
    name: str  # as written in SQL (may carry an ATTACH schema prefix)
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        for col in self.columns:
            if col.name == name:
                return col
        lowered = [c for c in self.columns if c.name.lower() == name.lower()]
        return lowered[0] if len(lowered) == 1 else None


def utc_sessions(*conns: Connection) -> None:
    """PostgreSQL sessions in UTC, so that timestamps read the same on both sides."""
    for conn in conns:
        if conn.kind == "postgresql":
            conn.raw.execute("SET TimeZone = 'UTC'")
            conn.raw.commit()


def describe_table(conn: Connection, table: str, *, schema: str = "main") -> Table | None:
    """The table's columns, or None when it does not exist."""
    if conn.kind == "sqlite":
        rows = conn.execute(
            "SELECT name, type, pk FROM pragma_table_info(?, ?) ORDER BY cid", (table, schema)
        ).fetchall()
        if not rows:
            return None
        cols = tuple(Column(n, t or "", sqlite_category(t or ""), bool(pk)) for n, t, pk in rows)
        name = table if schema == "main" else f"{schema}.{table}"
        return Table(conn, name, cols)
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname,"
        " coalesce(a.attnum = ANY(i.indkey), false)"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        (table,),
    ).fetchall()
    conn.rollback()  # leave no transaction open behind a catalogue read
    if not rows:
        return None
    cols = tuple(Column(n, f, _PG_CATEGORY.get(t, OTHER), bool(pk)) for n, f, t, pk in rows)
    return Table(conn, table, cols)


def require_table(conn: Connection, table: str, side: str, *, schema: str = "main") -> Table:
    found = describe_table(conn, table, schema=schema)
    if found is None:
        raise ActionFailed(f"{side} table {table} does not exist in {conn.label}", retryable=False)
    return found


def key_names(params: Mapping[str, Any]) -> list[str]:
    key = params["key"]
    return [key] if isinstance(key, str) else list(key)


def pick_columns(
    table: Table, wanted: Sequence[str] | None, keys: Sequence[str], side: str
) -> tuple[list[Column], list[Column]]:
    """(columns, key columns) of ``table``; unknown names fail, naming the table's columns."""
    names = list(wanted) if wanted else [c.name for c in table.columns]
    for k in keys:
        if not any(n.lower() == k.lower() for n in names):
            names.append(k)
    cols: list[Column] = []
    for name in names:
        col = table.column(name)
        if col is None:
            known = ", ".join(c.name for c in table.columns)
            raise ActionFailed(
                f"{side} table {table.name} in {table.conn.label} has no column {name!r} "
                f"(it has: {known})",
                retryable=False,
            )
        cols.append(col)
    key_cols = [c for k in keys for c in cols if c.name.lower() == k.lower()][: len(keys)]
    return cols, key_cols


def matching(table: Table, cols: Sequence[Column]) -> list[Column]:
    """The same columns (by name) on another side's table; missing ones fail."""
    out: list[Column] = []
    missing: list[str] = []
    for col in cols:
        other = table.column(col.name)
        if other is None:
            missing.append(col.name)
        else:
            out.append(other)
    if missing:
        raise ActionFailed(
            f"target table {table.name} in {table.conn.label} lacks column(s) {', '.join(missing)}",
            retryable=False,
        )
    return out


def where_sql(where: str | None) -> str:
    return f"({where})" if where and where.strip() else "1=1"


def keys_after(key_cols: Sequence[Column], param: str, *, inclusive: bool = False) -> str:
    """``k > ?`` or ``(k1, k2) > (?, ?)`` (``<=`` with ``inclusive``)."""
    op = "<=" if inclusive else ">"
    if len(key_cols) == 1:
        return f"{key_cols[0].q} {op} {param}"
    names = ", ".join(c.q for c in key_cols)
    marks = ", ".join([param] * len(key_cols))
    return f"({names}) {op} ({marks})"


def check_where(conn: Connection, table: str, where: str | None, side: str) -> None:
    """A bad ``where`` (or table) fails here, clearly named, without reading a row."""
    count_rows(conn, table, where, side, probe=True)
    conn.rollback()


def scope(table: str, where: str | None) -> str:
    """How messages name the rows a step works on."""
    return f"table {table}" + (f" where {where!r}" if where else "")


def count_rows(
    conn: Connection, table: str, where: str | None, side: str, *, probe: bool = False
) -> int:
    """Rows of ``table`` matching ``where``; a bad ``where`` fails here, clearly named.
    ``probe``: only check that ``where`` is valid there (no scan; 0)."""
    sql = f"SELECT count(*) FROM {table} WHERE {where_sql(where)}"
    if probe:
        sql = f"SELECT 0 FROM {table} WHERE {where_sql(where)} LIMIT 0"
    try:
        cur = conn.raw.cursor()
        cur.execute(sql)
        row = cur.fetchone()
        return int(row[0]) if row else 0
    except ActionFailed:
        raise
    except Exception as exc:
        if not is_driver_error(exc):
            raise
        conn.rollback()
        raise sql_failed(exc, "", conn.dsn, context=f"{side}: {scope(table, where)}") from None


class Watch:
    """Interrupts the statements of ``conns`` when the step is cancelled or out of time."""

    def __init__(self, ctx: ActionContext, conns: Sequence[Connection]) -> None:
        self.ctx = ctx
        self.conns = list(conns)
        self.fired = ""  # "cancelled" | "timed out" once it interrupted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sql-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            reason = self.reason()
            if reason:
                self.fired = reason
                for conn in self.conns:
                    conn.interrupt()
                return

    def reason(self) -> str:
        if self.ctx.cancel.is_set():
            return "cancelled"
        if self.ctx.remaining() <= 0:
            return f"timed out after {self.ctx.timeout:g}s"
        return ""

    def check(self, done: str, outputs: Mapping[str, Any]) -> None:
        """Between batches: stop cleanly when cancelled or out of time."""
        reason = self.fired or self.reason()
        if reason:
            raise ActionFailed(f"{reason} {done}", outputs=dict(outputs))

    def explain(self, exc: ActionFailed, done: str) -> ActionFailed:
        """A driver error caused by our own interrupt, said as what it was."""
        if self.fired:
            return ActionFailed(f"{self.fired} {done}", outputs=exc.outputs)
        return exc


@contextmanager
def watching(ctx: ActionContext, *conns: Connection) -> Iterator[Watch]:
    watch = Watch(ctx, conns)
    watch._thread.start()
    try:
        yield watch
    finally:
        watch._stop.set()
        watch._thread.join()


class Progress:
    """``ctx.progress`` at most once a second: "copied 120,000 / 1,000,000 rows".

    A line that would repeat the last one is skipped (a copy done in one batch used to print
    "copied N / N rows" twice), and so is "0 / N" before the end.
    """

    def __init__(self, report: Callable[[str], None], verb: str, total: int) -> None:
        self.report = report
        self.verb = verb
        self.total = total
        self.last = 0.0
        self.shown: int | None = None

    def __call__(self, done: int, *, final: bool = False) -> None:
        if done == self.shown or (done == 0 and not final):
            return  # nothing new to say ("started" says that a step began)
        now = time.monotonic()
        if final or now - self.last >= 1.0:
            self.last = now
            self.shown = done
            self.report(f"{self.verb} {done:,} / {self.total:,} rows")


# -- a wave's members (``cohort:``) ---------------------------------------------------------

LEDGER = "rb_ledger"
MEMBERS = "rb_members"


def member_filter(conn: Connection, members: Any, column: str) -> str:
    """An SQL condition true for the rows of the wave's members, ready on ``conn``: a SQLite
    connection attaches the ledger (read-only) and asks it; a PostgreSQL one gets the members'
    keys in a temp table (one COPY). Set-wise either way: no per-row round trip."""
    col = quote_ident(column)
    if conn.kind == "sqlite":
        _sqlite_members(conn, members)
        # one primary-key lookup per row (`+` keeps the column's own type: 1 is not '1'); an
        # IN over the ledger was re-materialised by every batch's statement: 12x slower
        return f"EXISTS (SELECT 1 FROM temp.{KEYS} WHERE rb_key = +{col})"
    keys = members.keys()
    pg_type = "bigint" if {type(k) for k in keys} <= {int} else "text"
    _load_members(conn, keys, pg_type)
    cast = "" if pg_type == "bigint" else "::text"
    return f"{col}{cast} IN (SELECT key FROM {MEMBERS})"


KEYS = "rb_member_keys"


def _sqlite_members(conn: Connection, members: Any) -> None:
    """The members' keys in the connection's temp table ``rb_member_keys``, from the ledger
    attached read-only, or, when the ledger is not a file (a PostgreSQL state), from the
    members' keys inserted in the process (no round trip); a read-only connection
    (``query_only``) lifts it for these engine statements only."""
    raw = conn.raw
    path = members.ledger_path
    if path is None:
        with conn.engine_statements():
            raw.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {KEYS} (rb_key PRIMARY KEY) WITHOUT ROWID"
            )
            raw.execute(f"DELETE FROM temp.{KEYS}")
            keys = members.keys()
            raw.executemany(
                f"INSERT OR IGNORE INTO temp.{KEYS} (rb_key) VALUES (?)", [(k,) for k in keys]
            )
        return
    attached = {row[1] for row in raw.execute("PRAGMA database_list")}
    with conn.engine_statements():
        if LEDGER not in attached:
            uri = "file:" + str(path) + "?mode=ro"
            raw.execute(f"ATTACH DATABASE ? AS {LEDGER}", (uri,))
        sql, args = members.select_sql(LEDGER)
        raw.execute(f"CREATE TEMP TABLE IF NOT EXISTS {KEYS} (rb_key PRIMARY KEY) WITHOUT ROWID")
        raw.execute(f"DELETE FROM temp.{KEYS}")
        raw.execute(f"INSERT OR IGNORE INTO temp.{KEYS} (rb_key) {_inline(sql, args)}")


def _load_members(conn: Connection, keys: Sequence[Any], pg_type: str) -> None:
    """The keys into the session's temp table ``rb_members``, committed at once (so that no
    later rollback of the caller's takes it away). A read-only connection (sql.verify, a
    cohort's source) writes nothing but this temp table: its load is the one transaction
    begun READ WRITE, with the engine's own statements only."""
    raw = conn.raw
    read_only = raw.read_only
    try:
        raw.commit()  # nothing of the caller's is pending here; leave no transaction open
        raw.read_only = False
        cur = raw.cursor()
        cur.execute(f"DROP TABLE IF EXISTS pg_temp.{MEMBERS}")
        cur.execute(f"CREATE TEMP TABLE {MEMBERS} (key {pg_type} PRIMARY KEY)")
        with cur.copy(f"COPY {MEMBERS} (key) FROM STDIN") as copy:
            for k in keys:
                copy.write_row((k,))
        cur.execute(f"ANALYZE {MEMBERS}")
        raw.commit()
    except Exception as exc:
        if not is_driver_error(exc):
            raise
        conn.rollback()
        raise sql_failed(
            exc, "", conn.dsn, context="cohort: loading the wave's members into a temp table"
        ) from None
    finally:
        raw.read_only = read_only


def members_table(conn: Connection, members: Any) -> None:
    """``rb_members(key)``: the wave's members, for statements to join with (``cohort:`` on
    sql.exec): a temp view over the attached ledger on SQLite, a temp table on PostgreSQL."""
    if conn.kind == "sqlite":
        _sqlite_members(conn, members)
        conn.raw.execute(f"DROP VIEW IF EXISTS temp.{MEMBERS}")
        conn.raw.execute(f"CREATE TEMP VIEW {MEMBERS} AS SELECT rb_key AS key FROM temp.{KEYS}")
    else:
        member_filter(conn, members, "key")


def _inline(sql: str, args: Sequence[Any]) -> str:
    """The ledger's member query with its parameters as literals: they are the engine's own
    values (cohort and wave ids match ``[a-z0-9-]+``, states are constants), checked here."""
    out = sql
    for a in args:
        text = str(a)
        if not all(c.isalnum() or c in "-_" for c in text):
            raise ActionFailed(f"not an engine id: {text!r}", retryable=False)
        out = out.replace("?", f"'{text}'", 1)
    return out


def cohort_members(params: Mapping[str, Any], ctx: ActionContext) -> Any:
    """The wave's members when the step says ``cohort:`` (None otherwise)."""
    if not params.get("cohort"):
        return None
    if ctx.members is None or ctx.members.cohort != params["cohort"]:
        raise ActionFailed(
            f"`cohort: {params['cohort']}` works in a wave of that cohort only (its phase needs "
            f"`waves: {{cohort: {params['cohort']}}}`)",
            retryable=False,
        )
    return ctx.members


def present_members(conn: Connection, table: str, column: str, condition: str) -> set[Any]:
    """The members that have a row in ``table`` (``condition`` from ``member_filter`` on
    ``conn``): set-wise, one query."""
    col = quote_ident(column)
    cur = conn.raw.cursor()
    cur.execute(f"SELECT DISTINCT {col} FROM {table} WHERE {condition}")
    found = {row[0] for row in cur.fetchall()}
    conn.rollback()
    return found


def absent_members(conn: Connection, table: str, column: str) -> list[Any]:
    """The wave's members (loaded on ``conn`` by ``member_filter``) with no row in ``table``:
    set-wise, driven by the members' keys through the table's index on ``column`` (a wave of
    200,000 in a table of 1,000,000 reads 200,000 index entries, not the table)."""
    col = quote_ident(column)
    cur = conn.raw.cursor()
    if conn.kind == "sqlite":
        # `t.col = k.rb_key` lets the index serve; `k.rb_key = +t.col` keeps member_filter's
        # exact comparison (no affinity: the integer 1 is not the text '1')
        cur.execute(
            f"SELECT k.rb_key FROM temp.{KEYS} k WHERE NOT EXISTS (SELECT 1 FROM {table} t"
            f" WHERE t.{col} = k.rb_key AND k.rb_key = +t.{col})"
        )
    else:
        cur.execute(  # the key's type as member_filter made it: bigint, or text
            f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            f" WHERE attrelid = 'pg_temp.{MEMBERS}'::regclass AND attname = 'key'"
        )
        row = cur.fetchone()
        cast = "" if row and row[0] == "bigint" else "::text"
        cur.execute(
            f"SELECT m.key FROM {MEMBERS} m WHERE NOT EXISTS (SELECT 1 FROM {table} t"
            f" WHERE t.{col}{cast} = m.key)"
        )
    found = [row[0] for row in cur.fetchall()]
    conn.rollback()
    return found


def with_members(where: str | None, condition: str | None) -> str | None:
    if condition is None:
        return where
    return f"{where_sql(where)} AND {condition}"
