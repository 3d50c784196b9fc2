"""``sql.verify`` across engines and PostgreSQL ↔ PostgreSQL on a real PostgreSQL: every column
type pair compared as the pair decides (SPEC §6, issue 13), both directions, and the key
ranges bisected down to the keys on tables large enough to split."""

from __future__ import annotations

import datetime as dt
import decimal
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.sql.actions import SqlVerifyAction
from tests.plugins.sqldata import run_sql

pytestmark = pytest.mark.servers

U = uuid.UUID("0b7e7a5c-3a8b-4a44-9b8a-1c1f6a0c2d3e")
# name, PostgreSQL type, legacy SQLite declared type, PostgreSQL value, the same in SQLite
PAIRS: list[tuple[str, str, str, Any, Any]] = [
    ("i8", "bigint", "INTEGER", 42, 42),
    ("i4", "integer", "TEXT", 7, "0007"),
    ("num", "numeric(12,2)", "REAL", decimal.Decimal("1.50"), 1.5),
    ("numt", "numeric", "TEXT", decimal.Decimal("100.00"), "100"),
    ("flt", "double precision", "REAL", 0.1 + 0.2, 0.3),
    ("bl", "boolean", "INTEGER", True, 1),
    ("blt", "boolean", "TEXT", False, "f"),
    ("ts", "timestamp", "TEXT", dt.datetime(2024, 1, 1, 10), "2024-01-01T10:00:00"),
    ("tz", "timestamptz", "TEXT", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "2024-01-01T02:00:00+02:00"),
    ("tz2", "timestamptz", "TIMESTAMP", dt.datetime(2024, 6, 1, 12, 0, 0, 250000, tzinfo=dt.UTC), "2024-06-01 12:00:00.250"),
    ("d", "date", "TEXT", dt.date(2024, 2, 29), "2024-02-29"),
    ("u", "uuid", "TEXT", U, str(U).upper()),
    ("j", "jsonb", "TEXT", '{"a": 1, "b": [true, 1.5]}', '{"b":[true,1.5],"a":1}'),
    ("by", "bytea", "BLOB", b"\x00\x01", b"\x00\x01"),
    ("t", "text", "TEXT", "", ""),
    ("v", "varchar(10)", "VARCHAR(10)", "é", "é"),
]  # fmt: skip
# the same column changed on the SQLite side: each must be reported
CHANGED: dict[str, Any] = {
    "i8": 43, "i4": "8", "num": 1.51, "numt": "100.01", "flt": 0.31, "bl": 0, "blt": "t",
    "ts": "2024-01-01T10:00:01", "tz": "2024-01-01T03:00:00+02:00", "tz2": "2024-06-01 12:00:00.251",
    "d": "2024-03-01", "u": str(uuid.UUID(int=1)), "j": '{"a":2,"b":[true,1.5]}',
    "by": b"\x00\x02", "t": " ", "v": "e",
}  # fmt: skip


def _pg_table(dsn: str, rows: dict[int, dict[str, Any]]) -> None:
    import psycopg

    cols = ", ".join(f"{n} {t}" for n, t, *_r in PAIRS)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE pairs (id bigint PRIMARY KEY, {cols})")
        for key, values in rows.items():
            names = ", ".join(values)
            marks = ", ".join(["%s"] * (len(values) + 1))
            conn.execute(
                f"INSERT INTO pairs (id, {names}) VALUES ({marks})", [key, *values.values()]
            )


def _sqlite_table(path: Path, rows: dict[int, dict[str, Any]]) -> str:
    cols = ", ".join(f"{n} {d}" for n, _t, d, *_r in PAIRS)
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE pairs (id INTEGER PRIMARY KEY, {cols})")
        for key, values in rows.items():
            names = ", ".join(values)
            marks = ", ".join(["?"] * (len(values) + 1))
            db.execute(f"INSERT INTO pairs (id, {names}) VALUES ({marks})", [key, *values.values()])
    db.close()
    return f"sqlite:///{path}"


