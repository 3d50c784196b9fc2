"""`cohort:` on the SQL actions, on SQLite and on a real PostgreSQL, through `runbook apply`:
the source query read-only, copy and verify of a member table and of a child table keyed
otherwise (`cohort_key`), `sql.exec` with `rb_members`, and a differing child row marking its
owner `failed` and naming it (issue 11: the examples run these on PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import write

OWNERS = 40
SCHEMA = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, total TEXT)",
    "CREATE TABLE tags (customer_id INTEGER NOT NULL, tag TEXT NOT NULL, "
    "PRIMARY KEY (customer_id, tag))",
)
ROWS = {
    "customers": [(i, f"c{i}@example.com", "en") for i in range(1, OWNERS + 1)],
    "orders": [(100 + i, 1 + i % OWNERS, f"{i}.50") for i in range(3 * OWNERS)],
    "tags": [(i, t) for i in range(1, OWNERS + 1) for t in ("a", "b")],
}


def _sqlite(path: str, rows: bool) -> str:
    with sqlite3.connect(path) as db:
        for ddl in SCHEMA:
            db.execute(ddl)
        if rows:
            for table, values in ROWS.items():
                marks = ", ".join("?" * len(values[0]))
                db.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
    return f"sqlite:///{path}"


def _pg(dsn: str, rows: bool) -> str:
    import psycopg

    with psycopg.connect(dsn) as conn:
        for ddl in SCHEMA:
            conn.execute(ddl)
        if rows:
            for table, values in ROWS.items():
                marks = ", ".join(["%s"] * len(values[0]))
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
    return dsn


def _runbook(source: str, target: str) -> Path:
    copy = {"source": "{{ vars.src }}", "target": "{{ vars.dst }}", "cohort": "customers"}
    steps: list[dict[str, Any]] = [
        {"id": "copy-customers", "action": "sql.copy", "rollback": "none",
         "with": {**copy, "table": "customers", "key": "id"}},
        {"id": "copy-orders", "action": "sql.copy", "rollback": "none",
         "with": {**copy, "table": "orders", "key": "id", "cohort_key": "customer_id"}},
        {"id": "copy-tags", "action": "sql.copy", "marks": "moved", "rollback": "none",
         "with": {**copy, "table": "tags", "key": ["customer_id", "tag"],
                  "cohort_key": "customer_id"}},
        {"id": "touch", "action": "sql.exec", "when": "vars.touch == wave.id",
         "rollback": "none",
         "with": {"dsn": "{{ vars.dst }}", "cohort": "customers",
                  "sql": "UPDATE orders SET total = 'changed' WHERE id = (SELECT MIN(id) FROM "
                         "orders WHERE customer_id IN (SELECT key FROM rb_members))"}},
        {"id": "verify-customers", "action": "sql.verify",
         "with": {**copy, "table": "customers", "key": "id"}},
        {"id": "verify-orders", "action": "sql.verify",
         "with": {**copy, "table": "orders", "key": "id", "cohort_key": "customer_id"}},
        {"id": "verify-tags", "action": "sql.verify", "marks": "verified",
         "with": {**copy, "table": "tags", "key": ["customer_id", "tag"],
                  "cohort_key": "customer_id"}},
    ]  # fmt: skip
    cohort = {
        "source": {"dsn": "{{ vars.src }}", "query": "SELECT id, email, locale FROM customers"},
        "key": "id",
        "attributes": ["email", "locale"],
        "waves": [{"id": "first", "size": 10}, {"id": "second", "size": "rest"}],
        "seed": 3,
    }
    return write(
        "m.yaml",
        "cohort-sql",
        vars={"src": source, "dst": target, "touch": {"type": "string", "default": ""}},
        cohorts={"customers": cohort},
        phases=[{"id": "move", "waves": {"cohort": "customers"}, "steps": steps}],
    )


def _ledger(sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect("file:.runbook/cohort-sql/state.db?mode=ro", uri=True)
    try:
        return [tuple(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def _count(dsn: str, sql: str) -> int:
    if dsn.startswith("sqlite:///"):
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as db:
            return int(db.execute(sql).fetchone()[0])
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def _check(runbook: Any, source: str, target: str) -> None:
    _runbook(source, target)
    r = runbook("apply", "m.yaml", "--yes", "--var", "touch=second")
    assert r.code == 1, r.output
    first = sorted(k for (k,) in _ledger("SELECT key FROM entity WHERE wave = 'first'"))
    second = sorted(k for (k,) in _ledger("SELECT key FROM entity WHERE wave = 'second'"))
    assert len(first) == 10 and len(second) == OWNERS - 10
    # the wave's members only, child tables by their member column
    assert _count(target, "SELECT count(*) FROM tags") == 2 * OWNERS
    assert _count(target, "SELECT count(*) FROM orders") == 3 * OWNERS
    # the changed order of the second wave's first member: that member failed, named
    owner = _count(
        source,
        "SELECT customer_id FROM orders WHERE id = (SELECT MIN(id) FROM orders WHERE "
        f"customer_id IN ({', '.join(map(str, second))}))",
    )
    assert f"member(s) marked failed (customer_id): {owner}" in r.output
    assert _ledger("SELECT state, reason FROM entity WHERE key = ?", owner) == [
        ("failed", "sql.verify: different in orders")
    ]
    states = dict(_ledger("SELECT state, count(*) FROM entity GROUP BY state"))
    assert states == {"verified": 10, "moved": OWNERS - 11, "failed": 1}
    assert "Traceback" not in r.output and "internal error" not in r.output


def test_cohort_sql_sqlite_to_sqlite(runbook) -> None:
    _check(runbook, _sqlite("legacy.db", True), _sqlite("new.db", False))


def test_cohort_sql_sqlite_to_postgresql(runbook, pg_dsn: str) -> None:
    _check(runbook, _sqlite("legacy.db", True), _pg(pg_dsn, False))


@pytest.fixture
def pg_pair(postgres_server: Any) -> Any:
    if not postgres_server.running():
        postgres_server.start()
    names = [postgres_server.create_database() for _ in range(2)]
    yield [postgres_server.dsn(n) for n in names]
    for n in names:
        postgres_server.drop_database(n)


def test_cohort_sql_postgresql_to_postgresql_read_only_sides(runbook, pg_pair: list[str]) -> None:
    """The source query and sql.verify run on read-only sessions: the members still reach them
    (a temp table, loaded in a transaction of its own), and nothing else is written."""
    source, target = _pg(pg_pair[0], True), _pg(pg_pair[1], False)
    _check(runbook, source, target)
    assert _count(source, "SELECT count(*) FROM orders") == 3 * OWNERS  # the source untouched
    assert _count(source, "SELECT count(*) FROM pg_tables WHERE tablename = 'rb_members'") == 0


def test_cohort_sql_postgresql_to_sqlite(runbook, pg_dsn: str) -> None:
    """Issue 13: the hashed key ranges (SQLite on the target side) find the changed order of
    a member of the second wave and mark that member alone."""
    _check(runbook, _pg(pg_dsn, True), _sqlite("new.db", False))


def test_cohort_sql_a_real_key_on_postgresql_is_copied_and_verified(runbook, pg_dsn: str) -> None:
    """A double precision key holding 1.5 beside whole numbers: the member is copied and
    verified by its own value (its text '1.5' in the ledger matched no row: issue 14)."""
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE customers (id double precision PRIMARY KEY, email TEXT)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO customers VALUES (%s, %s)",
                [(k, f"c{k}@example.com") for k in [*range(1, 20), 1.5, 2.25]],
            )
    with sqlite3.connect("new.db") as db:
        db.execute("CREATE TABLE customers (id REAL PRIMARY KEY, email TEXT)")
    copy = {"source": "{{ vars.src }}", "target": "{{ vars.dst }}", "cohort": "customers",
            "table": "customers", "key": "id"}  # fmt: skip
    write(
        "m.yaml",
        "cohort-sql",
        vars={"src": pg_dsn, "dst": "sqlite:///new.db"},
        cohorts={"customers": {
            "source": {"dsn": "{{ vars.src }}", "query": "SELECT id, email FROM customers"},
            "key": "id", "attributes": ["email"],
            "waves": [{"id": "first", "size": 5}, {"id": "second", "size": "rest"}], "seed": 3,
        }},
        phases=[{"id": "move", "waves": {"cohort": "customers"}, "steps": [
            {"id": "copy", "action": "sql.copy", "rollback": "none", "with": copy},
            {"id": "verify", "action": "sql.verify", "marks": "verified", "with": copy},
        ]}],
    )  # fmt: skip
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 0, r.output
    assert _count("sqlite:///new.db", "SELECT count(*) FROM customers") == 21
    assert dict(_ledger("SELECT state, count(*) FROM entity GROUP BY state")) == {"verified": 21}
    assert _ledger("SELECT count(*) FROM entity WHERE key IN (1.5, 2.25)") == [(2,)]
