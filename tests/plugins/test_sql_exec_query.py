"""``sql.exec`` and ``sql.query`` on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.sql.actions import SqlExecAction, SqlQueryAction, split_sqlite
from tests.plugins.sqldata import make_customers, run_sql, sqlite_file


@pytest.fixture(params=["sqlite", "pg"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_file(tmp_path, "db.sqlite")
    value: str = request.getfixturevalue("pg_dsn")
    return value


def exec_(make_ctx: Any, dsn: str, sql: str | list[str]) -> dict[str, Any]:
    return dict(SqlExecAction().run({"dsn": dsn, "sql": sql}, make_ctx()))


def query(make_ctx: Any, dsn: str, sql: str, **kw: Any) -> dict[str, Any]:
    return dict(SqlQueryAction().run({"dsn": dsn, "query": sql, **kw}, make_ctx()))


def test_split_sqlite_keeps_strings_comments_and_triggers() -> None:
    script = """CREATE TABLE t (v TEXT);
-- a comment; with a semicolon
INSERT INTO t VALUES ('a;b');
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
  UPDATE t SET v = v || ';' WHERE rowid = new.rowid;
END;
INSERT INTO t VALUES ('c')"""
    parts = split_sqlite(script)
    assert [line for line, _ in parts] == [1, 2, 4, 7]
    assert parts[1][1].endswith("INSERT INTO t VALUES ('a;b');")
    assert parts[2][1].startswith("CREATE TRIGGER tr") and parts[2][1].endswith("END;")


def test_exec_script_and_list_in_one_transaction(make_ctx: Any, dsn: str) -> None:
    out = exec_(
        make_ctx,
        dsn,
        "CREATE TABLE t (id integer PRIMARY KEY, v text);\n"
        "INSERT INTO t VALUES (1, 'a;b'), (2, 'x'), (3, 'y');\n"
        "UPDATE t SET v = 'z' WHERE id % 2 = 0;",
    )
    assert out == {"rowcount": 4}
    out = exec_(make_ctx, dsn, ["DELETE FROM t WHERE id = 3", "INSERT INTO t VALUES (4, '')"])
    assert out == {"rowcount": 2}
    assert run_sql(dsn, "SELECT id, v FROM t ORDER BY id") == [(1, "a;b"), (2, "z"), (4, "")]


def test_exec_failure_rolls_back_and_names_the_statement(make_ctx: Any, dsn: str) -> None:
    exec_(make_ctx, dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    with pytest.raises(ActionFailed) as err:
        exec_(make_ctx, dsn, "INSERT INTO t VALUES (1);\nINSERT INTO nope VALUES (2);\n")
    msg = err.value.message
    if dsn.startswith("sqlite"):
        assert "statement 2 of 2 (line 2): 'INSERT INTO nope VALUES (2);' failed" in msg
        assert "no such table: nope" in msg
    else:
        assert "line 2: 'INSERT INTO nope VALUES (2);' failed" in msg
        assert 'relation "nope" does not exist' in msg
    assert err.value.retryable is False
    assert run_sql(dsn, "SELECT count(*) FROM t") == [(0,)]  # the first insert was undone
    with pytest.raises(ActionFailed, match=r"statement 2 of 2: 'SELEC 1' failed"):
        exec_(make_ctx, dsn, ["INSERT INTO t VALUES (1)", "SELEC 1"])
    assert run_sql(dsn, "SELECT count(*) FROM t") == [(0,)]


def test_query_outputs_are_bounded_and_json(make_ctx: Any, dsn: str) -> None:
    make_customers(dsn, range(1, 51))
    out = query(make_ctx, dsn, "SELECT count(*) FROM customers WHERE id % 10 = 0")
    assert out["value"] == 5
    assert out["columns"] == ["count"] or out["columns"] == ["count(*)"]
    out = query(
        make_ctx, dsn, "SELECT id, balance, created_at FROM customers ORDER BY id", max_rows=3
    )
    assert out["value"] == 1
    assert len(out["rows"]) == 3 and out["truncated"] is True
    assert out["columns"] == ["id", "balance", "created_at"]
    # SQLite's NUMERIC affinity stores 1.50 as the REAL 1.5; PostgreSQL keeps numeric(12,2)
    assert out["rows"][0][1] == (1.5 if dsn.startswith("sqlite") else "1.50")
    assert out["rows"][0][2].startswith("2024-01-01")
    json.dumps(out)  # storable as it is
    out = query(make_ctx, dsn, "SELECT id FROM customers WHERE id > 1000")
    assert out == {"value": None, "rows": [], "columns": ["id"], "truncated": False}


def test_query_errors(make_ctx: Any, dsn: str, tmp_path: Path) -> None:
    exec_(make_ctx, dsn, "CREATE TABLE present (id integer)")
    with pytest.raises(ActionFailed) as err:
        query(make_ctx, dsn, "SELECT * FROM missing_table")
    assert "missing_table" in err.value.message
    assert "'SELECT * FROM missing_table' failed" in err.value.message
    with pytest.raises(ActionFailed, match=r"absent\.db does not exist"):
        query(make_ctx, sqlite_file(tmp_path, "absent.db"), "SELECT 1")
    assert not (tmp_path / "absent.db").exists()
