"""What the ledger's and the outbox's SQL say differently on the two state backends, keyed on
``db.dialect`` (``"sqlite"``: ``db.py``; ``"postgresql"``: ``pg.py``). Everything else of the
ledger's SQL is the same text on both: on PostgreSQL each connection sees the runbook's ledger
rows through temporary views named like the directory's tables (``pg.ledger_views``); the
outbox is one table for every runbook there, scoped by ``outbox.scope``.

- a key as a parameter: SQLite keeps it untyped; PostgreSQL's ``key`` column is JSONB (the
  value with its type: 1 is not '1'), so a key is sent as JSON (``key``);
- temporary tables of keys (and of rows keyed by them, ``rows_table``): SQLite's ``temp``
  schema, untyped keys, inserts in the process (no round trip); PostgreSQL's ``pg_temp``,
  JSONB keys, one ``COPY``;
- the frozen draw: SQLite inserts in the process with the wave index built after; PostgreSQL
  loads it with one ``COPY``;
- catalogue, row identity, NULL-safe comparison, a JSON attribute, an exact key comparison;
- the outbox: a member's key in its rows (``with_key``), the driver's errors, the relay's
  skip-locked claim, a reader's read-only session.

Outside data (keys, attributes) are always parameters or COPY data, never SQL text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .db import Database
from .pg import LEDGER_TABLES

PG = "postgresql"


def _pg(db: Database) -> bool:
    return db.dialect == PG


def has_table(db: Database, name: str) -> bool:
    """The table ``name`` of the state exists (on PostgreSQL: this session's view of a ledger
    table; the schema's other tables are there, its version was checked on opening)."""
    if _pg(db):
        if name not in LEDGER_TABLES:
            return True
        return db.query("SELECT to_regclass(?)", (f"pg_temp.{name}",))[0][0] is not None
    return bool(db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))


def key(db: Database, value: Any) -> Any:
    """A ledger key as a statement's parameter."""
    if _pg(db):
        from psycopg.types.json import Jsonb

        return Jsonb(value)
    return value


def keys(db: Database, values: Iterable[Any]) -> list[Any]:
    return [key(db, v) for v in values]


