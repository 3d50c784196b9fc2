"""``sql.exec``, ``sql.query``, ``sql.copy`` and ``sql.verify``.

``sql.copy`` and ``sql.verify`` do their work in ``sql_copy`` and ``sql_verify`` (imported when
a step runs); this module keeps the four actions' metadata together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed

from .common import cohort_members, members_table, watching
from .db import (
    Connection,
    Params,
    connect,
    db_details,
    db_message,
    first_line,
    is_transient,
    jsonable,
    psycopg_module,
    scrub,
)

DEFAULT_MAX_ROWS = 100


def _where(params: Mapping[str, Any]) -> str:
    where = params.get("where")
    return f" where {where}" if where else ""


def split_sqlite(script: str) -> list[tuple[int, str]]:
    """A SQLite script as (line, statement) pairs, split where SQLite says one is complete
    (so a ``;`` inside a string, a comment or a trigger body does not split)."""
    out: list[tuple[int, str]] = []
    start = 0
    for i, ch in enumerate(script):
        if ch == ";" and sqlite3.complete_statement(script[start : i + 1]):
            _add(out, script, start, i + 1)
            start = i + 1
    _add(out, script, start, len(script))
    return out


def _add(out: list[tuple[int, str]], script: str, start: int, end: int) -> None:
    text = script[start:end]
    stripped = text.strip().rstrip(";").strip()
    if stripped and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in stripped.splitlines()
    ):
        lead = len(text) - len(text.lstrip())
        out.append((script.count("\n", 0, start + lead) + 1, text.strip()))


def _statements(sql: str | list[str], kind: str) -> list[tuple[str, str]]:
    """(label, statement) pairs: a list as given; a SQLite script split; a PostgreSQL
    script whole (the server runs it in one round trip and locates errors itself)."""
    if isinstance(sql, list):
        return [(f"statement {i} of {len(sql)}", s) for i, s in enumerate(sql, 1) if s.strip()]
    if kind == "sqlite":
        parts = split_sqlite(sql)
        return [
            (f"statement {i} of {len(parts)} (line {ln})", s) for i, (ln, s) in enumerate(parts, 1)
        ]
    return [("script", sql)]


def _pg_located(exc: Exception, script: str, conn: Connection) -> ActionFailed:
    """A PostgreSQL error in a script, naming the line the server points at."""
    pos = getattr(getattr(exc, "diag", None), "statement_position", None)
    where = ""
    if pos and str(pos).isdigit():
        offset = int(str(pos)) - 1
        line_no = script.count("\n", 0, offset) + 1
        line = script.splitlines()[line_no - 1].strip() if script.splitlines() else ""
        where = f"line {line_no}: {first_line(line, conn.masker)!r} failed: "
    message = f"{conn.label}: {where}{db_message(exc)}"
    return ActionFailed(
        scrub(message, conn.dsn),
        details=scrub(db_details(exc, conn.masker), conn.dsn),
        retryable=is_transient(exc),
    )


def params_of(params: Mapping[str, Any], statements: int = 1) -> Params:
    """``with.params``: a list (positional) or a mapping (named); positional ones bind one
    statement only."""
    bound = params.get("params")
    if bound is None or bound == [] or bound == {}:
        return ()
    if not isinstance(bound, (list, Mapping)):
        raise ActionFailed(
            f"params: expected a list or a mapping, got {type(bound).__name__}", retryable=False
        )
    if isinstance(bound, list) and statements > 1:
        raise ActionFailed(
            f"params: a list binds one statement, and `sql` has {statements}: use named "
            "parameters (a mapping), or one statement per step",
            retryable=False,
        )
    return bound


class SqlExecAction(BuiltinAction):
    name = "sql.exec"
    summary = "run SQL statements in one transaction"
    idempotent = False
    changes = True
    sql_keys = frozenset({"sql"})

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        dsn: str = params["dsn"]
        members = cohort_members(params, ctx)
        with connect(dsn, masker=ctx.masker) as conn, watching(ctx, conn) as watch:
            if members is not None:
                members_table(conn, members)
            statements = _statements(params["sql"], conn.kind)
            bound = params_of(params, len(statements))
            rowcount = 0
            try:
                with conn.transaction():
                    for label, stmt in statements:
                        watch.check(f"before {label}; nothing was committed", {})
                        rowcount += self._one(conn, label, stmt, bound)
            except ActionFailed as exc:
                raise watch.explain(exc, "; nothing was committed") from None
        return {"rowcount": rowcount}

    def _one(self, conn: Connection, label: str, stmt: str, bound: Params = ()) -> int:
        if conn.kind == "sqlite" or label != "script" or bound:
            context = "" if label in ("statement 1 of 1", "script") else label
            cur = conn.execute(stmt, bound, context=context)
            return max(int(cur.rowcount), 0)
        psycopg = psycopg_module()
        cur = conn.raw.cursor()
        try:
            cur.execute(stmt)
            total = max(int(cur.rowcount), 0)
            while cur.nextset():
                total += max(int(cur.rowcount), 0)
        except psycopg.Error as exc:
            raise _pg_located(exc, stmt, conn) from None
        return total


class SqlQueryAction(BuiltinAction):
    name = "sql.query"
    summary = "run one SQL query"
    idempotent = True
    changes = False
    sql_keys = frozenset({"query"})

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"query: {first_line(str(params.get('query', '')))}"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        query: str = params["query"]
        max_rows = int(params.get("max_rows", DEFAULT_MAX_ROWS))
        bound = params_of(params)
        with (
            connect(params["dsn"], must_exist=True, read_only=True, masker=ctx.masker) as conn,
            watching(ctx, conn) as watch,
        ):
            try:
                cur = conn.execute(query, bound)
                if cur.description is None:
                    return {"value": None, "rows": [], "columns": [], "truncated": False}
                columns = [str(d[0]) for d in cur.description]
                rows = cur.fetchmany(max(max_rows, 1) + 1)
            except ActionFailed as exc:
                raise watch.explain(exc, "") from None
            finally:
                conn.rollback()
        value = jsonable(rows[0][0]) if rows else None
        kept = [[jsonable(v) for v in row] for row in rows[:max_rows]]
        return {
            "value": value,
            "rows": kept,
            "columns": columns,
            "truncated": len(rows) > max_rows,
        }


class SqlCopyAction(BuiltinAction):
    name = "sql.copy"
    summary = "copy rows between databases, upserting on a key"
    idempotent = True
    changes = True
    sql_keys = frozenset({"where"})

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"copy {params.get('table')} rows{_where(params)}, upsert on {params.get('key')}"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        from .copy import copy

        return copy(params, ctx)


class SqlVerifyAction(BuiltinAction):
    name = "sql.verify"
    summary = "compare rows on both sides by count and per-row checksum"
    idempotent = True
    changes = False
    sql_keys = frozenset({"where"})

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"verify {params.get('table')} rows{_where(params)} match on both sides"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        from .verify import verify

        return verify(params, ctx)
