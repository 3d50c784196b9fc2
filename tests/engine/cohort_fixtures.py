"""A small cohort migration, really applied, for the tests of `customers`, the outcome, `plan`
and `report` on cohorts: a legacy SQLite table of customers (a few with no e-mail: excluded
`no-contact`), an empty target, and a runbook whose waves (pilot, early, all; stratified by
segment) announce to an outbox, copy and verify, each step marking its members.

``corrupt: WAVE`` breaks three rows of the target in that wave after the copy: its verify
fails, the wave is rolled back (members `compensated` and told "postponed"), and the next
apply moves them again. About a second per apply, no server needed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.engine.helpers import write

TABLE = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT, segment TEXT,"
    " active INTEGER)"
)
NO_EMAIL = (20, 40, 60)  # excluded: no-contact


def email(i: int) -> str | None:
    return None if i in NO_EMAIL else f"c{i}@example.com"


def legacy_db(path: str = "legacy.db", rows: int = 60, **emails: Any) -> None:
    """Customers 1..rows; ``emails`` overrides the address of some (``c7="x"``)."""
    with sqlite3.connect(path) as db:
        db.execute(TABLE)
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, 1)",
            [
                (
                    i,
                    emails.get(f"c{i}", email(i)),
                    "es" if i % 3 == 0 else "en",
                    "retail" if i % 2 else "wholesale",
                )
                for i in range(1, rows + 1)
            ],
        )
    with sqlite3.connect("new.db") as db:
        db.execute(TABLE)


def cohort(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "source": {
            "dsn": "{{ vars.legacy_db }}",
            "query": "SELECT id, email, locale, segment FROM customers WHERE active = 1",
        },
        "key": "id",
        "attributes": ["email", "locale", "segment"],
        "exclude": [{"reason": "no-contact", "where": "email IS NULL"}],
        "stratify_by": ["segment"],
        "waves": [
            {"id": "pilot", "size": "10%"},
            {"id": "early", "size": "30%"},
            {"id": "all", "size": "rest"},
        ],
        "seed": 7,
    }
    c.update(over)
    return c


def steps(
    cohort_name: str = "customers", announce: bool = True, prefix: str = ""
) -> list[dict[str, Any]]:
    """The wave's steps (ids prefixed with ``prefix``: one namespace for every step)."""
    out: list[dict[str, Any]] = []
    if announce:
        out.append(
            {
                "id": prefix + "announce",
                "action": "notify",
                "marks": "notified",
                "with": {
                    "channel": "outbox",
                    "to": {"cohort": cohort_name},
                    "templates": {"en": {"subject": "Moving", "body": "Hi {{ recipient.key }}"}},
                },
                "rollback": {
                    "action": "notify",
                    "with": {
                        "channel": "outbox",
                        "to": {"cohort": cohort_name},
                        "templates": {"en": {"subject": "Postponed", "body": "Postponed"}},
                    },
                },
            }
        )
    out += [
        {
            "id": prefix + "copy",
            "action": "sql.copy",
            "marks": "moved",
            "with": {
                "source": "{{ vars.legacy_db }}",
                "target": "{{ vars.new_db }}",
                "table": "customers",
                "key": "id",
                "cohort": cohort_name,
            },
            "rollback": {
                "action": "sql.exec",
                "with": {
                    "dsn": "{{ vars.new_db }}",
                    "cohort": cohort_name,
                    "sql": "DELETE FROM customers WHERE id IN (SELECT key FROM rb_members)",
                },
            },
        },
        {
            "id": prefix + "break",
            "action": "sql.exec",
            "when": "vars.corrupt == wave.id",
            "rollback": "none",
            "with": {
                "dsn": "{{ vars.new_db }}",
                "sql": "UPDATE customers SET email = 'x' WHERE id IN (SELECT id FROM customers"
                " ORDER BY id DESC LIMIT 3)",
            },
        },
        {
            "id": prefix + "verify",
            "action": "sql.verify",
            "marks": "verified",
            "on_failure": "rollback-wave",
            "with": {
                "source": "{{ vars.legacy_db }}",
                "target": "{{ vars.new_db }}",
                "table": "customers",
                "key": "id",
                "cohort": cohort_name,
            },
        },
    ]
    return out


VARS = {
    "legacy_db": "sqlite:///legacy.db",
    "new_db": "sqlite:///new.db",
    "corrupt": {"type": "string", "default": ""},
}


def migration(
    path: str = "m.yaml",
    name: str = "cm",
    cohorts: dict[str, Any] | None = None,
    phases: list[dict[str, Any]] | None = None,
    **top: Any,
) -> Path:
    return write(
        path,
        name,
        vars=top.pop("vars", VARS),
        cohorts=cohorts or {"customers": cohort()},
        phases=phases or [{"id": "rollout", "waves": {"cohort": "customers"}, "steps": steps()}],
        **top,
    )


def ledger(query: str, *params: Any, name: str = "cm") -> list[tuple[Any, ...]]:
    """Rows of the state database (read-only)."""
    con = sqlite3.connect(f"file:.runbook/{name}/state.db?mode=ro", uri=True)
    try:
        return con.execute(query, params).fetchall()
    finally:
        con.close()


def waves(name: str = "cm") -> dict[str, list[Any]]:
    """wave -> keys, as drawn."""
    out: dict[str, list[Any]] = {}
    for wave, key in ledger(
        "SELECT wave, key FROM entity WHERE wave IS NOT NULL ORDER BY key", name=name
    ):
        out.setdefault(wave, []).append(key)
    return out
