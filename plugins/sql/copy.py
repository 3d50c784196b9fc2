"""``sql.copy``: rows of ``table`` matching ``where``, source -> target, upserting on ``key``.

Rows move in batches of ``batch_size`` by key range: the source is asked for the key that ends
the next batch (``ORDER BY key LIMIT 1 OFFSET batch_size - 1``), then the range
``lo < key <= hi`` is copied and committed.  Memory stays constant, each batch commits, the
step can stop between batches, and a re-run upserts the same rows again: idempotent.

- SQLite -> SQLite: the source ``ATTACH``es the target and SQLite copies each range itself
  (``INSERT INTO rb_dst.t ... SELECT ... ON CONFLICT DO UPDATE``) on the source's connection,
  so that ``where`` is evaluated against the source (SPEC §9): a table a subquery names is the
  source's (SQLite looks in ``main`` before any attached database, and ``where`` was counted
  on the source alone first, so a table only the target has is an error, not a match).
- -> PostgreSQL (``copy_pg``): the source is read by one statement (from PostgreSQL its
  ``COPY TO STDOUT`` streamed unparsed) and the target takes it by ``COPY`` in batches of
  ``batch_size`` rows, each committed (default 1,000,000 into an empty target: each batch
  ends the ``COPY`` and stalls the stream: 1M rows in 2.2-2.8 s at 100,000, 1.9-2.2 s in
  one batch, measured alternated; 100,000 into one
  that holds rows, whose batches are kept in memory); a batch whose key is there already is
  sent again into a temp table and upserted, and so are the batches after it.
- PostgreSQL -> SQLite: a range is fetched and upserted with ``executemany``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from runbook_engine.actions import ActionContext
from runbook_engine.errors import ActionFailed

from .common import (
    BLOB,
    BOOL,
    DATE,
    FLOAT,
    INT,
    JSON,
    NUMERIC,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    Column,
    Progress,
    Watch,
    absent_members,
    cohort_members,
    count_rows,
    describe_table,
    key_names,
    keys_after,
    matching,
    member_filter,
    pick_columns,
    require_table,
    scope,
    utc_sessions,
    watching,
    where_sql,
    with_members,
)
from .copy_pg import stream_into_pg
from .db import (
    Connection,
    connect,
    db_details,
    db_message,
    is_driver_error,
    is_transient,
    kind_of,
    redact_dsn,
    scrub,
    sqlite_path,
)

DEFAULT_BATCH = 10_000
DEFAULT_BATCH_PG = 1_000_000  # into an empty PostgreSQL table: a commit per 1,000,000 rows
DEFAULT_BATCH_PG_HELD = 100_000  # into one holding rows: each batch is kept to be sent again
ATTACHED = "rb_dst"  # the target, attached to the source's connection
_TO_PG = {
    INT: "bigint", TEXT: "text", FLOAT: "double precision", BOOL: "boolean", BLOB: "bytea",
    TIMESTAMP: "timestamptz", TIMESTAMPTZ: "timestamptz", DATE: "date", JSON: "jsonb",
}  # fmt: skip
_TO_SQLITE = {
    INT: "INTEGER", NUMERIC: "NUMERIC", FLOAT: "REAL", BOOL: "BOOLEAN", BLOB: "BLOB",
    TIMESTAMP: "TIMESTAMP", TIMESTAMPTZ: "TIMESTAMP", DATE: "DATE",
}  # fmt: skip


def copy(params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
    table: str = params["table"]
    target_table: str = params.get("target_table") or table
    where: str | None = params.get("where")
    default = DEFAULT_BATCH_PG if kind_of(params["target"]) == "postgresql" else DEFAULT_BATCH
    batch = int(params.get("batch_size", default))
    create = bool(params.get("create", False))
    keys = key_names(params)
    target: str = params["target"]
    if not create and kind_of(target) == "sqlite" and not Path(sqlite_path(target)).is_file():
        raise ActionFailed(
            f"target table {target_table} does not exist in {redact_dsn(target)} (no such "
            "file; set `create: true` to create it from the source's columns)",
            retryable=False,
        )
    with (
        connect(params["source"], must_exist=True, masker=ctx.masker) as src,
        connect(target, masker=ctx.masker) as dst,
        watching(ctx, src, dst) as watch,
    ):
        utc_sessions(src, dst)
        source = require_table(src, table, "source")
        cols, key_cols = pick_columns(source, params.get("columns"), keys, "source")
        existing = describe_table(dst, target_table)
        if existing is None:
            if not create:
                raise ActionFailed(
                    f"target table {target_table} does not exist in {dst.label} "
                    "(set `create: true` to create it from the source's columns)",
                    retryable=False,
                )
            _create(dst, target_table, cols, key_cols, src.kind)
            existing = require_table(dst, target_table, "target")
        tcols = matching(existing, cols)
        if dst.kind == "postgresql":
            _require_unique_key(dst, target_table, [tcols[cols.index(k)] for k in key_cols])
        members = cohort_members(params, ctx)
        shown = where
        if members is not None:
            column = str(params.get("cohort_key") or members.key_column)
            condition = member_filter(src, members, column)
            where = with_members(where, condition)
            shown = (f"{shown} and " if shown else "") + f"the members of wave {members.wave}"
        job = _Job(src, dst, table, target_table, where, cols, key_cols, tcols, batch, watch)
        if "batch_size" not in params and dst.kind == "postgresql":
            job.held_batch = DEFAULT_BATCH_PG_HELD
        job.shown = shown
        total = count_rows(src, table, where, "source")
        job.progress = Progress(ctx.progress, "copied", total)
        try:
            job.run()
        except ActionFailed as exc:
            raise watch.explain(exc, job.done()) from None
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            if watch.fired:
                raise ActionFailed(
                    f"{watch.fired} {job.done()}", outputs={"rows_copied": job.copied}
                ) from None
            raise job.failed(exc) from None
        job.progress(job.copied, final=True)
        if members is not None and [c.name for c in key_cols] == [column]:
            # the member's own row: a member whose row is not in the source was not moved
            absent = absent_members(src, table, column)
            if absent:  # else every member was copied: marked set-wise, no key list
                gone, everyone = set(absent), members.keys()
                members.only(k for k in everyone if k not in gone)
        return {"rows_copied": job.copied}


def _require_unique_key(dst: Connection, table: str, keys: Sequence[Column]) -> None:
    """A PostgreSQL target needs a primary key or unique index on exactly the key columns:
    rows already there are found by it (a re-run upserts them); without one, a re-run would
    copy every row again (issue 13 audit)."""
    sql = (
        "SELECT ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = i.indrelid "
        "AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])) "
        "FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique "
        "AND i.indpred IS NULL AND i.indexprs IS NULL"
    )
    cur = dst.raw.cursor()
    cur.execute(sql, (table,))
    found = [set(r[0]) for r in cur.fetchall()]
    cur.close()
    dst.raw.rollback()
    wanted = {k.name for k in keys}
    if wanted in found:
        return
    listed = ", ".join(k.q for k in keys)
    raise ActionFailed(
        f"target table {table} in {dst.label} has no primary key or unique index on exactly "
        f"({listed}): rows already there could not be found, so a re-run would copy them "
        f"again; add one (ALTER TABLE {table} ADD PRIMARY KEY ({listed}), or CREATE UNIQUE "
        f"INDEX ON {table} ({listed})) or let `create: true` create the table",
        retryable=False,
    )


def _create(
    dst: Connection, name: str, cols: Sequence[Column], keys: Sequence[Column], src_kind: str
) -> None:
    def type_of(col: Column) -> str:
        if src_kind == dst.kind:
            return col.decl
        if dst.kind == "postgresql":
            if col.category == NUMERIC:
                m = re.search(r"\(\s*\d+\s*(,\s*\d+\s*)?\)", col.decl)
                return "numeric" + (m.group(0).replace(" ", "") if m else "")
            return _TO_PG.get(col.category, "text")
        return _TO_SQLITE.get(col.category, "TEXT")

    body = ", ".join(f"{c.q} {type_of(c)}".rstrip() for c in cols)
    pk = ", ".join(c.q for c in keys)
    dst.execute(f"CREATE TABLE {name} ({body}, PRIMARY KEY ({pk}))", context="create: true")
    dst.commit()


def _run(conn: Connection, sql: str, args: tuple[Any, ...]) -> Any:
    """A driver cursor; errors stay the driver's (the job names them with its context)."""
    cur = conn.raw.cursor()
    if conn.kind == "postgresql":
        cur.execute(sql, args or None)  # without parameters `%` is not a placeholder
    else:
        cur.execute(sql, args)
    return cur