def _rows(side: int) -> dict[int, dict[str, Any]]:
    """Row 1: every value; 2: all NULL; 100+i: column i changed on the SQLite side."""
    same = {n: v[side] for n, *v in ((p[0], p[3], p[4]) for p in PAIRS)}
    rows: dict[int, dict[str, Any]] = {1: same, 2: {n: None for n, *_r in PAIRS}}
    for i, (name, *_r) in enumerate(PAIRS):
        rows[100 + i] = {**same, name: CHANGED[name]} if side == 1 else same
    return rows


def verify(make_ctx: Any, **params: Any) -> dict[str, Any]:
    return dict(SqlVerifyAction().run(params, make_ctx()))


@pytest.mark.parametrize("direction", ["sqlite-pg", "pg-sqlite"])
def test_every_column_type_pair_across_engines(
    direction: str, pg_dsn: str, make_ctx: Any, tmp_path: Path
) -> None:
    lite = _sqlite_table(tmp_path / "legacy.db", _rows(1))
    _pg_table(pg_dsn, _rows(0))
    src, dst = (lite, pg_dsn) if direction == "sqlite-pg" else (pg_dsn, lite)
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=src, target=dst, table="pairs", key="id", max_report=50)
    out = err.value.outputs
    # rows 1 and 2 (every value in its legacy form, every NULL) are equal; each changed one not
    assert out["rows_checked"] == 2 + len(PAIRS)
    assert out["different"] == len(PAIRS) and out["missing"] == out["extra"] == 0
    assert [d["key"] for d in out["first_differences"]] == [100 + i for i in range(len(PAIRS))]
    assert all("reason" not in d for d in out["first_differences"])
    # only the rows' own columns: each pair alone
    for i, (name, *_r) in enumerate(PAIRS):
        one = verify(make_ctx, source=src, target=dst, table="pairs", key="id", columns=[name],
                     where="id < 100")  # fmt: skip
        assert one["mismatches"] == 0, name
        with pytest.raises(ActionFailed, match=rf"different: id={100 + i}$"):
            verify(make_ctx, source=src, target=dst, table="pairs", key="id", columns=[name],
                   where=f"id = 1 OR id = {100 + i}")  # fmt: skip


def test_null_empty_string_and_unparsable_values_say_why(
    pg_dsn: str, make_ctx: Any, tmp_path: Path
) -> None:
    lite = _sqlite_table(tmp_path / "legacy.db", {1: {"t": ""}, 2: {"ts": "2024-13-01 00:00:00"},
                                                  3: {"numt": "12,50"}, 4: {"u": "not-a-uuid"},
                                                  5: {"t": None}})  # fmt: skip
    _pg_table(pg_dsn, {1: {"t": None}, 2: {"ts": dt.datetime(2024, 1, 1)},
                       3: {"numt": decimal.Decimal("12.50")}, 4: {"u": U}, 5: {"t": None}})  # fmt: skip
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=lite, target=pg_dsn, table="pairs", key="id")
    out = err.value.outputs
    assert out["different"] == 4 and out["rows_checked"] == 5
    reasons = {d["key"]: d.get("reason") for d in out["first_differences"]}
    assert reasons == {
        1: None,  # '' against NULL: different, and nothing to explain
        2: "ts on the source: a text value does not parse as a timestamp",
        3: "numt on the source: a text value does not parse as a number",
        4: "u on the source: a text value does not parse as a uuid",
    }
    msg = err.value.message
    assert "different: id=1, id=2 (ts on the source: a text value does not parse as a " in msg
    assert "2024-13-01" not in msg  # the value is data: not in the message


