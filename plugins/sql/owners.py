"""The cohort members that differing rows belong to (``sql.verify`` with ``cohort:``).

A member is ``failed`` when one of its rows differs. When the member column is part of the
table's key, it is read off the differing keys; when it is not (``cohort_key``: the orders of
a customer, key ``id``, member column ``customer_id``), the differing rows are looked up by key
in batches, never one query per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .common import Column
from .db import Connection, quote_ident

BATCH = 500  # differing keys looked up per query (cohort_key outside the key)


def owners_of(
    sides: Sequence[tuple[Connection, str, Sequence[Column]]],
    column: str,
    every: Sequence[tuple[tuple[Any, ...], str]],
) -> Iterator[tuple[Any, str]]:
    """The members the differing rows belong to, each once per kind of difference.

    When ``column`` (the cohort's key, or ``cohort_key``) is one of the key columns it is read
    off the keys. Otherwise (orders of a customer: key ``id``, member column ``customer_id``)
    the rows are looked up by key, in batches, on the side that has them: the source for a
    missing row, the target for an extra one, both for a different one (a row that moved to
    another member fails both)."""
    seen: set[tuple[Any, str]] = set()

    def once(owner: Any, kind: str) -> Iterator[tuple[Any, str]]:
        if owner is not None and (owner, kind) not in seen:
            seen.add((owner, kind))
            yield owner, kind

    names = [c.name.lower() for c in sides[0][2]]
    if column.lower() in names:
        i = names.index(column.lower())
        for key, kind in every:
            yield from once(key[i], kind)
        return
    wanted = (("missing", "different"), ("extra", "different"))
    for (conn, table, key_cols), kinds in zip(sides, wanted, strict=True):
        by_key = {key: kind for key, kind in every if kind in kinds}
        for owner, key in _lookup(conn, table, key_cols, column, list(by_key)):
            yield from once(owner, by_key[key])


def _lookup(
    conn: Connection, table: str, key_cols: Sequence[Column], column: str, keys: list[Any]
) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """(member column, key) of the rows of ``table`` with these keys."""
    names = ", ".join(c.q for c in key_cols)
    nk = len(key_cols)
    one = "(" + ", ".join([conn.param] * nk) + ")"
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]
        values = ", ".join([one] * len(batch))
        sql = (
            f"SELECT {quote_ident(column)}, {names} FROM {table} "
            f"WHERE ({names}) IN (VALUES {values})"
        )
        cur = conn.execute(sql, [v for key in batch for v in key], context="cohort_key")
        for row in cur.fetchall():
            yield row[0], tuple(row[1:])
    conn.rollback()
