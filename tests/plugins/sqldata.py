"""Customer tables on real SQLite files and real PostgreSQL databases, for the SQL tests."""

from __future__ import annotations

import datetime as dt
import decimal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.plugins.sql.db import sqlite_path

SQLITE_DDL = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT,"
    " status TEXT, created_at TIMESTAMP, balance NUMERIC(12,2), locale TEXT)"
)
PG_DDL = (
    "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text,"
    " status text, created_at timestamptz, balance numeric(12,2), locale text)"
)
DIRECTIONS = ["sqlite-sqlite", "sqlite-pg", "pg-pg", "pg-sqlite"]
COLUMNS = ("id", "name", "email", "status", "created_at", "balance", "locale")
STATUSES = ("active", "cancelled", "pending")
LOCALES = ("fr_FR", "en_GB", "pt_BR", "de_DE")
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def customer(i: int) -> tuple[Any, ...]:
    """Row ``i``: deterministic, with a NULL email every 7th and an empty one every 11th."""
    email = None if i % 7 == 0 else ("" if i % 11 == 0 else f"c{i}@example.com")
    return (
        i,
        f"Customer {i} é",
        email,
        STATUSES[i % 3],
        EPOCH + dt.timedelta(minutes=i),
        decimal.Decimal(i % 1000) + decimal.Decimal("0.50"),
        LOCALES[i % 4],
    )


def sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        v.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(v, dt.datetime)
        else (str(v) if isinstance(v, decimal.Decimal) else v)
        for v in row
    )


def make_customers(dsn: str, ids: range | list[int], *, table: bool = True) -> None:
    """Create ``customers`` on ``dsn`` (unless ``table`` is False) and insert rows ``ids``."""
    if dsn.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(dsn))
        with conn:
            if table:
                conn.execute(SQLITE_DDL)
            conn.executemany(
                "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sqlite_row(customer(i)) for i in ids),
            )
        conn.close()
        return
    import psycopg

    with psycopg.connect(dsn) as pg:
        if table:
            pg.execute(PG_DDL)
        with (
            pg.cursor() as cur,
            cur.copy(f"COPY customers ({', '.join(COLUMNS)}) FROM STDIN") as cp,
        ):
            for i in ids:
                cp.write_row(customer(i))


def create_empty(dsn: str) -> None:
    make_customers(dsn, [], table=True)


def run_sql(dsn: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement outside the code under test; its rows (committed)."""
    if dsn.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(dsn))
        with conn:
            rows = conn.execute(sql, args).fetchall()
        conn.close()
        return rows
    import psycopg

    with psycopg.connect(dsn) as pg:
        cur = pg.execute(sql, args or None)
        return cur.fetchall() if cur.description else []


def sqlite_file(tmp: Path, name: str) -> str:
    return f"sqlite:///{tmp / name}"


@pytest.fixture(name="pair")
def _pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(source DSN, target DSN) for the direction in ``request.param``."""
    src_kind, dst_kind = request.param.split("-")
    dsns = []
    for side, kind in (("source", src_kind), ("target", dst_kind)):
        if kind == "sqlite":
            dsns.append(sqlite_file(tmp_path, f"{side}.db"))
        else:
            server = request.getfixturevalue("postgres_server")
            name = server.create_database()
            request.addfinalizer(lambda n=name, s=server: s.drop_database(n))
            dsns.append(server.dsn(name))
    return dsns[0], dsns[1]