def test_postgresql_pairs_of_different_types(
    pg_dsn: str, make_ctx: Any, postgres_server: Any
) -> None:
    other = postgres_server.create_database()
    dst = postgres_server.dsn(other)
    try:
        run_sql(pg_dsn, "CREATE TABLE m (id integer PRIMARY KEY, a bigint, b numeric(12,2), "
                "c double precision, d timestamp, e json, f text, g real, h numeric)")  # fmt: skip
        run_sql(dst, "CREATE TABLE m (id bigint PRIMARY KEY, a numeric, b numeric, c numeric, "
                "d timestamptz, e jsonb, f varchar(20), g double precision, h integer)")  # fmt: skip
        row = "(1, 5, 1.50, 0.25, '2024-01-01 00:00:00', '{\"b\": 1, \"a\": 2}', 'x', 0.5, 3.000)"
        run_sql(
            pg_dsn, f"INSERT INTO m VALUES {row}, (2, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL)"
        )
        run_sql(dst, "INSERT INTO m VALUES (1, 5.0, 1.5, 0.250, '2024-01-01 02:00:00+02', "
                "'{\"a\":2,\"b\":1}', 'x', 0.5, 3), (2, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL)")  # fmt: skip
        ok = verify(make_ctx, source=pg_dsn, target=dst, table="m", key="id")
        assert ok["mismatches"] == 0 and ok["rows_checked"] == 2
        run_sql(dst, "UPDATE m SET f = NULL WHERE id = 2")
        run_sql(dst, "UPDATE m SET d = '2024-01-01 00:00:00.000001+00' WHERE id = 1")
        with pytest.raises(ActionFailed, match=r"2 of 2 rows differ \(different: 2\)"):
            verify(make_ctx, source=pg_dsn, target=dst, table="m", key="id")
    finally:
        postgres_server.drop_database(other)


# the same changes as PostgreSQL values (a second PostgreSQL database, every type the same)
PG_CHANGED: dict[str, Any] = {
    "i8": 43, "i4": 8, "num": decimal.Decimal("1.51"), "numt": decimal.Decimal("100.01"),
    "flt": 0.31, "bl": False, "blt": True, "ts": dt.datetime(2024, 1, 1, 10, 0, 1),
    "tz": dt.datetime(2024, 1, 1, 3, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "tz2": dt.datetime(2024, 6, 1, 12, 0, 0, 251000, tzinfo=dt.UTC), "d": dt.date(2024, 3, 1),
    "u": uuid.UUID(int=1), "j": '{"a": 2, "b": [true, 1.5]}', "by": b"\x00\x02", "t": " ",
    "v": "e",
}  # fmt: skip


def test_every_postgresql_type_against_itself(
    pg_dsn: str, make_ctx: Any, postgres_server: Any
) -> None:
    """PostgreSQL ↔ PostgreSQL, each type against the same type: the values' own hashes; equal
    values in other spellings (numeric trailing zeros, another zone, jsonb key order) equal."""
    other = postgres_server.create_database()
    dst = postgres_server.dsn(other)
    try:
        same = {n: v for n, _t, _d, v, _l in PAIRS}
        # the target holds the same values spelt otherwise, and row 3: '' where row 2 has NULL
        spelt = {**same, "num": decimal.Decimal("1.5000"), "numt": decimal.Decimal("1E+2"),
                 "tz": dt.datetime(2024, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=9))),
                 "j": '{"b":[true,1.50],"a":1}'}  # fmt: skip
        nulls = {n: None for n, *_r in PAIRS}
        src_rows = {1: same, 2: nulls, 3: nulls}
        dst_rows = {1: spelt, 2: nulls, 3: {**nulls, "t": ""}}
        for i, (name, *_r) in enumerate(PAIRS):
            src_rows[100 + i] = same
            dst_rows[100 + i] = {**same, name: PG_CHANGED[name]}
        _pg_table(pg_dsn, src_rows)
        _pg_table(dst, dst_rows)
        ok = verify(make_ctx, source=pg_dsn, target=dst, table="pairs", key="id", where="id < 3")
        assert ok["mismatches"] == 0 and ok["rows_checked"] == 2
        with pytest.raises(ActionFailed) as err:
            verify(make_ctx, source=pg_dsn, target=dst, table="pairs", key="id", max_report=50)
        out = err.value.outputs
        assert out["rows_checked"] == 3 + len(PAIRS)
        assert out["different"] == 1 + len(PAIRS) and out["missing"] == out["extra"] == 0
        keys = [d["key"] for d in out["first_differences"]]
        assert keys == [3] + [100 + i for i in range(len(PAIRS))]  # NULL against '' differs
        for i, (name, *_r) in enumerate(PAIRS):  # each type alone, found alone
            with pytest.raises(
                ActionFailed, match=rf"1 of 2 rows differ.*different: id={100 + i}$"
            ):
                verify(make_ctx, source=pg_dsn, target=dst, table="pairs", key="id",
                       columns=[name], where=f"id = 1 OR id = {100 + i}")  # fmt: skip
    finally:
        postgres_server.drop_database(other)


