"""The audit of issue 10, item 2: "read-only" reads wrote.  On a real PostgreSQL, `sql.query`
with `COMMIT; BEGIN READ WRITE; DELETE …`, `SET SESSION CHARACTERISTICS AS TRANSACTION READ
WRITE; COMMIT; DELETE …`, `…; START TRANSACTION READ WRITE; DELETE …`, and a `check` query with
`ROLLBACK; BEGIN READ WRITE; DELETE …` all deleted rows; a `where` of `sql.verify` and a
cohort's source query are the same kind of text.  On SQLite the query text could lift
`PRAGMA query_only` itself, and `ATTACH` or `VACUUM INTO` created files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed, Waiting
from runbook_engine.plugins.check import CheckAction
from runbook_engine.plugins.sql.actions import SqlQueryAction, SqlVerifyAction
from tests.engine.helpers import runbook_yaml
from tests.plugins.sqldata import run_sql, sqlite_file

pytestmark = pytest.mark.servers

TRICKS = [
    "COMMIT; BEGIN READ WRITE; DELETE FROM t WHERE id = 1; COMMIT; SELECT count(*) FROM t",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT; DELETE FROM t WHERE id = 2; "
    "COMMIT; SELECT count(*) FROM t",
    "SELECT count(*) FROM t; COMMIT; START TRANSACTION READ WRITE; DELETE FROM t WHERE id = 4; "
    "COMMIT",
    "SET transaction_read_only = off; DELETE FROM t WHERE id = 3 RETURNING id",
    "WITH x AS (SELECT set_config('transaction_read_only', 'off', true)) "
    "DELETE FROM t WHERE id = 3 RETURNING id",
    "DO $$ BEGIN COMMIT; DELETE FROM t WHERE id = 5; END $$",
    "SELECT set_config('default_transaction_read_only', 'off', false); "
    "DELETE FROM t WHERE id = 6 RETURNING id",
]


def _table(dsn: str) -> None:
    run_sql(dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    run_sql(dsn, "INSERT INTO t SELECT generate_series(1, 9)")


def _ids(dsn: str) -> list[int]:
    return [r[0] for r in run_sql(dsn, "SELECT id FROM t ORDER BY id")]


@pytest.mark.parametrize("query", TRICKS)
def test_pg_sql_query_cannot_leave_its_read_only_transaction(
    make_ctx: Any, pg_dsn: str, query: str
) -> None:
    _table(pg_dsn)
    with pytest.raises(ActionFailed):
        SqlQueryAction().run({"dsn": pg_dsn, "query": query}, make_ctx())
    assert _ids(pg_dsn) == list(range(1, 10))
    # and the next read on a new connection is still read-only
    with pytest.raises(ActionFailed, match="read-only"):
        SqlQueryAction().run(
            {"dsn": pg_dsn, "query": "DELETE FROM t WHERE id = 7 RETURNING id"}, make_ctx()
        )
    assert _ids(pg_dsn) == list(range(1, 10))


def test_pg_check_query_cannot_leave_its_read_only_transaction(make_ctx: Any, pg_dsn: str) -> None:
    _table(pg_dsn)
    query = "ROLLBACK; BEGIN READ WRITE; DELETE FROM t WHERE id = 5; COMMIT; SELECT 1"
    with pytest.raises(Waiting):  # a source that fails: inconclusive, never a pass
        CheckAction().run(
            {"dsn": pg_dsn, "query": query, "condition": "value == 1", "interval": "0s"},
            make_ctx(),
        )
    assert _ids(pg_dsn) == list(range(1, 10))


def test_pg_verify_where_cannot_smuggle_statements(make_ctx: Any, pg_dsn: str) -> None:
    _table(pg_dsn)
    where = (
        "true); COMMIT; BEGIN READ WRITE; DELETE FROM t WHERE id = 8; COMMIT; SELECT 1 WHERE (true"
    )
    with pytest.raises(ActionFailed):
        SqlVerifyAction().run(
            {"source": pg_dsn, "target": pg_dsn, "table": "t", "key": "id", "where": where},
            make_ctx(),
        )
    assert _ids(pg_dsn) == list(range(1, 10))
    # an honest where still verifies
    out = SqlVerifyAction().run(
        {"source": pg_dsn, "target": pg_dsn, "table": "t", "key": "id", "where": "id > 3"},
        make_ctx(),
    )
    assert out["rows_checked"] == 6 and out["mismatches"] == 0


def test_pg_cohort_source_query_cannot_smuggle_statements(runbook: Any, pg_dsn: str) -> None:
    _table(pg_dsn)
    query = (
        "SELECT id FROM t) AS x; COMMIT; BEGIN READ WRITE; DELETE FROM t WHERE id = 9; COMMIT; "
        "SELECT * FROM (SELECT id FROM t"
    )
    Path("r.yaml").write_text(
        runbook_yaml(
            cohorts={
                "c": {
                    "source": {"dsn": pg_dsn, "query": query},
                    "key": "id",
                    "waves": [{"id": "all", "size": "rest"}],
                }
            },
            phases=[
                {
                    "id": "p",
                    "waves": {"cohort": "c"},
                    "steps": [{"id": "w", "action": "wait", "with": {"duration": "0s"}}],
                }
            ],
        )
    )
    for args in (("plan", "r.yaml"), ("cohort", "freeze", "r.yaml")):
        runbook(*args)
        assert _ids(pg_dsn) == list(range(1, 10)), args
    r = runbook("cohort", "freeze", "r.yaml")
    assert r.code == 2 and "the source query failed" in r.err, r.output


@pytest.mark.parametrize(
    ("query", "made"),
    [
        ("PRAGMA query_only = OFF", None),
        ("PRAGMA query_only = 0", None),
        ("ATTACH DATABASE 'other.db' AS o", "other.db"),
        ("VACUUM INTO 'copy.db'", "copy.db"),
    ],
)
def test_sqlite_query_text_cannot_lift_query_only_or_write_files(
    make_ctx: Any, tmp_path: Path, query: str, made: str | None
) -> None:
    dsn = sqlite_file(tmp_path, "db.sqlite")
    run_sql(dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    run_sql(dsn, "INSERT INTO t VALUES (1), (2)")
    with pytest.raises(ActionFailed, match=r"not authorized|authorization denied"):
        SqlQueryAction().run({"dsn": dsn, "query": query}, make_ctx())
    if made:
        assert not Path(made).exists() and not (tmp_path / made).exists()
    assert run_sql(dsn, "SELECT count(*) FROM t") == [(2,)]


def test_honest_reads_still_work_on_both_engines(
    make_ctx: Any, tmp_path: Path, pg_dsn: str
) -> None:
    """Reading a pragma, bound parameters, a `%` literal, `pragma_table_info`: unchanged."""
    lite = sqlite_file(tmp_path, "db.sqlite")
    for dsn in (lite, pg_dsn):
        run_sql(dsn, "CREATE TABLE t (id integer PRIMARY KEY, email text)")
        run_sql(dsn, "INSERT INTO t VALUES (1, 'a%b'), (2, 'c')")
    assert (
        SqlQueryAction().run({"dsn": lite, "query": "PRAGMA query_only"}, make_ctx())["value"] == 1
    )
    q = "SELECT count(*) FROM pragma_table_info('t')"
    assert SqlQueryAction().run({"dsn": lite, "query": q}, make_ctx())["value"] == 2
    pct = "SELECT id FROM t WHERE email LIKE 'a%'"
    assert SqlQueryAction().run({"dsn": pg_dsn, "query": pct}, make_ctx())["value"] == 1
    bound = {"dsn": pg_dsn, "query": "SELECT id FROM t WHERE email = %s", "params": ["c"]}
    assert SqlQueryAction().run(bound, make_ctx())["value"] == 2
