"""``sql.verify`` holes found by the issue 13 audit: each test is named after its hole and
runs on real databases (SQLite files, a real PostgreSQL)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.sql.actions import SqlVerifyAction
from runbook_engine.plugins.sql.db import sqlite_path
from tests.plugins.sqldata import (  # noqa: F401  (_pair: the `pair` fixture)
    _pair,
    run_sql,
)

ALL = ["sqlite-sqlite", "sqlite-postgresql", "postgresql-postgresql"]


def verify(make_ctx: Any, **params: Any) -> dict[str, Any]:
    return dict(SqlVerifyAction().run(params, make_ctx()))


def fails(make_ctx: Any, **params: Any) -> ActionFailed:
    with pytest.raises(ActionFailed) as info:
        verify(make_ctx, **params)
    return info.value


def table(dsn: str, ddl: str, rows: list[tuple[Any, ...]]) -> None:
    """Create ``t`` and insert ``rows`` in one transaction, outside the code under test."""
    if dsn.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(dsn))
        with conn:
            conn.execute(ddl)
            for row in rows:
                conn.execute(f"INSERT INTO t VALUES ({', '.join('?' * len(row))})", row)
        conn.close()
        return
    import psycopg

    with psycopg.connect(dsn) as pg:
        pg.execute(ddl)
        if rows:
            marks = ", ".join(["%s"] * len(rows[0]))
            pg.cursor().executemany(f"INSERT INTO t VALUES ({marks})", rows)


@pytest.mark.parametrize("pair", ALL, indirect=True)
def test_duplicate_keys_do_not_cancel_out(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    table(src, "CREATE TABLE t (id integer, v text)", [(1, "a"), (2, "b"), (3, "c"), (3, "c")])
    table(dst, "CREATE TABLE t (id integer, v text)", [(1, "a"), (2, "b"), (4, "d"), (4, "d")])
    exc = fails(make_ctx, source=src, target=dst, table="t", key="id")
    assert "key held by 2 rows on the source" in str(exc), exc
    assert "key held by 2 rows on the target" in str(exc), exc
    assert "id=3" in str(exc) and "id=4" in str(exc)
    assert exc.retryable is False


@pytest.mark.parametrize("pair", ALL, indirect=True)
def test_duplicated_row_on_one_side_is_reported(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    table(src, "CREATE TABLE t (id integer, v text)", [(1, "a"), (2, "b"), (2, "b")])
    table(dst, "CREATE TABLE t (id integer, v text)", [(1, "a"), (2, "b")])
    exc = fails(make_ctx, source=src, target=dst, table="t", key="id")
    assert "id=2 (key held by 2 rows on the source)" in str(exc), exc


@pytest.mark.parametrize("pair", ALL, indirect=True)
def test_null_keys_are_reported_and_counted(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    table(src, "CREATE TABLE t (id integer, v text)", [(1, "a"), (None, "x"), (None, "y")])
    table(dst, "CREATE TABLE t (id integer, v text)", [(1, "a")])
    exc = fails(make_ctx, source=src, target=dst, table="t", key="id")
    assert "id=null (2 rows with a NULL key on the source)" in str(exc), exc
    assert exc.outputs is not None
    assert exc.outputs["rows_checked"] == 3
    assert exc.outputs["different"] == 2


def test_sqlite_pair_compares_nocase_columns_in_binary(tmp_path: Any, make_ctx: Any) -> None:
    src, dst = f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/d.db"
    ddl = "CREATE TABLE t (id TEXT COLLATE NOCASE PRIMARY KEY, v TEXT COLLATE RTRIM)"
    table(src, ddl, [("a", "x"), ("b", "y")])
    table(dst, ddl, [("A", "x"), ("b", "y  ")])
    exc = fails(make_ctx, source=src, target=dst, table="t", key="id")
    text = str(exc)
    assert 'missing on target: id="a"' in text and 'extra on target: id="A"' in text, text
    assert 'different: id="b"' in text, text


@pytest.mark.parametrize("pair", ["sqlite-postgresql", "postgresql-postgresql"], indirect=True)
def test_column_name_with_control_character(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    ddl = 'CREATE TABLE t (id integer PRIMARY KEY, "a\x01b" text)'
    table(src, ddl, [(i, "v") for i in range(1, 6000)])
    table(dst, ddl, [(i, "v" if i != 4000 else "w") for i in range(1, 6000)])
    exc = fails(make_ctx, source=src, target=dst, table="t", key="id")
    assert "different: id=4000" in str(exc), exc


@pytest.mark.parametrize("pair", ["sqlite-postgresql", "postgresql-postgresql"], indirect=True)
def test_bigint_keys_near_the_limits(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    big, small = 2**63 - 1, -(2**63)
    rows = [(small, "a"), (0, "b"), (big, "c")]
    table(src, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", rows)
    table(dst, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", rows)
    out = verify(make_ctx, source=src, target=dst, table="t", key="id")
    assert out["rows_checked"] == 3 and out["mismatches"] == 0
    run_sql(dst, "UPDATE t SET v = 'x' WHERE id = %s", (big,))
    exc = fails(make_ctx, source=src, target=dst, table="t", key="id")
    assert f"different: id={big}" in str(exc), exc


@pytest.mark.parametrize("pair", ["sqlite-postgresql", "postgresql-postgresql"], indirect=True)
def test_sparse_integer_keys_make_few_ranges(pair: tuple[str, str], make_ctx: Any) -> None:
    import time

    src, dst = pair
    rows = [(0, "a"), (10**10, "b"), (2**62, "c")]
    table(src, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", rows)
    table(dst, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", [*rows[:2], (2**62, "d")])
    started = time.monotonic()
    exc = fails(make_ctx, source=src, target=dst, table="t", key="id")
    assert time.monotonic() - started < 5
    assert f"different: id={2**62}" in str(exc), exc
    assert exc.outputs is not None and exc.outputs["rows_checked"] == 3


def test_numeric_beyond_28_digits_is_not_rounded(tmp_path: Any, pg_dsn: str, make_ctx: Any) -> None:
    src = f"sqlite:///{tmp_path}/s.db"
    same, other = "1234567890123456789012345678901.5", "1234567890123456789012345678901.6"
    table(src, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", [(1, same), (2, same)])
    table(pg_dsn, "CREATE TABLE t (id bigint PRIMARY KEY, v numeric)", [(1, same), (2, other)])
    exc = fails(make_ctx, source=src, target=pg_dsn, table="t", key="id")
    assert exc.outputs is not None and exc.outputs["different"] == 1, exc
    assert "different: id=2" in str(exc), exc


def test_date_against_text_with_a_time_of_day(tmp_path: Any, pg_dsn: str, make_ctx: Any) -> None:
    src = f"sqlite:///{tmp_path}/s.db"
    rows = [
        (1, "2024-01-01 23:59:59"),
        (2, "2024-01-01T00:00:00+02:00"),
        (3, "2024-01-01 00:00:00"),
    ]
    table(src, "CREATE TABLE t (id INTEGER PRIMARY KEY, d TEXT)", rows)
    table(
        pg_dsn,
        "CREATE TABLE t (id bigint PRIMARY KEY, d date)",
        [(i, "2024-01-01") for i in (1, 2, 3)],
    )
    exc = fails(make_ctx, source=src, target=pg_dsn, table="t", key="id")
    assert "different: id=1, id=2" in str(exc), exc
    assert exc.outputs is not None and exc.outputs["different"] == 2


@pytest.mark.parametrize("pair", ["sqlite-postgresql", "postgresql-postgresql"], indirect=True)
def test_jsonb_trailing_zero_and_double_digits_agree(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    jtype = "TEXT" if src.startswith("sqlite") else "jsonb"
    ftype = "REAL" if src.startswith("sqlite") else "double precision"
    table(
        src,
        f"CREATE TABLE t (id bigint PRIMARY KEY, j {jtype}, f {ftype})",
        [(1, '{"a": 1}', 0.1), (2, '{"a": true}', 1.0)],
    )
    table(
        dst,
        "CREATE TABLE t (id bigint PRIMARY KEY, j jsonb, f double precision)",
        [(1, '{"a": 1.0}', 0.1000000000000001), (2, '{"a": 1}', 1.0)],
    )
    exc = fails(make_ctx, source=src, target=dst, table="t", key="id")
    assert exc.outputs is not None and exc.outputs["different"] == 1, exc
    assert "different: id=2" in str(exc), exc


def test_integer_against_boolean_differs_in_stream(postgres_server: Any, make_ctx: Any) -> None:
    names = [postgres_server.create_database() for _ in range(2)]
    src, dst = (postgres_server.dsn(n) for n in names)
    try:
        table(
            src,
            "CREATE TABLE t (k uuid PRIMARY KEY, v integer)",
            [("0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e", 1)],
        )
        table(
            dst,
            "CREATE TABLE t (k text PRIMARY KEY, v boolean)",
            [("0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e", True)],
        )
        exc = fails(make_ctx, source=src, target=dst, table="t", key="k")
        assert 'different: k="0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e"' in str(exc), exc
        assert exc.outputs is not None and exc.outputs["missing"] == 0
    finally:
        for n in names:
            postgres_server.drop_database(n)


def test_uuid_key_matches_its_text(postgres_server: Any, make_ctx: Any) -> None:
    names = [postgres_server.create_database() for _ in range(2)]
    src, dst = (postgres_server.dsn(n) for n in names)
    u = "0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e"
    try:
        table(src, "CREATE TABLE t (k uuid PRIMARY KEY, v integer)", [(u, 1)])
        table(dst, "CREATE TABLE t (k text PRIMARY KEY, v integer)", [(u, 1)])
        out = verify(make_ctx, source=src, target=dst, table="t", key="k")
        assert out["rows_checked"] == 1 and out["mismatches"] == 0
    finally:
        for n in names:
            postgres_server.drop_database(n)


@pytest.mark.parametrize("pair", ["sqlite-postgresql", "postgresql-postgresql"], indirect=True)
def test_copy_into_pg_without_unique_key_is_refused(pair: tuple[str, str], make_ctx: Any) -> None:
    from runbook_engine.plugins.sql.actions import SqlCopyAction

    src, dst = pair
    table(src, "CREATE TABLE t (id bigint PRIMARY KEY, v text)", [(1, "a"), (2, "b")])
    table(dst, "CREATE TABLE t (id bigint, v text)", [])
    with pytest.raises(ActionFailed) as info:
        SqlCopyAction().run({"source": src, "target": dst, "table": "t", "key": "id"}, make_ctx())
    text = str(info.value)
    assert 'has no primary key or unique index on exactly ("id")' in text, text
    assert 'ALTER TABLE t ADD PRIMARY KEY ("id")' in text and info.value.retryable is False
    assert run_sql(dst, "SELECT count(*) FROM t") == [(0,)]
    run_sql(dst, "CREATE UNIQUE INDEX ON t (id)")
    for _ in range(2):  # a re-run upserts: no row twice
        out = SqlCopyAction().run(
            {"source": src, "target": dst, "table": "t", "key": "id"}, make_ctx()
        )
        assert out["rows_copied"] == 2
    assert run_sql(dst, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b")]