def test_unparsable_legacy_value_says_why_when_sqlite_is_the_target(
    pg_dsn: str, make_ctx: Any, tmp_path: Path
) -> None:
    lite = _sqlite_table(tmp_path / "legacy.db", {1: {"tz": "2024-01-01 25:00:00+02:00"},
                                                  2: {"i4": "7.5"}, 3: {"tz": "2024-01-01Z"}})  # fmt: skip
    _pg_table(pg_dsn, {1: {"tz": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}, 2: {"i4": 7},
                       3: {"tz": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}})  # fmt: skip
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=pg_dsn, target=lite, table="pairs", key="id")
    reasons = {d["key"]: d.get("reason") for d in err.value.outputs["first_differences"]}
    assert reasons == {
        1: "tz on the target: a text value does not parse as a timestamp",
        2: "i4 on the target: a text value does not parse as an integer",
        3: "tz on the target: a text value does not parse as a timestamp",
    }


# -- bisection on tables large enough to split ----------------------------------------------------

N = 30_000
SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO big SELECT i, 'k' || substr('0000' || i, -5), 'name ' || i,
  datetime('2024-01-01', '+' || i || ' minutes'), (i % 1000) / 100.0 + 0.25 FROM n
"""
PG_FILL = """
INSERT INTO big SELECT i, 'k' || lpad(i::text, 5, '0'), 'name ' || i,
  timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute', (i % 1000) / 100.0 + 0.25
FROM generate_series(1, %s) AS i
"""


def _big(kind: str, dsn: str, key: str) -> None:
    pk = "id" if key == "id" else "code"
    if kind == "sqlite":
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as db:
            db.execute(f"CREATE TABLE big (id INTEGER, code TEXT, name TEXT, at TEXT, "
                       f"amount REAL, PRIMARY KEY ({pk}))")  # fmt: skip
            db.execute(SQLITE_FILL, (N,))
        db.close()
    else:
        run_sql(dsn, f"CREATE TABLE big (id bigint, code text, name text, at timestamptz, "
                f"amount numeric(10,2), PRIMARY KEY ({pk}))")  # fmt: skip
        run_sql(dsn, PG_FILL.replace("%s", str(N)))


@pytest.fixture
def sides(request: pytest.FixtureRequest, postgres_server: Any, tmp_path: Path) -> tuple[str, str]:
    kinds = request.param.split("-")
    dsns = []
    for i, kind in enumerate(kinds):
        if kind == "sqlite":
            dsns.append(f"sqlite:///{tmp_path / f'side{i}.db'}")
        else:
            name = postgres_server.create_database()
            request.addfinalizer(lambda n=name: postgres_server.drop_database(n))
            dsns.append(postgres_server.dsn(name))
    return dsns[0], dsns[1]


@pytest.fixture(params=["default", "deep"])
def depth(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``deep``: ranges so small that every level of the bisection is walked."""
    if request.param == "deep":
        from runbook_engine.plugins.sql import rangediff

        monkeypatch.setattr(rangediff, "TOP", 3)
        monkeypatch.setattr(rangediff, "TOP_ROWS", 7_000)
        monkeypatch.setattr(rangediff, "SPLIT", 4)
        monkeypatch.setattr(rangediff, "LEAF", {"hash": 40, "text": 40})
    return str(request.param)


