"""A small cohort migration for the tests: a legacy SQLite base, a new one, and a runbook that
tells each member, copies it, verifies it (marks notified -> moved -> verified), with a wave
rollback that tells members their move is postponed and undoes the copy."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import yaml

SEGMENTS = ("retail", "wholesale", "online")
LOCALES = ("pt-BR", "es", "en")


def legacy(path: str = "legacy.db", rows: int = 600, no_contact_every: int = 50) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT,"
            " segment TEXT, active INTEGER)"
        )
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, 1)",
            [
                (
                    i,
                    None if i % no_contact_every == 0 else f"c{i}@example.com",
                    LOCALES[i % 3],
                    SEGMENTS[(i * 7) % 3],
                )
                for i in range(1, rows + 1)
            ],
        )


def target(path: str = "new.db") -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT,"
            " segment TEXT, active INTEGER)"
        )


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
            {"id": "pilot", "size": "5%", "min": 20},
            {"id": "early", "size": "20%"},
            {"id": "all", "size": "rest"},
        ],
        "seed": 7,
    }
    c.update(over)
    return c


def steps(**extra: Any) -> list[dict[str, Any]]:
    told = {"en": {"subject": "Your move", "body": "Hi {{ recipient.key }} ({{ wave.id }})"}}
    postponed = {"en": {"subject": "Postponed", "body": "Your move is postponed"}}
    return [
        {
            "id": "announce",
            "action": "notify",
            "marks": "notified",
            "with": {"channel": "outbox", "to": {"cohort": "customers"}, "templates": told},
            "rollback": {
                "action": "notify",
                "with": {
                    "channel": "outbox",
                    "to": {"cohort": "customers"},
                    "templates": postponed,
                },
            },
        },
        {
            "id": "copy",
            "action": "sql.copy",
            "marks": "moved",
            "with": {
                "source": "{{ vars.legacy_db }}",
                "target": "{{ vars.new_db }}",
                "table": "customers",
                "key": "id",
                "cohort": "customers",
            },
            "rollback": {
                "action": "sql.exec",
                "idempotent": True,  # deleting the members' rows twice is the same
                "with": {
                    "dsn": "{{ vars.new_db }}",
                    "cohort": "customers",
                    "sql": "DELETE FROM customers WHERE id IN (SELECT key FROM rb_members)",
                },
            },
        },
        {
            "id": "corrupt",
            "action": "sql.exec",
            "when": "vars.corrupt == wave.id",
            "rollback": "none",
            "with": {
                "dsn": "{{ vars.new_db }}",
                "cohort": "customers",
                "sql": "UPDATE customers SET email = 'lost' WHERE id IN "
                "(SELECT key FROM rb_members ORDER BY key DESC LIMIT 2)",
            },
        },
        {
            "id": "verify",
            "action": "sql.verify",
            "marks": "verified",
            "on_failure": "rollback-wave",
            "with": {
                "source": "{{ vars.legacy_db }}",
                "target": "{{ vars.new_db }}",
                "table": "customers",
                "key": "id",
                "cohort": "customers",
            },
        },
        *extra.get("more", []),
    ]


def write(path: str = "m.yaml", name: str = "cohorts", **over: Any) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "vars": {
            "legacy_db": "sqlite:///legacy.db",
            "new_db": "sqlite:///new.db",
            "corrupt": {"type": "string", "default": ""},
        },
        "cohorts": {"customers": over.pop("cohort", cohort())},
        "phases": over.pop(
            "phases", [{"id": "rollout", "waves": {"cohort": "customers"}, "steps": steps()}]
        ),
        **over,
    }
    p = Path(path)
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def ledger(name: str = "cohorts", sql: str = "", *params: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:.runbook/{name}/state.db?mode=ro", uri=True)
    try:
        return [tuple(r) for r in con.execute(sql, params)]
    finally:
        con.close()


def counts(name: str = "cohorts") -> dict[tuple[str | None, str], int]:
    rows = ledger(name, "SELECT wave, state, count(*) FROM entity GROUP BY wave, state")
    return {(w, s): n for w, s, n in rows}


def waves(name: str = "cohorts") -> dict[Any, str | None]:
    return dict(ledger(name, "SELECT key, wave FROM entity"))  # type: ignore[arg-type]


def journey(key: Any, name: str = "cohorts") -> list[tuple[str, str | None, int | None]]:
    return [
        (s, step, attempt)
        for s, step, attempt in ledger(
            name,
            "SELECT state, step, attempt FROM transition WHERE key = ? ORDER BY seq",
            key,
        )
    ]


def messages(key: Any, name: str = "cohorts") -> list[tuple[str, int, str | None]]:
    return [
        (step, attempt, mid)
        for step, attempt, mid in ledger(
            name,
            "SELECT step, attempt, message_id FROM message WHERE key = ? AND state = 'sent'"
            " ORDER BY seq",
            key,
        )
    ]


def summary(name: str = "cohorts") -> dict[str, Any]:
    (text,) = ledger(name, "SELECT summary FROM cohort")[0]
    doc: dict[str, Any] = json.loads(text)
    return doc
