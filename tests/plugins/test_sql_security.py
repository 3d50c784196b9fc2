"""SPEC §9 for SQL: bound ``params``, read-only ``sql.query`` and ``check``, data kept out of
messages' text, and ``where`` evaluated against the source (real SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed, Waiting
from runbook_engine.plugins.check import CheckAction
from runbook_engine.plugins.sql.actions import (
    SqlCopyAction,
    SqlExecAction,
    SqlQueryAction,
    SqlVerifyAction,
)
from tests.plugins.sqldata import make_customers, run_sql, sqlite_file

EMAIL = "x'); DROP TABLE t; --"


@pytest.fixture(params=["sqlite", "pg"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_file(tmp_path, "db.sqlite")
    value: str = request.getfixturevalue("pg_dsn")
    return value


def _mark(dsn: str) -> str:
    return "?" if dsn.startswith("sqlite") else "%s"


def _named(dsn: str, name: str) -> str:
    return f":{name}" if dsn.startswith("sqlite") else f"%({name})s"


def test_sql_query_delete_returning_fails_and_changes_nothing(make_ctx: Any, dsn: str) -> None:
    run_sql(dsn, "CREATE TABLE t (id integer PRIMARY KEY, email text)")
    run_sql(dsn, "INSERT INTO t VALUES (1, 'a@x'), (2, 'b@x')")
    with pytest.raises(ActionFailed) as info:
        SqlQueryAction().run(
            {"dsn": dsn, "query": "DELETE FROM t WHERE id = 1 RETURNING id"}, make_ctx()
        )
    message = info.value.message
    assert "'DELETE FROM t WHERE id = 1 RETURNING id' failed" in message
    assert ("readonly" in message) if dsn.startswith("sqlite") else ("read-only" in message)
    assert run_sql(dsn, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]


def test_check_query_runs_read_only(make_ctx: Any, dsn: str) -> None:
    run_sql(dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    run_sql(dsn, "INSERT INTO t VALUES (1), (2)")
    with pytest.raises(Waiting) as info:  # a source that fails: inconclusive, never a pass
        CheckAction().run(
            {"dsn": dsn, "query": "DELETE FROM t RETURNING id", "condition": "value > 0"},
            make_ctx(),
        )
    message = info.value.message
    assert "'DELETE FROM t RETURNING id' failed" in message
    assert ("readonly" in message) if dsn.startswith("sqlite") else ("read-only" in message)
    assert run_sql(dsn, "SELECT count(*) FROM t") == [(2,)]


def test_pg_query_cannot_commit_its_way_out_of_read_only(make_ctx: Any, pg_dsn: str) -> None:
    run_sql(pg_dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    run_sql(pg_dsn, "INSERT INTO t VALUES (1)")
    with pytest.raises(ActionFailed):
        SqlQueryAction().run(
            {"dsn": pg_dsn, "query": "COMMIT; DELETE FROM t RETURNING id"}, make_ctx()
        )
    assert run_sql(pg_dsn, "SELECT count(*) FROM t") == [(1,)]


def test_params_bind_outside_data_in_exec_query_and_check(make_ctx: Any, dsn: str) -> None:
    run_sql(dsn, "CREATE TABLE t (id integer PRIMARY KEY, email text)")
    SqlExecAction().run(
        {
            "dsn": dsn,
            "sql": f"INSERT INTO t VALUES ({_mark(dsn)}, {_mark(dsn)})",
            "params": [1, EMAIL],
        },
        make_ctx(),
    )
    SqlExecAction().run(
        {
            "dsn": dsn,
            "sql": [
                f"INSERT INTO t VALUES ({_named(dsn, 'id')}, {_named(dsn, 'email')})",
                f"UPDATE t SET email = {_named(dsn, 'email')} || '!' WHERE id = 1",
            ],
            "params": {"id": 2, "email": EMAIL},
        },
        make_ctx(),
    )
    assert run_sql(dsn, "SELECT id, email FROM t ORDER BY id") == [(1, EMAIL + "!"), (2, EMAIL)]
    out = SqlQueryAction().run(
        {"dsn": dsn, "query": f"SELECT id FROM t WHERE email = {_mark(dsn)}", "params": [EMAIL]},
        make_ctx(),
    )
    assert out["value"] == 2
    gate = CheckAction().run(
        {
            "dsn": dsn,
            "query": f"SELECT count(*) FROM t WHERE email = {_named(dsn, 'e')}",
            "params": {"e": EMAIL},
            "condition": "value == 1",
        },
        make_ctx(),
    )
    assert gate["passed"] == 1
    with pytest.raises(ActionFailed, match="a list binds one statement, and `sql` has 2"):
        SqlExecAction().run(
            {"dsn": dsn, "sql": ["SELECT 1", "SELECT 2"], "params": [1]}, make_ctx()
        )


def test_params_in_a_runbook_are_rendered_to_their_values(runbook: Any, tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT)")
    doc = f"""\
