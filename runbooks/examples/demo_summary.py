#!/usr/bin/env python3
"""What the demo migration left behind, checked independently of the engine: every legacy row
compared with the new platform's, grouped by what the runbook's ledger says of its owner.

    python runbooks/examples/demo_summary.py acai demo/
    python runbooks/examples/demo_summary.py subscription demo/ [--state-dir demo/.runbook]

The databases are compared column by column in SQL (SQLite files of the demo, read-only); the
ledger (STATE/NAME/state.db) is read for each owner's wave, journey state and reason. They
agree when every row of a `verified` entity is on the new platform and equal, no row of an
entity the ledger says was not moved (pending, notified, excluded, compensated, late,
vanished) is there, and the new platform has no row the legacy side lacks. Rows not moved are
listed by their owner's state and reason (excluded no-contact, ...), with their first keys.

Exit status: 0 the databases and the ledger agree, 1 they disagree (each disagreement is
printed), 2 bad usage or a file missing.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Demo:
    legacy: str
    new: str
    runbook: str  # metadata.name: the state folder
    cohort: str
    noun: str
    tables: tuple[tuple[str, str, str], ...]  # (table, key, owner column)
    outbox: str


DEMOS = {
    "acai": Demo(
        "legacy.db",
        "new.db",
        "acai-distributor-gradual-migration",
        "customers",
        "customer",
        (
            ("customers", "id", "id"),
            ("orders", "id", "customer_id"),
            ("subscriptions", "id", "customer_id"),
        ),
        "outbox",
    ),
    "subscription": Demo(
        "subscription-legacy.db",
        "subscription-new.db",
        "subscription-platform-switch",
        "subscribers",
        "subscriber",
        (
            ("subscribers", "id", "id"),
            ("payment_methods", "id", "subscriber_id"),
            ("subscriptions", "id", "subscriber_id"),
        ),
        "subscription-outbox",
    ),
}
NOT_MOVED = ("pending", "notified", "excluded", "compensated", "late", "vanished")
FIRST = 5  # keys shown per group


def _ro(path: Path) -> str:
    return f"file:{path}?mode=ro"


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in db.execute(f"PRAGMA main.table_info({table})")]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


Group = tuple[str | None, str | None, str | None, str, int, list[str]]


def compare(db: sqlite3.Connection, demo: Demo, table: str, key: str, owner: str) -> list[Group]:
    """(state, reason, wave, fate, rows, first keys) of ``table``'s legacy rows, where fate is
    `same`, `different` or `absent` on the new platform. One query: no per-row Python. The
    ledger's `key` column has no type, so `+` strips the owner column's INTEGER affinity:
    otherwise SQLite cannot use the (cohort, key) index and reads the whole cohort per row."""
    same = " AND ".join(f"n.{_q(c)} IS t.{_q(c)}" for c in _columns(db, table))
    sql = f"""
        SELECT e.state, e.reason, e.wave,
               CASE WHEN n.{_q(key)} IS NULL THEN 'absent'
                    WHEN {same} THEN 'same' ELSE 'different' END AS fate,
               count(*), group_concat(t.{_q(key)})
        FROM main.{table} AS t
        LEFT JOIN new.{table} AS n ON n.{_q(key)} = t.{_q(key)}
        LEFT JOIN ledger.entity AS e ON e.cohort = ? AND e.key = +t.{_q(owner)}
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""
    return [
        (state, reason, wave, fate, int(n), sorted((keys or "").split(","), key=_order)[:FIRST])
        for state, reason, wave, fate, n, keys in db.execute(sql, (demo.cohort,))
    ]


def _order(key: str) -> tuple[int, str]:
    return (len(key), key)  # the demo's keys are positive integers


def extra(db: sqlite3.Connection, table: str, key: str) -> tuple[int, list[str]]:
    rows = db.execute(
        f"SELECT n.{_q(key)} FROM new.{table} AS n WHERE NOT EXISTS "
        f"(SELECT 1 FROM main.{table} AS t WHERE t.{_q(key)} = n.{_q(key)}) ORDER BY 1"
    ).fetchall()
    return len(rows), [str(r[0]) for r in rows[:FIRST]]


