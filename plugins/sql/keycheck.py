"""``sql.verify``'s key check: a key must identify one row on each side.

Rows are compared by key, so a key held by two rows (or by none: NULL) on either side makes
the comparison meaningless there: range digests of duplicated rows can cancel out, and range
filters never select a NULL key. Each side is checked before the comparison; every duplicated
key, and the rows whose key is NULL, are reported as differences (issue 13 audit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .common import Column, where_sql
from .db import Connection

SHOWN = 1000  # duplicated keys listed per side at most


def key_problems(
    conn: Connection, table: str, where: str | None, keys: Sequence[Column], name: str
) -> tuple[list[tuple[tuple[Any, ...], str, int]], int]:
    """([(key, reason, rows)], rows with a NULL key) for one side. A key that is the table's
    primary key is unique by constraint (on PostgreSQL also NOT NULL; on SQLite only a rowid
    key is): those queries are skipped."""
    pg = conn.kind == "postgresql"
    cols = [k.q for k in keys]
    whole_pk = all(k.pk for k in keys)
    rowid = not pg and len(keys) == 1 and keys[0].pk and keys[0].decl.upper() == "INTEGER"
    out: list[tuple[tuple[Any, ...], str, int]] = []
    base = where_sql(where)
    nulls = 0
    if not ((pg and whole_pk) or rowid):
        null_cond = " OR ".join(f"{c} IS NULL" for c in cols)
        ((nulls,),) = _query(conn, f"SELECT count(*) FROM {table} WHERE ({base}) AND ({null_cond})")
        nulls = int(nulls)
        if nulls:
            what = "a row" if nulls == 1 else f"{nulls:,} rows"
            key = tuple(None for _ in keys)
            out.append((key, f"{what} with a NULL key on the {name}", nulls))
    if not whole_pk:
        listed = ", ".join(cols)
        not_null = " AND ".join(f"{c} IS NOT NULL" for c in cols)
        rows = _query(
            conn,
            f"SELECT {listed}, count(*) FROM {table} WHERE ({base}) AND {not_null} "
            f"GROUP BY {listed} HAVING count(*) > 1 ORDER BY {listed} LIMIT {SHOWN}",
        )
        for row in rows:
            n = int(row[-1])
            out.append((tuple(row[:-1]), f"key held by {n} rows on the {name}", n - 1))
    return out, nulls


def _query(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    cur = conn.raw.cursor()
    try:
        cur.execute(sql)  # no parameters: a % in ``where`` stays an operator
        return [tuple(r) for r in cur.fetchall()]
    finally:
        cur.close()
        if conn.kind == "postgresql":
            conn.rollback()
