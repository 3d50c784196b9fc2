"""Canonical values per column pair (``canon``): Python, SQLite's SQL and PostgreSQL's SQL give
the same text for the same value (SPEC §6), and a SQLite value that does not parse says so."""

from __future__ import annotations

import datetime as dt
import decimal
import sqlite3
import uuid
from typing import Any

import pytest

from runbook_engine.plugins.sql.canon import (
    BAD,
    UUID,
    canon,
    ctype_of,
    pg_text,
    sqlite_function,
    sqlite_text,
)
from runbook_engine.plugins.sql.common import (
    BLOB,
    BOOL,
    DATE,
    FLOAT,
    INT,
    JSON,
    NUMERIC,
    OTHER,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    Column,
)

UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))

# (ctype, SQLite value as stored, canonical text) — every storage class SQLite may hold
SQLITE_CASES: list[tuple[str, Any, str | None]] = [
    (INT, 42, "42"), (INT, -7, "-7"), (INT, "0042", "42"), (INT, " 5 ", "5"), (INT, 5.0, "5"),
    (INT, None, None), (INT, "", BAD + INT), (INT, "5.5", BAD + INT), (INT, 5.5, BAD + INT),
    (INT, "abc", BAD + INT),
    (NUMERIC, 1.5, "1.5"), (NUMERIC, "1.50", "1.5"), (NUMERIC, "100.00", "100"), (NUMERIC, 100, "100"),
    (NUMERIC, 0.0, "0"), (NUMERIC, "-0.00", "0"), (NUMERIC, 0.51, "0.51"), (NUMERIC, 1e20, "100000000000000000000"),
    (NUMERIC, 1e-7, "0.0000001"), (NUMERIC, 0.1 + 0.2, "0.3"), (NUMERIC, "1e3", "1000"),
    (NUMERIC, "NaN", "NaN"), (NUMERIC, "12,5", BAD + NUMERIC), (NUMERIC, "1_000", BAD + NUMERIC),
    (NUMERIC, 123456789012.25, "123456789012.25"), (NUMERIC, -3.75, "-3.75"),
    (NUMERIC, 100.0, "100"), (NUMERIC, -42.0, "-42"), (NUMERIC, 12345678901234.0, "12345678901234"),
    (NUMERIC, 99999999999999.5, "99999999999999.5"), (NUMERIC, 0.0001, "0.0001"),
    (NUMERIC, 1234.5678, "1234.5678"), (FLOAT, 2.0, "2"), (FLOAT, -0.125, "-0.125"),
    (FLOAT, 2.5, "2.5"), (FLOAT, 3, "3"), (FLOAT, "2.50", "2.5"), (FLOAT, 10**16, "10000000000000000"),
    (FLOAT, "x", BAD + FLOAT),
    (BOOL, 1, "1"), (BOOL, 0, "0"), (BOOL, "true", "1"), (BOOL, "F", "0"), (BOOL, "maybe", BAD + BOOL),
    (TIMESTAMP, "2024-01-01 00:00:00", "2024-01-01 00:00:00"),
    (TIMESTAMP, "2024-01-01T00:00:00", "2024-01-01 00:00:00"),
    (TIMESTAMP, "2024-01-01T02:00:00+02:00", "2024-01-01 00:00:00"),
    (TIMESTAMP, "2024-01-01T00:00:00Z", "2024-01-01 00:00:00"),
    (TIMESTAMP, "2024-01-01 00:00:00.500", "2024-01-01 00:00:00.5"),
    (TIMESTAMP, "2024-01-01 00:00:00.1234565", "2024-01-01 00:00:00.123456"),
    (TIMESTAMP, "2024-01-01", "2024-01-01 00:00:00"), (TIMESTAMP, 0, "1970-01-01 00:00:00"),
    (TIMESTAMP, 1.5, "1970-01-01 00:00:01.5"),
    (TIMESTAMP, "2024-13-01 00:00:00", BAD + TIMESTAMP), (TIMESTAMP, "2024-02-30 10:00:00", BAD + TIMESTAMP),
    (TIMESTAMP, "yesterday", BAD + TIMESTAMP),
    (DATE, "2024-02-29", "2024-02-29"), (DATE, "2024-02-29 00:00:00", "2024-02-29"),
    (DATE, "2023-02-29", BAD + DATE),
    (UUID, "0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e", "0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e"),
    (UUID, "0B7E7A5C-3A8B-4A44-9B8A-1C1F6A0C2D3E", "0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e"),
    (UUID, "{0b7e7a5c3a8b4a449b8a1c1f6a0c2d3e}", "0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e"),
    (UUID, "nope", BAD + UUID),
    (BLOB, b"\x00\xff", "00ff"), (BLOB, "ab", "6162"),
    (JSON, '{"b": 1, "a": [1.50, null, "x\\n"]}', '{"a": [1.50, null, "x\\n"], "b": 1}'),
    (JSON, '{"aa":1,"b":2,"b":3}', '{"b": 3, "aa": 1}'), (JSON, "{bad", BAD + JSON),
    (TEXT, "", ""), (TEXT, "é", "é"), (TEXT, 7, "7"), (TEXT, 1.5, "1.5"), (TEXT, b"ok", "ok"),
    (TEXT, None, None), (OTHER, "x", "x"),
]  # fmt: skip


@pytest.mark.parametrize(("ctype", "value", "expected"), SQLITE_CASES)
def test_python_and_sqlite_sql_agree(ctype: str, value: Any, expected: str | None) -> None:
    assert canon(value, ctype) == expected
    db = sqlite3.connect(":memory:")
    db.create_function("rb_canon", 2, sqlite_function, deterministic=True)
    db.execute("CREATE TABLE t (v)")  # no affinity: the value keeps its storage class
    db.execute("INSERT INTO t VALUES (?)", (value,))
    (got,) = db.execute(f"SELECT {sqlite_text('v', ctype)} FROM t").fetchone()
    if expected is not None and expected.startswith(BAD) and got != expected:
        # SQL passes some texts through untouched: never equal to a valid canonical text,
        # and the Python reading (the leaf compare) says why
        assert got == value
    else:
        assert got == expected