apiVersion: runbook/v1
kind: Runbook
metadata: {{name: p}}
vars: {{db: "sqlite:///{db}", email: "{EMAIL}"}}
phases:
  - id: p
    steps:
      - {{id: who, action: shell, with: {{command: "printf %s {{{{ vars.email }}}}"}}, rollback: none}}
      - id: keep
        action: sql.exec
        with:
          dsn: "{{{{ vars.db }}}}"
          sql: "INSERT INTO t (id, email) VALUES (:id, :email)"
          params: {{id: 7, email: "{{{{ steps.who.outputs.stdout }}}}"}}
        rollback: none
"""
    Path("r.yaml").write_text(doc)
    assert runbook("validate", "--strict", "r.yaml").code == 0  # params: no lint warning
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert run_sql(f"sqlite:///{db}", "SELECT id, email FROM t") == [(7, EMAIL)]


def test_verify_names_keys_as_json_and_database_details_stay_out_of_the_message(
    make_ctx: Any, tmp_path: Path, pg_dsn: str
) -> None:
    src, dst = sqlite_file(tmp_path, "a.db"), sqlite_file(tmp_path, "b.db")
    for d in (src, dst):
        run_sql(d, "CREATE TABLE c (email text PRIMARY KEY, n integer)")
    run_sql(src, "INSERT INTO c VALUES (?, 1)", (EMAIL,))
    with pytest.raises(ActionFailed) as info:
        SqlVerifyAction().run(
            {"source": src, "target": dst, "table": "c", "key": "email"}, make_ctx()
        )
    assert info.value.message.endswith(f'first: missing on target: email="{EMAIL}"')
    # a PostgreSQL error's DETAIL quotes row values: it goes to the details, not the message
    run_sql(pg_dsn, "CREATE TABLE u (email text PRIMARY KEY)")
    run_sql(pg_dsn, "INSERT INTO u VALUES (%s)", (EMAIL,))
    with pytest.raises(ActionFailed) as dup:
        SqlExecAction().run(
            {"dsn": pg_dsn, "sql": "INSERT INTO u VALUES (%s)", "params": [EMAIL]}, make_ctx()
        )
    assert "duplicate key value violates unique constraint" in dup.value.message
    assert EMAIL not in dup.value.message and "DETAIL" not in dup.value.message
    assert dup.value.details.strip().startswith("DETAIL:") and "Key (email)=(" in dup.value.details
    assert EMAIL in dup.value.details


def _two_sqlite(tmp_path: Path) -> tuple[str, str]:
    """customers 1..20 on the source; a `vip` table on each side, with other rows."""
    src, dst = sqlite_file(tmp_path, "legacy.db"), sqlite_file(tmp_path, "new.db")
    make_customers(src, range(1, 21))
    make_customers(dst, [], table=True)
    run_sql(src, "CREATE TABLE vip (id integer)")
    run_sql(src, "INSERT INTO vip VALUES (2), (4), (6)")
    run_sql(dst, "CREATE TABLE vip (id integer)")
    run_sql(dst, "INSERT INTO vip VALUES (11), (13)")
    return src, dst


def test_sqlite_copy_evaluates_where_against_the_source(make_ctx: Any, tmp_path: Path) -> None:
    src, dst = _two_sqlite(tmp_path)
    where = "id IN (SELECT id FROM vip)"
    params = {"source": src, "target": dst, "table": "customers", "key": "id", "where": where}
    assert SqlCopyAction().run(params, make_ctx()) == {"rows_copied": 3}
    assert run_sql(dst, "SELECT id FROM customers ORDER BY id") == [(2,), (4,), (6,)]
    ok = SqlVerifyAction().run(params, make_ctx())
    assert ok["rows_checked"] == 3 and ok["mismatches"] == 0


def test_sqlite_verify_evaluates_where_against_the_source(make_ctx: Any, tmp_path: Path) -> None:
    """Rows copied by the target's `vip` (the old hole) are not what the source's `vip` says:
    verify must say so instead of agreeing."""
    src, dst = _two_sqlite(tmp_path)
    copied = run_sql(src, "SELECT * FROM customers WHERE id IN (11, 13)")
    marks = ", ".join("?" for _ in copied[0])
    for row in copied:
        run_sql(dst, f"INSERT INTO customers VALUES ({marks})", row)
    with pytest.raises(ActionFailed) as info:
        SqlVerifyAction().run(
            {
                "source": src,
                "target": dst,
                "table": "customers",
                "key": "id",
                "where": "id IN (SELECT id FROM vip)",
            },
            make_ctx(),
        )
    assert info.value.outputs["missing"] == 3  # 2, 4, 6: the source's vips
    assert info.value.outputs["extra"] == 0  # 11 and 13 are no vips of the source


def test_where_naming_a_table_only_the_target_has_is_an_error(
    make_ctx: Any, tmp_path: Path
) -> None:
    src, dst = _two_sqlite(tmp_path)
    run_sql(dst, "CREATE TABLE only_here (id integer)")
    with pytest.raises(ActionFailed, match="no such table: only_here"):
        SqlCopyAction().run(
            {
                "source": src,
                "target": dst,
                "table": "customers",
                "key": "id",
                "where": "id IN (SELECT id FROM only_here)",
            },
            make_ctx(),
        )
    assert run_sql(dst, "SELECT count(*) FROM customers") == [(0,)]
