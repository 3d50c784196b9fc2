"""``sql.copy`` on real SQLite files and a real PostgreSQL, in all four directions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.sql.actions import SqlCopyAction, SqlVerifyAction
from tests.plugins.sqldata import (  # noqa: F401  (_pair: the `pair` fixture)
    DIRECTIONS,
    _pair,
    create_empty,
    make_customers,
    run_sql,
    sqlite_file,
)


def copy(make_ctx: Any, **params: Any) -> dict[str, Any]:
    return dict(SqlCopyAction().run(params, make_ctx()))


def verify(make_ctx: Any, **params: Any) -> dict[str, Any]:
    return dict(SqlVerifyAction().run(params, make_ctx()))


@pytest.mark.parametrize("pair", DIRECTIONS, indirect=True)
def test_copy_in_batches_then_rerun_is_idempotent(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    make_customers(src, range(1, 1001))
    create_empty(dst)
    params = {"source": src, "target": dst, "table": "customers", "key": "id", "batch_size": 128}
    out = copy(make_ctx, **params)
    assert out == {"rows_copied": 1000}
    assert run_sql(dst, "SELECT count(*), min(id), max(id) FROM customers") == [(1000, 1, 1000)]
    assert (
        verify(make_ctx, **{k: v for k, v in params.items() if k != "batch_size"})["rows_checked"]
        == 1000
    )
    # a re-run (after a crash, say) upserts the same rows: no duplicate, same content
    assert copy(make_ctx, **params) == {"rows_copied": 1000}
    assert run_sql(dst, "SELECT count(*) FROM customers") == [(1000,)]
    out = verify(make_ctx, source=src, target=dst, table="customers", key="id")
    assert out["mismatches"] == 0
    # NULL stayed NULL and '' stayed '' on the target
    nulls = run_sql(dst, "SELECT count(*) FROM customers WHERE email IS NULL")
    empties = run_sql(dst, "SELECT count(*) FROM customers WHERE email = ''")
    assert nulls == [(len([i for i in range(1, 1001) if i % 7 == 0]),)]
    assert empties == [(len([i for i in range(1, 1001) if i % 7 and i % 11 == 0]),)]


@pytest.mark.parametrize("pair", DIRECTIONS, indirect=True)
def test_copy_where_and_create(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    make_customers(src, range(1, 301))
    where = "id % 100 >= 10 AND id % 100 < 20"
    with pytest.raises(ActionFailed, match=r"target table customers does not exist .*create: true"):
        copy(make_ctx, source=src, target=dst, table="customers", key="id", where=where)
    out = copy(
        make_ctx, source=src, target=dst, table="customers", key="id", where=where, create=True
    )
    assert out == {"rows_copied": 30}
    ids = [r[0] for r in run_sql(dst, "SELECT id FROM customers ORDER BY id")]
    assert ids == [i for i in range(1, 301) if 10 <= i % 100 < 20]
    ok = verify(make_ctx, source=src, target=dst, table="customers", key="id", where=where)
    assert ok["rows_checked"] == 30
    assert ok["mismatches"] == 0
    # a changed source row is brought back in line by the next run (upsert, not insert)
    run_sql(src, "UPDATE customers SET status = 'moved' WHERE id = 15")
    copy(make_ctx, source=src, target=dst, table="customers", key="id", where=where)
    assert run_sql(dst, "SELECT status FROM customers WHERE id = 15") == [("moved",)]


@pytest.mark.parametrize("pair", ["sqlite-sqlite", "pg-pg"], indirect=True)
def test_copy_where_syntax_error_is_named(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    make_customers(src, range(1, 11))
    create_empty(dst)
    with pytest.raises(ActionFailed) as err:
        copy(make_ctx, source=src, target=dst, table="customers", key="id", where="id >> AND 1")
    msg = err.value.message
    assert "source: table customers where 'id >> AND 1'" in msg
    assert "syntax error" in msg
    assert err.value.retryable is False
    assert run_sql(dst, "SELECT count(*) FROM customers") == [(0,)]


def test_copy_missing_source_table_and_column(make_ctx: Any, tmp_path: Path) -> None:
    src, dst = sqlite_file(tmp_path, "a.db"), sqlite_file(tmp_path, "b.db")
    make_customers(src, range(1, 5))
    with pytest.raises(ActionFailed, match=r"source table orders does not exist in sqlite:////"):
        copy(make_ctx, source=src, target=dst, table="orders", key="id", create=True)
    with pytest.raises(ActionFailed, match=r"has no column 'nope' \(it has: id, name, email"):
        copy(make_ctx, source=src, target=dst, table="customers", key="nope", create=True)
    with pytest.raises(ActionFailed, match=r"missing\.db does not exist"):
        copy(make_ctx, source=sqlite_file(tmp_path, "missing.db"), target=dst, table="t", key="id")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("pair", ["sqlite-pg", "pg-pg"], indirect=True)
def test_copy_columns_subset_and_composite_key(pair: tuple[str, str], make_ctx: Any) -> None:
    src, dst = pair
    run_sql(
        src,
        "CREATE TABLE lines (order_id integer, line integer, sku text, qty integer,"
        " PRIMARY KEY (order_id, line))",
    )
    for o in range(1, 21):
        for n in range(1, 6):
            run_sql(src, f"INSERT INTO lines VALUES ({o}, {n}, 'sku-{o}-{n}', {n * 2})")
    params = {
        "source": src,
        "target": dst,
        "table": "lines",
        "key": ["order_id", "line"],
        "columns": ["order_id", "line", "sku"],
        "batch_size": 7,
        "create": True,
    }
    assert copy(make_ctx, **params) == {"rows_copied": 100}
    cols = run_sql(dst, "SELECT count(*), count(DISTINCT sku) FROM lines")
    assert cols == [(100, 100)]
    out = verify(
        make_ctx,
        source=src,
        target=dst,
        table="lines",
        key=["order_id", "line"],
        columns=["order_id", "line", "sku"],
    )
    assert out["mismatches"] == 0 and out["rows_checked"] == 100


def test_copy_cancelled_between_batches(make_ctx: Any, tmp_path: Path) -> None:
    src, dst = sqlite_file(tmp_path, "a.db"), sqlite_file(tmp_path, "b.db")
    make_customers(src, range(1, 101))
    create_empty(dst)
    ctx = make_ctx()
    ctx.cancel.set()
    with pytest.raises(ActionFailed, match=r"cancelled after copying 0 rows") as err:
        SqlCopyAction().run(
            {"source": src, "target": dst, "table": "customers", "key": "id", "batch_size": 10},
            ctx,
        )
    assert err.value.outputs == {"rows_copied": 0}
    assert run_sql(dst, "SELECT count(*) FROM customers") == [(0,)]


@pytest.mark.servers
def test_secret_password_never_in_copy_messages(pg_dsn: str, make_ctx: Any, tmp_path: Path) -> None:
    password = pg_dsn.split(":")[2].split("@")[0]
    src = sqlite_file(tmp_path, "a.db")
    make_customers(src, range(1, 5))
    with pytest.raises(ActionFailed) as err:
        copy(make_ctx, source=src, target=pg_dsn, table="customers", key="id")
    assert "target table customers does not exist in postgresql://postgres:***@" in str(err.value)
    bad = pg_dsn.replace(password, password + "x")
    with pytest.raises(ActionFailed) as err:
        copy(make_ctx, source=src, target=bad, table="customers", key="id")
    assert "password authentication failed" in err.value.message
    for text in (err.value.message, err.value.details, repr(err.value.outputs)):
        assert password not in text
    assert make_ctx.lines == [] or all(password not in line for line in make_ctx.lines)


@pytest.mark.servers
@pytest.mark.slow
def test_postgres_down_mid_copy_then_rerun_completes(
    private_postgres: Any, make_ctx: Any, tmp_path: Path
) -> None:
    server = private_postgres
    name = server.create_database()
    dst = server.dsn(name)
    src = sqlite_file(tmp_path, "legacy.db")
    total = 60_000
    make_customers(src, range(1, total + 1))
    create_empty(dst)
    params = {"source": src, "target": dst, "table": "customers", "key": "id", "batch_size": 4000}
    ctx = make_ctx()
    seen: list[str] = []

    def progress(line: str) -> None:  # called after a batch committed: the server dies now
        seen.append(line)
        if len(seen) == 1:
            server.stop("immediate")

    ctx.progress = progress
    with pytest.raises(ActionFailed) as err:
        SqlCopyAction().run(params, ctx)
    msg = err.value.message
    assert seen[0] == "copied 4,000 / 60,000 rows"
    assert msg.startswith(f"copying table customers from {src} to postgresql://postgres:***@")
    assert "failed after copying 4,000 rows (re-running the step is safe)" in msg
    assert server.password not in msg
    assert err.value.retryable is True
    assert err.value.outputs == {"rows_copied": 4000}

    server.start()
    assert run_sql(dst, "SELECT count(*) FROM customers") == [(4000,)]  # the committed batch
    assert copy(make_ctx, **params) == {"rows_copied": total}
    assert run_sql(dst, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM customers") == [
        (total, total, 1, total)
    ]
    out = verify(make_ctx, source=src, target=dst, table="customers", key="id")
    assert out["rows_checked"] == total and out["mismatches"] == 0


@pytest.mark.parametrize("pair", ["sqlite-pg", "pg-pg"], indirect=True)
def test_copy_into_pg_over_part_of_the_rows_upserts_from_the_first_met_key(
    pair: tuple[str, str], make_ctx: Any
) -> None:
    """A target holding some rows (a wave copied before, a crash): batches go straight in until
    one meets a key already there; that one and the later ones are upserted."""
    src, dst = pair
    make_customers(src, range(1, 1001))
    make_customers(dst, [*range(301, 351), 990])
    run_sql(dst, "UPDATE customers SET name = 'stale'")
    params = {"source": src, "target": dst, "table": "customers", "key": "id", "batch_size": 200}
    assert copy(make_ctx, **params) == {"rows_copied": 1000}
    assert run_sql(dst, "SELECT count(*), count(DISTINCT id) FROM customers") == [(1000, 1000)]
    assert run_sql(dst, "SELECT count(*) FROM customers WHERE name = 'stale'") == [(0,)]
    assert verify(make_ctx, source=src, target=dst, table="customers", key="id")["mismatches"] == 0
    # the default batch into a target holding rows (every key there: one batch, upserted)
    run_sql(dst, "UPDATE customers SET name = 'stale' WHERE id % 10 = 0")
    default = {k: v for k, v in params.items() if k != "batch_size"}
    assert copy(make_ctx, **default) == {"rows_copied": 1000}
    assert run_sql(dst, "SELECT count(*) FROM customers WHERE name = 'stale'") == [(0,)]


@pytest.mark.parametrize("pair", ["sqlite-pg", "pg-pg"], indirect=True)
def test_copy_into_empty_pg_meeting_a_row_written_meanwhile_fails_and_rerun_upserts(
    pair: tuple[str, str], make_ctx: Any
) -> None:
    """Into an empty target the rows pass straight through (nothing kept to send again): a row
    another writer adds meanwhile with a key being copied fails that batch, whole; the re-run
    upserts."""
    src, dst = pair
    make_customers(src, range(1, 1001))
    create_empty(dst)
    ctx = make_ctx()
    seen: list[str] = []

    def progress(line: str) -> None:  # after the first batch committed: another writer
        seen.append(line)
        if len(seen) == 1:
            run_sql(dst, "INSERT INTO customers (id, name) VALUES (400, 'intruder')")

    ctx.progress = progress
    params = {"source": src, "target": dst, "table": "customers", "key": "id", "batch_size": 250}
    with pytest.raises(ActionFailed) as err:
        SqlCopyAction().run(params, ctx)
    assert "failed after copying 250 rows (re-running the step is safe)" in err.value.message
    assert "duplicate key" in err.value.message
    assert err.value.outputs == {"rows_copied": 250}
    # the first batch and the intruder; not a row of the failed batch
    assert run_sql(dst, "SELECT count(*), max(id) FROM customers WHERE id <> 400") == [(250, 250)]
    assert copy(make_ctx, **params) == {"rows_copied": 1000}
    assert run_sql(dst, "SELECT count(*), count(DISTINCT id) FROM customers") == [(1000, 1000)]
    assert verify(make_ctx, source=src, target=dst, table="customers", key="id")["mismatches"] == 0


@pytest.mark.parametrize("pair", DIRECTIONS, indirect=True)
@pytest.mark.parametrize("batch", [10_000, 100])
def test_apply_prints_each_copy_and_verify_line_once(
    pair: tuple[str, str], batch: int, runbook, tmp_path: Path
) -> None:
    """Issue 10: a copy done in one batch printed "copied 250 / 250 rows" twice."""
    src, dst = pair
    make_customers(src, range(1, 251))
    create_empty(dst)
    Path("cp.yaml").write_text(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: cp}\nphases:\n  - id: p\n"
        "    steps:\n"
        f"      - {{id: copy, action: sql.copy, rollback: none, with: {{source: '{src}',"
        f" target: '{dst}', table: customers, key: id, batch_size: {batch}}}}}\n"
        f"      - {{id: check, action: sql.verify, with: {{source: '{src}', target: '{dst}',"
        " table: customers, key: id}}\n",
        encoding="utf-8",
    )
    r = runbook("apply", "--yes", "cp.yaml")
    assert r.code == 0, r.output
    lines = r.output.splitlines()
    copied = [ln.split("copy: ", 1)[1] for ln in lines if "copy: copied" in ln]
    assert copied.count("copied 250 / 250 rows") == 1, r.output
    assert copied[-1] == "copied 250 / 250 rows"
    assert len(copied) == len(set(copied))  # no line repeated
    verified = [ln for ln in lines if "check: verified" in ln]
    assert len(verified) == 1 and verified[0].endswith("check: verified 250 / 250 rows")
    assert run_sql(dst, "SELECT count(*) FROM customers") == [(250,)]