def test_null_is_not_the_empty_string() -> None:
    for ctype in (TEXT, INT, TIMESTAMP, JSON, BLOB):
        assert canon(None, ctype) is None
    assert canon("", TEXT) == ""
    assert canon("", INT) == BAD + INT


def col(name: str, category: str, decl: str = "") -> Column:
    return Column(name, decl or category, category)


def test_the_pair_decides_the_comparison_type() -> None:
    legacy_text = col("created_at", TEXT, "TEXT")
    pg_ts = col("created_at", TIMESTAMPTZ, "timestamp with time zone")
    assert ctype_of(legacy_text, "sqlite", pg_ts, "postgresql") == TIMESTAMP
    assert ctype_of(pg_ts, "postgresql", legacy_text, "sqlite") == TIMESTAMP
    assert ctype_of(col("a", INT), "postgresql", col("a", NUMERIC), "postgresql") == NUMERIC
    assert ctype_of(col("a", FLOAT, "real"), "postgresql", col("a", FLOAT, "double precision"), "postgresql") == NUMERIC  # fmt: skip
    assert ctype_of(col("a", TIMESTAMP), "postgresql", pg_ts, "postgresql") == TIMESTAMP
    assert ctype_of(col("a", TEXT), "postgresql", col("a", INT), "postgresql") == TEXT
    assert ctype_of(col("a", OTHER, "uuid"), "postgresql", col("a", TEXT), "sqlite") == UUID


# (PostgreSQL type, value, canonical text): PostgreSQL's SQL gives what Python gives
PG_CASES: list[tuple[str, str, Any, str]] = [
    ("bigint", INT, 42, "42"), ("integer", INT, -1, "-1"), ("smallint", INT, 3, "3"),
    ("numeric(12,2)", NUMERIC, decimal.Decimal("1.50"), "1.5"),
    ("numeric", NUMERIC, decimal.Decimal("100.000"), "100"),
    ("numeric", NUMERIC, decimal.Decimal("0.00"), "0"),
    ("numeric", NUMERIC, decimal.Decimal("-12.3400"), "-12.34"),
    ("numeric", NUMERIC, decimal.Decimal("NaN"), "NaN"),
    ("double precision", FLOAT, 0.1 + 0.2, "0.3"), ("double precision", FLOAT, 1e20, "100000000000000000000"),
    ("double precision", FLOAT, -0.0, "0"), ("double precision", FLOAT, 2.5e-7, "0.00000025"),
    ("boolean", BOOL, True, "1"), ("boolean", BOOL, False, "0"),
    ("timestamp", TIMESTAMP, dt.datetime(2024, 1, 1, 0, 0, 0, 500000), "2024-01-01 00:00:00.5"),
    ("timestamptz", TIMESTAMP, dt.datetime(2024, 1, 1, 2, 0, tzinfo=PLUS2), "2024-01-01 00:00:00"),
    ("timestamptz", TIMESTAMP, dt.datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC), "0999-12-31 23:59:59.000001"),
    ("date", DATE, dt.date(2024, 2, 29), "2024-02-29"),
    ("uuid", UUID, uuid.UUID("0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e"), "0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e"),
    ("bytea", BLOB, b"\x00\xff", "00ff"),
    ("jsonb", JSON, '{"b": 1, "a": [1.50, null, "x\\n"], "aa": {"c": -0}}', '{"a": [1.50, null, "x\\n"], "b": 1, "aa": {"c": 0}}'),
    ("json", JSON, '{"b":1,"a":2}', '{"a": 2, "b": 1}'),
    ("text", TEXT, "", ""), ("varchar(5)", TEXT, "é", "é"),
]  # fmt: skip


@pytest.mark.servers
def test_postgresql_sql_gives_the_same_texts(pg_dsn: str) -> None:
    import psycopg

    from runbook_engine.plugins.sql.common import describe_table
    from runbook_engine.plugins.sql.db import connect

    with psycopg.connect(pg_dsn) as conn:
        cols = ", ".join(f"c{i} {t}" for i, (t, *_r) in enumerate(PG_CASES))
        conn.execute(f"CREATE TABLE t ({cols})")
        marks = ", ".join(["%s"] * len(PG_CASES))
        conn.execute(f"INSERT INTO t VALUES ({marks})", [v for _t, _c, v, _e in PG_CASES])
        conn.execute(f"INSERT INTO t VALUES ({', '.join(['NULL'] * len(PG_CASES))})")
    with connect(pg_dsn) as db:
        db.execute("SET TimeZone = 'Asia/Tokyo'")  # the session's zone must not matter...
        table = describe_table(db, "t")
        assert table is not None
        exprs = [pg_text(c, case[1]) for c, case in zip(table.columns, PG_CASES, strict=True)]
        db.execute("SET TimeZone = 'UTC'")  # ...once verify sets UTC, as it does
        got, nulls = db.execute(
            f"SELECT {', '.join(exprs)} FROM t ORDER BY c0 NULLS LAST"
        ).fetchall()
    for (pg_type, ctype, value, expected), text in zip(PG_CASES, got, strict=True):
        assert text == expected, pg_type
        if pg_type not in ("json", "jsonb"):
            assert canon(value, ctype) == expected, pg_type
        else:
            assert canon(value, JSON) == expected
    assert set(nulls) == {None}