def _to_sqlite(value: Any) -> Any:
    """A PostgreSQL value as SQLite can bind it."""
    if value is None or isinstance(value, (int, float, str, bytes)):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time, uuid.UUID)):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, memoryview):
        return bytes(value)
    return str(value)


class _Job:
    """One copy: the connections, the SQL it needs, and how far it got."""

    def __init__(
        self,
        src: Connection,
        dst: Connection,
        table: str,
        target_table: str,
        where: str | None,
        cols: Sequence[Column],
        key_cols: Sequence[Column],
        tcols: Sequence[Column],
        batch: int,
        watch: Watch,
    ) -> None:
        self.src, self.dst, self.watch = src, dst, watch
        self.where = where
        self.shown = where  # how messages name the rows (no engine SQL in them)
        self.table, self.target_table = table, target_table
        self.cols, self.key_cols, self.tcols = list(cols), list(key_cols), list(tcols)
        self.batch = batch
        self.held_batch = batch  # into PostgreSQL when the target holds rows at the start
        self.copied = 0
        self.progress = Progress(lambda _l: None, "copied", 0)
        self.attached = src.kind == dst.kind == "sqlite"
        self.read_from = table  # the source table as the reading connection names it
        self.write_to = target_table  # the target table as the writing connection names it

    def done(self) -> str:
        return f"after copying {self.copied:,} rows (re-running the step is safe)"

    def failed(self, exc: BaseException) -> ActionFailed:
        text = (
            f"copying {scope(self.table, self.shown)} from {self.src.label} to "
            f"{self.dst.label} failed {self.done()}: {db_message(exc)}"
        )
        text = scrub(scrub(text, self.src.dsn), self.dst.dsn)
        details = scrub(scrub(db_details(exc, self.src.masker), self.src.dsn), self.dst.dsn)
        return ActionFailed(
            text,
            details=details,
            outputs={"rows_copied": self.copied},
            retryable=is_transient(exc),
        )

    # -- the SQL -----------------------------------------------------------------------------

    def _select(self, reader: Connection, lo: bool, hi: bool) -> str:
        cond = [where_sql(self.where)]
        if lo:
            cond.append(keys_after(self.key_cols, reader.param))
        if hi:
            cond.append(keys_after(self.key_cols, reader.param, inclusive=True))
        names = ", ".join(c.q for c in self.cols)
        return f"SELECT {names} FROM {self.read_from} WHERE {' AND '.join(cond)}"

    def _upsert(self, rows_from: str) -> str:
        names = ", ".join(c.q for c in self.tcols)
        keys = ", ".join(c.q for c in self._tkeys())
        rest = [c for c in self.tcols if c not in self._tkeys()]
        action = (
            "DO UPDATE SET " + ", ".join(f"{c.q} = excluded.{c.q}" for c in rest)
            if rest
            else "DO NOTHING"
        )
        return f"INSERT INTO {self.write_to} ({names}) {rows_from} ON CONFLICT ({keys}) {action}"

    def _tkeys(self) -> list[Column]:
        return [self.tcols[self.cols.index(k)] for k in self.key_cols]

    def _ranges(
        self, reader: Connection
    ) -> Iterator[tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]]:
        """(lo, hi) key ranges of ``batch`` rows each; hi None for the last one."""
        knames = ", ".join(c.q for c in self.key_cols)
        lo: tuple[Any, ...] | None = None
        while True:
            cond = [where_sql(self.where)]
            if lo is not None:
                cond.append(keys_after(self.key_cols, reader.param))
            sql = (
                f"SELECT {knames} FROM {self.read_from} WHERE {' AND '.join(cond)} "
                f"ORDER BY {knames} LIMIT 1 OFFSET {self.batch - 1}"
            )
            row = _run(reader, sql, lo or ()).fetchone()
            hi = tuple(row) if row is not None else None
            yield lo, hi
            if hi is None:
                return
            lo = hi

    @staticmethod
    def _args(lo: tuple[Any, ...] | None, hi: tuple[Any, ...] | None) -> tuple[Any, ...]:
        return (lo or ()) + (hi or ())

    # -- the copy ----------------------------------------------------------------------------

    def run(self) -> None:
        if self.attached:
            self._attach()
            self._run_attached()
        elif self.dst.kind == "postgresql":
            self._run_into_pg()
        else:
            self._run_into_sqlite()

    def _check(self) -> None:
        self.watch.check(self.done(), {"rows_copied": self.copied})

    def _attach(self) -> None:
        src_path = os.path.realpath(sqlite_path(self.src.dsn))
        dst_path = os.path.realpath(sqlite_path(self.dst.dsn))
        if src_path != dst_path:
            self.src.raw.execute(f"ATTACH DATABASE ? AS {ATTACHED}", (dst_path,))
            self.write_to = f"{ATTACHED}.{self.target_table}"

    def _run_attached(self) -> None:
        """On the source's connection: each range read where the source's names resolve, and
        written into the attached target (a deferred transaction: only the target is locked
        for writing; the source is read)."""
        raw = self.src.raw
        for lo, hi in self._ranges(self.src):
            self._check()
            sql = self._upsert(self._select(self.src, lo is not None, hi is not None))
            raw.execute("BEGIN")
            try:
                n = raw.execute(sql, self._args(lo, hi)).rowcount
                raw.execute("COMMIT")
            except BaseException:
                self.src.rollback()
                raise
            self.copied += max(n, 0)
            self.progress(self.copied)

    def _run_into_pg(self) -> None:
        stream_into_pg(self)

    def check(self) -> None:
        self._check()

    def where_text(self) -> str:
        return where_sql(self.where)

    def _run_into_sqlite(self) -> None:
        dst = self.dst.raw
        marks = ", ".join("?" for _ in self.tcols)
        upsert = self._upsert(f"SELECT {marks} WHERE true")
        upsert = upsert.replace(f"SELECT {marks} WHERE true", f"VALUES ({marks})")
        plain = [c.category in (INT, TEXT, FLOAT, BOOL) for c in self.cols]
        for lo, hi in self._ranges(self.src):
            self._check()
            select = self._select(self.src, lo is not None, hi is not None)
            rows = [
                tuple(v if p else _to_sqlite(v) for v, p in zip(row, plain, strict=True))
                for row in _run(self.src, select, self._args(lo, hi)).fetchall()
            ]
            self.src.rollback()
            dst.execute("BEGIN IMMEDIATE")
            try:
                dst.executemany(upsert, rows)
                dst.execute("COMMIT")
            except BaseException:
                self.dst.rollback()
                raise
            self.copied += len(rows)
            self.progress(self.copied)