def _keys(keys: list[str], n: int) -> str:
    return ", ".join(keys) + (", …" if n > len(keys) else "")


def report(kind: str, folder: Path, demo: Demo, state_dir: Path) -> int:
    ledger = state_dir / demo.runbook / "state.db"
    paths = [folder / demo.legacy, folder / demo.new, ledger]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"demo_summary.py: {', '.join(missing)}: no such file", file=sys.stderr)
        return 2
    db = sqlite3.connect(_ro(paths[0]), uri=True)
    db.execute("ATTACH DATABASE ? AS new", (_ro(paths[1]),))
    db.execute("ATTACH DATABASE ? AS ledger", (_ro(ledger),))
    problems: list[str] = []
    print(
        f"demo ({kind}): the legacy side -> the new platform, row by row, against the "
        f"ledger ({ledger})"
    )
    for table, key, owner in demo.tables:
        groups = compare(db, demo, table, key, owner)
        before = sum(g[4] for g in groups)
        after = int(db.execute(f"SELECT count(*) FROM new.{table}").fetchone()[0])
        absent: list[str] = []
        for state, reason, wave, fate, n, keys in groups:
            rows = f"{n:,} row(s) ({key} {_keys(keys, n)})"
            if state == "verified" and fate != "same":
                problems.append(f"{table}: {rows} of verified {demo.noun}s {fate} on the new side")
            elif state in NOT_MOVED and fate != "absent":
                problems.append(f"{table}: {rows} of {state} {demo.noun}s on the new platform")
            elif state is None:
                problems.append(f"{table}: {rows} whose {owner} is not in the ledger")
            if fate == "absent":
                label = f"{state} ({reason})" if reason else f"{state} in wave {wave}"
                absent.append(f"{label}: {n:,} ({key} {_keys(keys, n)})")
        count, first = extra(db, table, key)
        if count:
            only = f"{count:,} row(s) ({key} {_keys(first, count)})"
            problems.append(f"{table}: {only} on the new platform only")
        left = sum(g[4] for g in groups if g[3] == "absent")
        if not left:
            print(f"  {table:<16} {before:>8,} -> {after:>8,}   all moved")
        elif len(absent) == 1:
            print(f"  {table:<16} {before:>8,} -> {after:>8,}   not moved: {absent[0]}")
        else:
            print(f"  {table:<16} {before:>8,} -> {after:>8,}   not moved: {left:,}")
            for line in absent:
                print(f"      {line}")
    states = db.execute(
        "SELECT state, reason, count(*) FROM ledger.entity WHERE cohort = ?"
        " GROUP BY 1, 2 ORDER BY 3 DESC",
        (demo.cohort,),
    ).fetchall()
    said = ", ".join(f"{n:,} {s}" + (f" ({r})" if r else "") for s, r, n in states)
    verdict = "agrees with the databases" if not problems else "DISAGREES with the databases"
    print(f"  ledger: {said}: {verdict}")
    for p in problems:
        print(f"    {p}")
    outbox = folder / demo.outbox
    if outbox.is_dir():
        channels = sorted(p for p in outbox.iterdir() if p.is_dir())
        parts = [f"{p.name} {sum(1 for _ in p.rglob('*.eml')):,}" for p in channels]
        print(f"  messages in {outbox}/: " + ", ".join(parts))
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="demo_summary.py",
        description="Compare the demo's databases row by row and check them against the ledger.",
    )
    parser.add_argument("kind", choices=sorted(DEMOS))
    parser.add_argument("folder", type=Path, help="the demo folder (demo/)")
    parser.add_argument(
        "--state-dir", type=Path, help="the runbook state directory (default FOLDER/.runbook)"
    )
    args = parser.parse_args(argv)
    state_dir = args.state_dir or args.folder / ".runbook"
    return report(args.kind, args.folder, DEMOS[args.kind], state_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
