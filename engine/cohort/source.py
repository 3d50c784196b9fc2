"""Reading a cohort's source: its query, read-only, with each row's exclusion reason computed
by the source database itself (SPEC §11: ``exclude`` items are SQL predicates, never per-row
templates), streamed in batches."""

from __future__ import annotations

import decimal
import math
from collections.abc import Iterator
from typing import Any

from ..errors import ActionFailed
from ..format.model import Cohort
from ..format.yamlsource import Path
from .draw import DrawError

BATCH = 10_000


# (key, exclusion reason or None, stratum as JSON text or None, attributes as JSON text)
Row = tuple[Any, str | None, str | None, str]


def _db() -> Any:
    from runbook_engine.plugins.sql import db

    return db


def located(cohort: Cohort, where: Path, message: str, source: Any) -> DrawError:
    """A DrawError that points into the runbook (``file:line:col: path: message``)."""
    if source is None:
        return DrawError(message)
    return DrawError(str(source.problem(where, message)))


def columns(cohort: Cohort, dsn: str, smap: Any = None) -> list[str]:
    """The source query's columns; the key and every attribute must be among them."""
    db = _db()
    try:
        with db.connect(dsn, must_exist=True, read_only=True) as conn:
            cur = conn.execute(f"SELECT * FROM ({cohort.query}) AS rb_source LIMIT 0")
            names = [str(d[0]) for d in cur.description]
            conn.rollback()
    except ActionFailed as exc:
        raise located(
            cohort,
            (*cohort.path, "source", "query"),
            f"cohort {cohort.name!r}: the source query failed: {exc.message}",
            smap,
        ) from None
    for what, path, wanted in (
        ("key", (*cohort.path, "key"), [cohort.key]),
        ("attribute", (*cohort.path, "attributes"), list(cohort.attributes)),
    ):
        for name in wanted:
            if name not in names:
                raise located(
                    cohort,
                    path,
                    f"cohort {cohort.name!r}: the {what} column {name!r} is not in the source "
                    f"query's columns ({', '.join(names)})",
                    smap,
                )
    return names


def key_of(value: Any) -> Any:
    """A source's key as the ledger keeps it: integers and text as they are; a number that is
    whole as an integer; any other finite float (a REAL) as it is, so that the members' joins
    find the source's row by its own value (its text '1.5' would match no REAL 1.5: issue 14);
    a UUID, a date, a decimal or anything else as its text (SQLite stores those types, and
    the members' joins compare them the same way on every engine)."""
    kind = type(value)
    if kind is int or kind is str or value is None:
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else str(value.normalize())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


# the longest key a cohort's ledger keeps, in bytes of its UTF-8 text: PostgreSQL's index of
# the ledger's keys holds at most 2,704 bytes a row (runbook, cohort and key together); the same
# limit on both backends, so that a draw does not depend on where the state is (README)
MAX_KEY_BYTES = 1024


def unusable(key: Any) -> str | None:
    """Why the ledger cannot keep ``key``, as the draw's exclusion reason, or None: ``bad-key``
    for a text with a NUL character (PostgreSQL's text and JSONB cannot hold it),
    ``key-too-long`` for one over ``MAX_KEY_BYTES``. Only text keys can be either."""
    if type(key) is not str:
        return None
    if "\x00" in key:
        return "bad-key"
    if len(key) > MAX_KEY_BYTES // 4 and len(key.encode()) > MAX_KEY_BYTES:
        return "key-too-long"
    return None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_sql(kind: str, names: tuple[str, ...], q: Any, obj: bool) -> str:
    """SQL that builds JSON in the source database (one expression: no per-row Python)."""
    if not names:
        return "'{}'" if obj else "NULL"
    if obj:
        pairs = ", ".join(f"{_literal(n)}, {q(n)}" for n in names)
        return f"json_object({pairs})" if kind == "sqlite" else f"json_build_object({pairs})::text"
    items = ", ".join(q(n) for n in names)
    return f"json_array({items})" if kind == "sqlite" else f"json_build_array({items})::text"


def rows(cohort: Cohort, dsn: str, smap: Any = None) -> Iterator[Row]:
    """Every row of the source, in batches: the key, the exclusion reason and the stratum and
    attributes as JSON, all computed by the source database."""
    db = _db()
    columns(cohort, dsn, smap)
    q = db.quote_ident
    kind = db.kind_of(dsn)
    params: list[Any] = []
    if cohort.exclude:
        mark = "?" if kind == "sqlite" else "%s"
        cases = []
        for e in cohort.exclude:
            cases.append(f"WHEN ({e.where}) THEN {mark}")
            params.append(e.reason)
        reason = "CASE " + " ".join(cases) + " END"
    else:
        reason = "NULL"
    select = [
        q(cohort.key),
        reason,
        _json_sql(kind, cohort.stratify_by, q, obj=False),
        _json_sql(kind, cohort.attributes, q, obj=True),
    ]
    sql = f"SELECT {', '.join(select)} FROM ({cohort.query}) AS rb_source"
    try:
        with db.connect(dsn, must_exist=True, read_only=True) as conn:
            cur = conn.execute(sql, params)
            while True:
                batch = cur.fetchmany(BATCH)
                if not batch:
                    break
                for row in batch:
                    key = row[0]
                    if type(key) is int or type(key) is str:
                        yield row
                    else:
                        yield (key_of(key), *row[1:])
            conn.rollback()
    except ActionFailed as exc:
        raise located(
            cohort,
            (*cohort.path, "exclude") if cohort.exclude else (*cohort.path, "source"),
            f"cohort {cohort.name!r}: reading the source failed: {exc.message}",
            smap,
        ) from None
    except Exception as exc:
        if not db.is_driver_error(exc):
            raise
        raise located(
            cohort,
            (*cohort.path, "source"),
            f"cohort {cohort.name!r}: reading the source failed: {db.db_message(exc)}",
            smap,
        ) from None
