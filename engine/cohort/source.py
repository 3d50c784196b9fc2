"""Reading a cohort's source: its query, read-only, with each row's exclusion reason computed
by the source database itself (SPEC §11: ``exclude`` items are SQL predicates, never per-row
templates), streamed in batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ActionFailed
from ..format.model import Cohort
from ..format.yamlsource import Path
from .draw import DrawError

BATCH = 10_000


@dataclass
class Row:
    key: Any
    reason: str | None  # the first `exclude` whose `where` holds, or None
    attrs: tuple[Any, ...]  # in the order of `cohort.attributes`


def _db() -> Any:
    from runbook_engine.plugins.sql import db

    return db


def located(cohort: Cohort, where: Path, message: str, source: Any) -> DrawError:
    """A DrawError that points into the runbook (``file:line:col: path: message``)."""
    if source is None:
        return DrawError(message)
    return DrawError(str(source.problem(where, message)))


def _read_only(conn: Any) -> None:
    if conn.kind == "sqlite":
        conn.raw.execute("PRAGMA query_only = ON")
    else:
        conn.execute("SET TRANSACTION READ ONLY")


def columns(cohort: Cohort, dsn: str, smap: Any = None) -> list[str]:
    """The source query's columns; the key and every attribute must be among them."""
    db = _db()
    try:
        with db.connect(dsn, must_exist=True) as conn:
            _read_only(conn)
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


def rows(cohort: Cohort, dsn: str, smap: Any = None) -> Iterator[Row]:
    """Every row of the source, in batches; the exclusion reason decided by the database."""
    db = _db()
    columns(cohort, dsn, smap)
    q = db.quote_ident
    select = [q(cohort.key), *(q(a) for a in cohort.attributes)]
    params: list[Any] = []
    if cohort.exclude:
        mark = "?" if db.kind_of(dsn) == "sqlite" else "%s"
        cases = []
        for e in cohort.exclude:
            cases.append(f"WHEN ({e.where}) THEN {mark}")
            params.append(e.reason)
        select.append("CASE " + " ".join(cases) + " END")
    else:
        select.append("NULL")
    sql = f"SELECT {', '.join(select)} FROM ({cohort.query}) AS rb_source"
    n = len(cohort.attributes)
    try:
        with db.connect(dsn, must_exist=True) as conn:
            _read_only(conn)
            cur = conn.execute(sql, params)
            while True:
                batch = cur.fetchmany(BATCH)
                if not batch:
                    break
                for r in batch:
                    yield Row(r[0], r[n + 1], tuple(r[1 : n + 1]))
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
