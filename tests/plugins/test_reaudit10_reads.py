"""Issue 10 re-audit, items 5 and 6: a read-only SQLite read ran `PRAGMA journal_mode=WAL`
(the file changed), and a read-only PostgreSQL read ran `COPY … TO PROGRAM` and `COPY … TO
'/file'` as the postgres user.  Real SQLite files, a real PostgreSQL server."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.sql.actions import SqlQueryAction
from tests.engine.helpers import runbook_yaml
from tests.plugins.sqldata import run_sql, sqlite_file


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "query",
    [
        "PRAGMA journal_mode=WAL",
        "PRAGMA user_version = 7",
        "PRAGMA main.locking_mode = EXCLUSIVE",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA optimize",
        "PRAGMA writable_schema = ON",
        "REINDEX",
        "ANALYZE",
    ],
)
def test_sqlite_read_pragma_journal_mode_wal_reindex_analyze_are_refused(
    make_ctx: Any, tmp_path: Path, query: str
) -> None:
    dsn = sqlite_file(tmp_path, "db.sqlite")
    run_sql(dsn, "CREATE TABLE t (id integer PRIMARY KEY, a text)")
    run_sql(dsn, "CREATE INDEX ia ON t (a)")
    run_sql(dsn, "INSERT INTO t VALUES (1, 'x'), (2, 'y')")
    before = _digest(tmp_path / "db.sqlite")
    with pytest.raises(ActionFailed, match=r"not authorized|authorization denied"):
        SqlQueryAction().run({"dsn": dsn, "query": query}, make_ctx())
    assert _digest(tmp_path / "db.sqlite") == before
    assert not (tmp_path / "db.sqlite-wal").exists()
    assert run_sql(dsn, "PRAGMA journal_mode") == [("delete",)]


def test_sqlite_wal_read_in_a_runbook_fails_the_step_and_leaves_the_file(runbook: Any) -> None:
    Path("t.db").write_bytes(b"")
    run_sql("sqlite:///t.db", "CREATE TABLE t (id integer)")
    before = _digest(Path("t.db"))
    step = {
        "id": "q",
        "action": "sql.query",
        "with": {"dsn": "sqlite:///t.db", "query": "PRAGMA journal_mode=WAL"},
        "rollback": "none",
    }
    Path("r.yaml").write_text(runbook_yaml(name="walq", phases=[{"id": "p", "steps": [step]}]))
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1 and "not authorized" in r.output, r.output
    assert _digest(Path("t.db")) == before and not Path("t.db-wal").exists()


def test_sqlite_pure_pragma_reads_still_work(make_ctx: Any, tmp_path: Path) -> None:
    dsn = sqlite_file(tmp_path, "db.sqlite")
    run_sql(dsn, "CREATE TABLE t (id integer PRIMARY KEY, a text)")
    run_sql(dsn, "CREATE INDEX ia ON t (a)")
    for query, value in [
        ("SELECT count(*) FROM pragma_table_info('t')", 2),
        ("SELECT count(*) FROM pragma_table_xinfo('t')", 2),
        ("SELECT count(*) FROM pragma_index_list('t')", 1),
        ("SELECT name FROM pragma_database_list", "main"),
        ("PRAGMA journal_mode", "delete"),
        ("PRAGMA index_info(ia)", 0),
    ]:
        assert SqlQueryAction().run({"dsn": dsn, "query": query}, make_ctx())["value"] == value


@pytest.mark.servers
@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT 1) TO PROGRAM 'touch {dir}/PWNED_COPY'",
        "COPY t TO '{dir}/copyout.txt'",
        "copy (select ')TO STDOUT') to program 'touch {dir}/PWNED_COPY'",
        "/* x */ COPY t (id) TO '{dir}/copyout.txt'",
        "DO $$BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {dir}/PWNED_COPY'''; END$$",
    ],
)
def test_pg_read_copy_to_program_or_file_is_refused(
    make_ctx: Any, pg_dsn: str, tmp_path: Path, query: str
) -> None:
    """The test server's role is a superuser: without the refusal these ran."""
    run_sql(pg_dsn, "CREATE TABLE t (id integer)")
    run_sql(pg_dsn, "INSERT INTO t VALUES (1)")
    tmp_path.chmod(0o777)
    text = query.format(dir=tmp_path)
    with pytest.raises(ActionFailed, match=r"COPY … TO STDOUT|`DO` block"):
        SqlQueryAction().run({"dsn": pg_dsn, "query": text}, make_ctx())
    assert not (tmp_path / "PWNED_COPY").exists() and not (tmp_path / "copyout.txt").exists()


@pytest.mark.servers
def test_pg_read_copy_to_stdout_still_reads(make_ctx: Any, pg_dsn: str) -> None:
    from runbook_engine.plugins.sql.db import connect

    run_sql(pg_dsn, "CREATE TABLE t (id integer)")
    run_sql(pg_dsn, "INSERT INTO t VALUES (1), (2)")
    with connect(pg_dsn, read_only=True) as con:
        cur = con.raw.cursor()
        with cur.copy("COPY (SELECT id FROM t ORDER BY id) TO STDOUT") as copy:
            data = b"".join(bytes(b) for b in copy)
    assert data == b"1\n2\n"