def with_key(db: Database, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows whose last column is a ledger key or None (an outbox row's ``entity``), that key
    as ``key`` sends it (JSONB on PostgreSQL, None a NULL); on SQLite the rows as they are."""
    if not _pg(db):
        return rows
    return [(*r[:-1], None if r[-1] is None else key(db, r[-1])) for r in rows]


def errors(db: Database) -> tuple[type[BaseException], ...]:
    """The driver's errors (psycopg's, or sqlite3's)."""
    if _pg(db):
        import psycopg

        return (psycopg.Error,)
    import sqlite3

    return (sqlite3.Error,)


def skip_locked(db: Database) -> str:
    """The tail of a claim's ``SELECT``: on PostgreSQL the row is locked as it is read and a
    row another transaction holds is passed over; SQLite has one writer at a time."""
    return " FOR UPDATE SKIP LOCKED" if _pg(db) else ""


def read_only(db: Database) -> None:
    """This connection's transactions read only: PostgreSQL's session default, SQLite's
    ``query_only``."""
    if _pg(db):
        db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    else:
        db.execute("PRAGMA query_only = ON")


def _text(value: Any) -> str:
    """A key as COPY's text for a JSONB column."""
    return json.dumps(value, separators=(",", ":"))


def temp(db: Database, name: str) -> str:
    """The qualified name of this connection's temporary table ``name``."""
    return f"pg_temp.{name}" if _pg(db) else f"temp.{name}"


def keys_table(db: Database, name: str, values: Iterable[Any], attrs: bool = False) -> str:
    """This connection's temporary table ``name`` (``key`` unique, and ``attrs`` TEXT when
    asked) holding ``values`` (keys, or (key, attrs) pairs): the first of a repeated key is
    kept. Emptied first; returns its qualified name."""
    cols = "key, attrs" if attrs else "key"
    qualified = temp(db, name)
    if not _pg(db):
        extra = ", attrs TEXT" if attrs else ""
        db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (key PRIMARY KEY{extra}) WITHOUT ROWID")
        db.execute(f"DELETE FROM {qualified}")
        marks = "?, ?" if attrs else "?"
        rows = values if attrs else ((v,) for v in values)
        db.executemany(f"INSERT OR IGNORE INTO {qualified} ({cols}) VALUES ({marks})", rows)
        return qualified
    extra = ", attrs TEXT" if attrs else ""
    db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (key JSONB PRIMARY KEY{extra})")
    db.execute(f"DELETE FROM {qualified}")
    seen: set[str] = set()

    def fresh() -> Iterable[Sequence[Any]]:
        for v in values:
            k, rest = (v[0], tuple(v[1:])) if attrs else (v, ())
            text = _text(k)
            if text not in seen:
                seen.add(text)
                yield (text, *rest)

    n = db.copy(f"COPY {qualified} ({cols}) FROM STDIN", fresh())  # type: ignore[attr-defined]
    if n > 1000:
        db.execute(f"ANALYZE {qualified}")
    return qualified


def rows_table(
    db: Database, name: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]
) -> str:
    """This connection's temporary table ``name`` (``key`` unique, then ``columns``: (name,
    type) pairs) holding ``rows`` (key first), for a set-wise statement to join with: one
    ``COPY`` on PostgreSQL, inserts in the process on SQLite. Returns its qualified name."""
    qualified = temp(db, name)
    typed = ", ".join(f"{c} {t}" for c, t in columns)
    cols = ", ".join(["key", *(c for c, _ in columns)])
    if _pg(db):
        db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (key JSONB PRIMARY KEY, {typed})")
        db.execute(f"DELETE FROM {qualified}")
        n = db.copy(  # type: ignore[attr-defined]
            f"COPY {qualified} ({cols}) FROM STDIN", ((_text(r[0]), *r[1:]) for r in rows)
        )
        if n > 1000:
            db.execute(f"ANALYZE {qualified}")
        return qualified
    db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (key PRIMARY KEY, {typed}) WITHOUT ROWID")
    db.execute(f"DELETE FROM {qualified}")
    marks = ", ".join("?" * (len(columns) + 1))
    db.executemany(f"INSERT INTO {qualified} ({cols}) VALUES ({marks})", rows)
    return qualified


def pairs_table(db: Database, name: str) -> str:
    """This connection's temporary table ``name`` (key unique, state TEXT), emptied: filled by
    the caller's INSERT … SELECT from the ledger. Returns its qualified name."""
    qualified = temp(db, name)
    typed = "JSONB " if _pg(db) else ""
    db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (key {typed}PRIMARY KEY, state TEXT)")
    db.execute(f"DELETE FROM {qualified}")
    return qualified


def load_entities(
    db: Database,
    cohort: str,
    at: str,
    rows: Iterable[tuple[Any, str | None, str, str | None, str | None, int, str]],
) -> None:
    """The frozen draw's entities: (key, wave, state, reason, stratum, rank, attrs JSON)."""
    if _pg(db):
        runbook = db.runbook  # type: ignore[attr-defined]
        db.copy(  # type: ignore[attr-defined]
            "COPY runbook.entity (runbook, cohort, key, wave, state, reason, stratum, rank,"
            " attrs, updated_at) FROM STDIN",
            ((runbook, cohort, _text(r[0]), *r[1:], at) for r in rows),
        )
        return
    # the wave index is built once after the rows, not kept up to date row by row
    db.execute("DROP INDEX IF EXISTS entity_by_wave")
    db.executemany(
        "INSERT INTO entity (cohort, key, wave, state, reason, stratum, rank, attrs, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((cohort, *row, at) for row in rows),
    )
    db.execute("CREATE INDEX entity_by_wave ON entity (cohort, wave, state)")


def same_rows(db: Database, select_from: str) -> str:
    """The condition of an ``UPDATE entity`` for the rows ``SELECT … {select_from}`` finds
    (``select_from``: ``FROM entity [e] WHERE …``, whose ``e`` alias is given as ``e.``)."""
    alias = "e." if " entity e " in f"{select_from} " else ""
    if _pg(db):
        # the condition itself, on the updated rows: a semi-join of the view on itself was
        # planned as a nested loop over the whole wave (66 s for 15,000 members, measured)
        for plain in ("FROM entity WHERE ", "FROM entity e WHERE "):
            if select_from.startswith(plain):
                return "(" + re.sub(r"\be\.", "entity.", select_from[len(plain) :]) + ")"
        return f"(cohort, key) IN (SELECT {alias}cohort, {alias}key {select_from})"
    return f"rowid IN (SELECT {alias}rowid {select_from})"


def differs(db: Database) -> str:
    """NULL-safe ``<>``."""
    return "IS DISTINCT FROM" if _pg(db) else "IS NOT"


def json_field(db: Database, column: str) -> str:
    """``column``'s (JSON text) attribute named by the next parameter, as text (a row whose
    attributes hold a NUL is read by Python: ``journeys.rows``)."""
    return f"({column})::jsonb ->> ?" if _pg(db) else f"{column} ->> ?"


def contains(db: Database, column: str, literal: str) -> str:
    """``column`` (text) holds the SQL string ``literal``."""
    return f"strpos({column}, {literal}) > 0" if _pg(db) else f"instr({column}, {literal}) > 0"


def exact(db: Database, column: str) -> str:
    """``column`` in a comparison or order that must not use its index or affinity: SQLite's
    unary ``+``; PostgreSQL compares JSONB by type already."""
    return column if _pg(db) else f"+{column}"
