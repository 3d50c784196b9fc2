#!/usr/bin/env python3
"""What the demo migration left behind, in a few lines: rows on both sides, messages written.

python runbooks/examples/demo_summary.py acai demo/
python runbooks/examples/demo_summary.py subscription demo/
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

TABLES = {
    "acai": ("legacy.db", "new.db", ("customers", "orders", "subscriptions"), "outbox"),
    "subscription": (
        "subscription-legacy.db",
        "subscription-new.db",
        ("subscribers", "payment_methods", "subscriptions"),
        "subscription-outbox",
    ),
}


def count(db: Path, table: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in TABLES:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    kind, folder = argv[0], Path(argv[1])
    legacy, new, tables, outbox_name = TABLES[kind]
    print(f"demo ({kind}): rows on the legacy side -> rows on the new platform")
    for table in tables:
        before, after = count(folder / legacy, table), count(folder / new, table)
        mark = "all moved" if before == after else f"{before - after:,} not moved"
        print(f"  {table:<16} {before:>8,} -> {after:>8,}   {mark}")
    outbox = folder / outbox_name
    if outbox.is_dir():
        channels = sorted(p for p in outbox.iterdir() if p.is_dir())
        parts = [f"{p.name} {sum(1 for _ in p.rglob('*.eml')):,}" for p in channels]
        print(f"  messages in {outbox}/: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