@pytest.mark.parametrize("sides", ["sqlite-pg", "pg-pg", "pg-sqlite"], indirect=True)
@pytest.mark.parametrize("key", ["id", "code"])
def test_scattered_differences_are_found_by_bisection(
    sides: tuple[str, str], key: str, depth: str, make_ctx: Any
) -> None:
    src, dst = sides
    for dsn in (src, dst):
        _big("sqlite" if dsn.startswith("sqlite") else "pg", dsn, key)
    ok = verify(make_ctx, source=src, target=dst, table="big", key=key)
    assert ok == {"rows_checked": N, "mismatches": 0, "missing": 0, "extra": 0,
                  "different": 0, "first_differences": []}  # fmt: skip
    changed = [7, 4_999, 12_345, 29_999]
    run_sql(dst, f"UPDATE big SET name = name || '!' WHERE id IN ({', '.join(map(str, changed))})")
    run_sql(dst, "DELETE FROM big WHERE id IN (20000, 1)")
    run_sql(dst, "INSERT INTO big (id, code, name) VALUES (40000, 'k40000', 'new'), (0, 'j', 'x')")
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=src, target=dst, table="big", key=key, max_report=20)
    out = err.value.outputs
    assert (out["different"], out["missing"], out["extra"]) == (4, 2, 2)
    assert out["rows_checked"] == N + 2
    by_id = {1: "k00001", 7: "k00007", 4_999: "k04999", 12_345: "k12345", 20_000: "k20000",
             29_999: "k29999", 40_000: "k40000", 0: "j"}  # fmt: skip
    expected = [(1, "missing"), (7, "different"), (4_999, "different"), (12_345, "different"),
                (20_000, "missing"), (29_999, "different"), (40_000, "extra"), (0, "extra")]  # fmt: skip
    want = [{"key": k if key == "id" else by_id[k], "kind": kind} for k, kind in expected]
    assert sorted(out["first_differences"], key=lambda d: str(d["key"])) == sorted(
        want, key=lambda d: str(d["key"])
    )
    assert out["first_differences"] == sorted(out["first_differences"], key=lambda d: d["key"])


@pytest.mark.parametrize("sides", ["sqlite-pg", "pg-pg"], indirect=True)
def test_every_differing_key_is_counted_when_all_differ_or_none_were_copied(
    sides: tuple[str, str], depth: str, make_ctx: Any
) -> None:
    src, dst = sides
    for dsn in (src, dst):
        _big("sqlite" if dsn.startswith("sqlite") else "pg", dsn, "id")
    run_sql(dst, "UPDATE big SET name = upper(name)")  # every row differs
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=src, target=dst, table="big", key="id", max_report=3)
    out = err.value.outputs
    assert (out["different"], out["rows_checked"]) == (N, N)
    assert [d["key"] for d in out["first_differences"]] == [1, 2, 3]
    run_sql(dst, "DELETE FROM big")  # nothing copied yet: every key missing, read as keys only
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=src, target=dst, table="big", key="id", max_report=3,
               where="id % 3 = 0")  # fmt: skip
    out = err.value.outputs
    assert (out["missing"], out["rows_checked"]) == (N // 3, N // 3)
    assert "missing on target: id=3, id=6, id=9" in err.value.message


@pytest.mark.parametrize("sides", ["sqlite-pg", "pg-pg"], indirect=True)
def test_composite_keys_are_bisected(sides: tuple[str, str], depth: str, make_ctx: Any) -> None:
    src, dst = sides
    for dsn in (src, dst):
        run_sql(dsn, "CREATE TABLE lines (o integer, n integer, sku text, PRIMARY KEY (o, n))")
        lite = dsn.startswith("sqlite")
        run_sql(dsn, ("WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 9999) "
                      "INSERT INTO lines SELECT i / 10, i % 10, 'sku' || i FROM s") if lite else
                ("INSERT INTO lines SELECT i / 10, i % 10, 'sku' || i FROM generate_series(0, 9999) i"))  # fmt: skip
    assert (
        verify(make_ctx, source=src, target=dst, table="lines", key=["o", "n"])["mismatches"] == 0
    )
    run_sql(dst, "UPDATE lines SET sku = 'x' WHERE o = 512 AND n = 3")
    with pytest.raises(ActionFailed, match=r"different: \(o=512, n=3\)$") as err:
        verify(make_ctx, source=src, target=dst, table="lines", key=["o", "n"])
    assert err.value.outputs["first_differences"] == [{"key": [512, 3], "kind": "different"}]
