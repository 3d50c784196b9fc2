"""The acai example on PostgreSQL, by changing its DSN variables only (SPEC §6: both directions
that matter: SQLite -> PostgreSQL and PostgreSQL -> PostgreSQL). The cohort's source query runs
read-only on the legacy side; the wave's members reach PostgreSQL copies, verifies and
statements through a temp table; the ledger says the same as on SQLite (issue 11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import runbook_yaml
from tests.test_examples import (
    ACAI,
    ACAI_NAME,
    DEMO_VARS,
    count,
    demo_data,
    journey,
    ledger,
    ledger_counts,
    members,
)

TABLES = ("customers", "orders", "subscriptions")


def _pg_count(dsn: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def _dsn(server: Any, name: str) -> str:
    # no password in the DSN: libpq reads PGPASSWORD, so no secret lands in a variable
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


@pytest.fixture
def pg(postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    if not postgres_server.running():
        postgres_server.start()
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    made: list[str] = []

    def database() -> str:
        name = postgres_server.create_database()
        made.append(name)
        return _dsn(postgres_server, name)

    database.password = postgres_server.password  # type: ignore[attr-defined]
    yield database
    for name in made:
        postgres_server.drop_database(name)


def _targets(pg: Any) -> list[str]:
    out = []
    for var in ("new_db", "staging_db", "backup_db"):
        out += ["--var", f"{var}={pg()}"]
    return out


def test_acai_sqlite_to_postgresql(runbook, pg: Any) -> None:
    assert demo_data.main(["acai", "--out", "demo", "--customers", "300"]) == 0
    targets = _targets(pg)
    r = runbook("apply", "--yes", str(ACAI), *DEMO_VARS, *targets)
    assert r.code == 0, r.output
    assert "300 customers: 298 verified, 2 excluded (no-contact), 0 failed, 0 pending" in r.out
    assert ledger_counts(ACAI_NAME) == {
        ("pilot", "verified"): 20,
        ("early", "verified"): 59,
        ("all", "verified"): 219,
        (None, "excluded"): 2,
    }
    new = targets[1].split("=", 1)[1]
    verified = ", ".join(str(k) for (k,) in ledger(ACAI_NAME, VERIFIED))
    legacy = Path("demo/legacy.db")
    assert _pg_count(new, "SELECT count(*) FROM customers") == 298
    assert _pg_count(new, f"SELECT count(*) FROM customers WHERE id NOT IN ({verified})") == 0
    for table in ("orders", "subscriptions"):
        assert _pg_count(new, f"SELECT count(*) FROM {table}") == count(
            legacy, f"{table} WHERE customer_id IN ({verified})"
        )
    assert _pg_count(new, "SELECT count(*) FROM notice_audience") == 298
    for path in Path(".runbook").rglob("*"):  # the password never reaches the state
        assert not path.is_file() or pg.password.encode() not in path.read_bytes()
    assert pg.password not in r.output


VERIFIED = "SELECT key FROM entity WHERE state = 'verified' ORDER BY key"


def test_acai_postgresql_to_postgresql_with_a_wave_rolled_back(runbook, pg: Any) -> None:
    assert demo_data.main(["acai", "--out", "demo", "--customers", "300"]) == 0
    legacy = pg()
    # the legacy ERP on PostgreSQL: loaded with the engine's own sql.copy (create: true)
    load = runbook_yaml(
        "load-legacy",
        phases=[
            {
                "id": "load",
                "steps": [
                    {
                        "id": f"load-{t}",
                        "action": "sql.copy",
                        "rollback": "none",
                        "with": {
                            "source": "sqlite:///demo/legacy.db",
                            "target": legacy,
                            "table": t,
                            "key": "id",
                            "create": True,
                        },
                    }
                    for t in TABLES
                ],
            }
        ],
    )
    Path("load.yaml").write_text(load)
    assert runbook("apply", "--yes", "load.yaml").code == 0
    targets = _targets(pg)
    new = targets[1].split("=", 1)[1]
    r = runbook(
        "apply",
        "--yes",
        str(ACAI),
        *DEMO_VARS,
        *targets,
        "--var",
        f"legacy_db={legacy}",
        "--var",
        "inject_fault=early",
    )
    assert r.code == 1, r.output
    assert "verify-customers[early] failed" in r.output
    assert "cohort customers: drew 298 eligible of 300" in r.out  # read from PostgreSQL
    assert ledger_counts(ACAI_NAME) == {
        ("pilot", "verified"): 20,
        ("early", "compensated"): 59,
        ("all", "pending"): 219,
        (None, "excluded"): 2,
    }
    pilot = ", ".join(map(str, members(ACAI_NAME, "pilot")))
    assert _pg_count(new, "SELECT count(*) FROM customers") == 20
    assert _pg_count(new, f"SELECT count(*) FROM customers WHERE id NOT IN ({pilot})") == 0
    assert _pg_count(new, "SELECT count(*) FROM orders") == _pg_count(
        legacy, f"SELECT count(*) FROM orders WHERE customer_id IN ({pilot})"
    )
    broken = members(ACAI_NAME, "early")[0]
    assert [t["state"] for t in journey(runbook, ACAI, broken)["transitions"]] == [
        "notified",
        "moved",
        "failed",
        "compensated",
    ]
    # fixed: the same command without the fault, the change accepted (the run is pinned to
    # its vars, SPEC §8), finishes the migration (attempt 2 of early)
    again = ("apply", "--yes", str(ACAI), *DEMO_VARS, *targets, "--var", f"legacy_db={legacy}")
    r = runbook(*again, "--accept-changes")
    assert r.code == 1 and "succeeded after compensation" in r.out, r.output
    assert "300 customers: 298 verified, 2 excluded (no-contact), 0 failed, 0 pending" in r.out
    seen = journey(runbook, ACAI, broken)
    assert [(t["state"], t["attempt"]) for t in seen["transitions"]][-4:] == [
        ("pending", 2), ("notified", 2), ("moved", 2), ("verified", 2),
    ]  # fmt: skip
    excluded = ledger(ACAI_NAME, "SELECT key, reason FROM entity WHERE state = 'excluded'")
    assert [r for _, r in excluded] == ["no-contact", "no-contact"]
    gone = ", ".join(str(k) for k, _ in excluded)
    for table, column in (("customers", "id"), ("orders", "customer_id")):
        assert _pg_count(new, f"SELECT count(*) FROM {table}") == _pg_count(
            legacy, f"SELECT count(*) FROM {table} WHERE {column} NOT IN ({gone})"
        )
