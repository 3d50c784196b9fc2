"""``plugins/db.py`` against a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_engine.errors import ActionFailed
from runbook_engine.plugins.sql.db import connect, fetch, redact_dsn, sqlite_dsn


def test_redact_dsn_hides_passwords() -> None:
    assert redact_dsn("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_dsn("postgresql://u@h/db?password=s3cret&x=1") == (
        "postgresql://u@h/db?password=***&x=1"
    )
    assert redact_dsn("sqlite:///rel/a.db") == "sqlite:///rel/a.db"
    assert redact_dsn("sqlite:////abs/a.db") == "sqlite:////abs/a.db"


def test_sqlite_relative_and_absolute(tmp_path: Path) -> None:
    with connect("sqlite:///rel.db") as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL)")
    assert Path("rel.db").is_file()
    cols, rows = fetch("sqlite:///rel.db", "SELECT id, v FROM t WHERE id % 2 = 1 ORDER BY id", 5)
    assert cols == ["id", "v"]
    assert rows == [(1, "a"), (3, None)]
    assert fetch("sqlite:///rel.db", "SELECT id FROM t ORDER BY id", 2)[1] == [(1,), (2,)]
    absolute = sqlite_dsn(Path("rel.db").resolve())
    assert absolute.startswith("sqlite:////")
    assert fetch(absolute, "SELECT count(*) FROM t", 1)[1] == [(3,)]


def test_sqlite_missing_file_and_bad_sql() -> None:
    with pytest.raises(ActionFailed, match=r"nope\.db does not exist"):
        fetch("sqlite:///nope.db", "SELECT 1", 1)
    assert not Path("nope.db").exists()
    with connect("sqlite:///a.db") as conn:
        conn.execute("CREATE TABLE t (id INTEGER)")
    with pytest.raises(ActionFailed) as err:
        fetch("sqlite:///a.db", "SELECT * FROM t WHERE id >\n AND 1", 1)
    assert "'SELECT * FROM t WHERE id >' failed" in err.value.message
    assert "syntax error" in err.value.message
    assert err.value.retryable is False


def test_unsupported_dsn() -> None:
    with pytest.raises(ActionFailed, match=r"unsupported DSN .mysql://u:\*\*\*@h/db."):
        fetch("mysql://u:pw@h/db", "SELECT 1", 1)


@pytest.mark.servers
def test_postgres_fetch_and_errors(pg_dsn: str) -> None:
    with connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, amount numeric(10,2))")
        conn.execute("INSERT INTO t VALUES (1, 2.50), (2, NULL)")
        conn.commit()
    cols, rows = fetch(pg_dsn, "SELECT id, amount FROM t WHERE id % 2 = 1", 10)
    assert cols == ["id", "amount"]
    assert [(r[0], str(r[1])) for r in rows] == [(1, "2.50")]
    password = pg_dsn.split(":")[2].split("@")[0]
    with pytest.raises(ActionFailed) as err:
        fetch(pg_dsn, "SELECT * FROM missing_table", 1)
    assert 'relation "missing_table" does not exist' in err.value.message
    assert password not in err.value.message
    assert "***" in err.value.message
    wrong = pg_dsn.replace(password, "wrong-" + password)
    with pytest.raises(ActionFailed) as err:
        fetch(wrong, "SELECT 1", 1)
    assert "password authentication failed" in err.value.message
    assert password not in err.value.message
