"""``sql.verify`` on real SQLite files and a real PostgreSQL: what it catches and names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.sql.actions import SqlVerifyAction
from tests.plugins.sqldata import (  # noqa: F401  (_pair: the `pair` fixture)
    DIRECTIONS,
    _pair,
    make_customers,
    run_sql,
    sqlite_file,
)


def verify(make_ctx: Any, **params: Any) -> dict[str, Any]:
    return dict(SqlVerifyAction().run(params, make_ctx()))


@pytest.mark.parametrize("pair", DIRECTIONS, indirect=True)
def test_verify_names_changed_missing_and_extra_rows(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    make_customers(src, range(1, 501))
    make_customers(dst, [i for i in range(1, 501) if i != 250])
    run_sql(dst, "UPDATE customers SET balance = balance + 1 WHERE id = 100")
    run_sql(dst, "UPDATE customers SET name = 'Renamed' WHERE id = 400")
    make_customers(dst, [777], table=False)
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=src, target=dst, table="customers", key="id")
    out = err.value.outputs
    assert out["rows_checked"] == 501
    assert (out["missing"], out["extra"], out["different"], out["mismatches"]) == (1, 1, 2, 4)
    assert out["first_differences"] == [
        {"key": 100, "kind": "different"},
        {"key": 250, "kind": "missing"},
        {"key": 400, "kind": "different"},
        {"key": 777, "kind": "extra"},
    ]
    msg = err.value.message
    assert msg.startswith("table customers: 4 of 501 rows differ")
    assert "missing on target: id=250" in msg
    assert "extra on target: id=777" in msg
    assert "different: id=100, id=400" in msg
    assert err.value.retryable is False


@pytest.mark.parametrize("pair", DIRECTIONS, indirect=True)
def test_verify_null_and_empty_string_differ(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    make_customers(src, range(1, 31))
    make_customers(dst, range(1, 31))
    ok = verify(make_ctx, source=src, target=dst, table="customers", key="id")
    assert ok == {
        "rows_checked": 30,
        "mismatches": 0,
        "missing": 0,
        "extra": 0,
        "different": 0,
        "first_differences": [],
    }
    assert run_sql(src, "SELECT email FROM customers WHERE id = 14") == [(None,)]
    run_sql(dst, "UPDATE customers SET email = '' WHERE id = 14")
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=src, target=dst, table="customers", key="id")
    assert err.value.outputs["first_differences"] == [{"key": 14, "kind": "different"}]


@pytest.mark.parametrize("pair", ["sqlite-pg", "pg-sqlite"], indirect=True)
def test_verify_across_engines_normalises_numbers_and_times(
    pair: tuple[str, str], make_ctx: Any
) -> None:
    src, dst = pair
    make_customers(src, range(1, 21))
    make_customers(dst, range(1, 21))
    sqlite = src if src.startswith("sqlite") else dst
    # 1.50 stored as 1.5, a timestamp written with an explicit offset: the same values
    run_sql(sqlite, "UPDATE customers SET balance = 1.5 WHERE id = 1")
    run_sql(sqlite, "UPDATE customers SET created_at = '2024-01-01T02:00:00+02:00' WHERE id = 2")
    pg = dst if sqlite == src else src
    run_sql(pg, "UPDATE customers SET balance = 1.50 WHERE id = 1")
    run_sql(pg, "UPDATE customers SET created_at = '2024-01-01 00:00:00+00' WHERE id = 2")
    assert verify(make_ctx, source=src, target=dst, table="customers", key="id")["mismatches"] == 0
    run_sql(pg, "UPDATE customers SET created_at = '2024-01-01 00:00:01+00' WHERE id = 2")
    with pytest.raises(ActionFailed, match=r"different: id=2$"):
        verify(make_ctx, source=src, target=dst, table="customers", key="id")


@pytest.mark.parametrize("pair", ["sqlite-sqlite", "pg-pg", "sqlite-pg"], indirect=True)
def test_verify_where_limits_the_rows_and_bad_where_is_named(
    pair: tuple[str, str], make_ctx: Any
) -> None:
    src, dst = pair
    make_customers(src, range(1, 201))
    make_customers(dst, range(1, 101))
    ok = verify(make_ctx, source=src, target=dst, table="customers", key="id", where="id <= 100")
    assert ok["rows_checked"] == 100 and ok["mismatches"] == 0
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=src, target=dst, table="customers", key="id", where="id <=")
    assert "source: table customers where 'id <='" in err.value.message
    assert "syntax error" in err.value.message


def test_verify_reports_at_most_max_report_keys(make_ctx: Any, tmp_path: Path) -> None:
    src, dst = sqlite_file(tmp_path, "a.db"), sqlite_file(tmp_path, "b.db")
    make_customers(src, range(1, 101))
    make_customers(dst, range(51, 101))
    with pytest.raises(ActionFailed) as err:
        verify(make_ctx, source=src, target=dst, table="customers", key="id", max_report=3)
    out = err.value.outputs
    assert out["missing"] == 50
    assert [d["key"] for d in out["first_differences"]] == [1, 2, 3]
    assert "missing on target: id=1, id=2, id=3" in err.value.message


def test_verify_target_lacking_a_column(make_ctx: Any, tmp_path: Path) -> None:
    src, dst = sqlite_file(tmp_path, "a.db"), sqlite_file(tmp_path, "b.db")
    make_customers(src, range(1, 5))
    run_sql(dst, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(ActionFailed, match=r"target table customers .* lacks column\(s\) email"):
        verify(make_ctx, source=src, target=dst, table="customers", key="id")


@pytest.mark.servers
def test_secret_password_never_in_verify_messages(pg_dsn: str, make_ctx: Any) -> None:
    password = pg_dsn.split(":")[2].split("@")[0]
    make_customers(pg_dsn, range(1, 10))
    with pytest.raises(ActionFailed) as err:
        verify(
            make_ctx, source=pg_dsn, target=pg_dsn, table="customers", key="id", where="nope = 1"
        )
    assert 'column "nope" does not exist' in err.value.message
    assert password not in err.value.message
    assert "postgresql://postgres:***@127.0.0.1" in err.value.message
