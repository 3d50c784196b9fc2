"""Benchmark of the commands that read the ledger on a cohort of 1,000,000 entities.

    .venv/bin/python bench/bench_customers.py [--entities 1000000] [--repeat 5]

1. Writes a legacy SQLite table of N customers (1 in 1,000 without an e-mail: excluded) and a
   runbook whose cohort is drawn into pilot 1 %, early 20 % and the rest, stratified by
   segment, each wave marked `verified` by one set-wise `sql.exec` step; APPLIES it for real,
   so the ledger is the engine's own (N entity rows, one transition per member). The same for
   a 100-entity cohort: T(0), the start-up of the same commands.
2. Times as whole processes, the median of ``--repeat`` runs: `customers FILE` (counts by
   wave x state: the goal, <= 1 s on 1M), `customers --in failed` (an empty list),
   `customers KEY` (one journey), `status`, `plan` (frozen: the ledger's summary) and
   `report --format json`; `customers --format csv` of every entity once (rows/s).
3. The limit in the same run: the bare `SELECT wave, state, count(*) ... GROUP BY` on the
   same database through the sqlite3 module, and its query plan (the covering index).

Prints a Markdown table (docs/benchmarks/customers.md) and the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNBOOK = str(Path(sys.executable).with_name("runbook"))
GOAL_S = 1.0

RUNBOOK_TEXT = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: bench-customers}
vars:
  legacy_db: sqlite:///legacy.db
cohorts:
  customers:
    source: {dsn: "{{ vars.legacy_db }}", query: "SELECT id, email, segment FROM customers"}
    key: id
    attributes: [email, segment]
    exclude: [{reason: no-contact, where: "email IS NULL"}]
    stratify_by: [segment]
    waves: [{id: pilot, size: 1%}, {id: early, size: 20%}, {id: all, size: rest}]
    seed: 7
phases:
  - id: rollout
    waves: {cohort: customers}
    steps:
      - id: mark
        action: sql.exec
        marks: verified
        rollback: none
        with: {dsn: "{{ vars.legacy_db }}", cohort: customers, sql: "SELECT count(*) FROM rb_members"}
"""


def make(work: Path, n: int) -> float:
    work.mkdir(parents=True)
    with sqlite3.connect(work / "legacy.db") as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, segment TEXT)")
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO customers SELECT i, CASE WHEN i % 1000 = 0 THEN NULL ELSE"
            " 'c' || i || '@example.com' END, CASE i % 3 WHEN 0 THEN 'retail' WHEN 1 THEN"
            " 'wholesale' ELSE 'online' END FROM n",
            (n,),
        )
    (work / "run.yaml").write_text(RUNBOOK_TEXT)
    start = time.monotonic()
    subprocess.run(
        [RUNBOOK, "apply", "run.yaml", "--yes"], cwd=work, check=True, capture_output=True
    )
    return time.monotonic() - start


def timed(work: Path, *args: str) -> float:
    start = time.monotonic()
    subprocess.run([RUNBOOK, *args], cwd=work, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def median(work: Path, repeat: int, *args: str) -> float:
    return round(statistics.median(timed(work, *args) for _ in range(repeat)), 3)


def bare(work: Path, repeat: int) -> tuple[float, str]:
    path = work / ".runbook" / "bench-customers" / "state.db"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    sql = "SELECT wave, state, count(*) FROM entity WHERE cohort = ? GROUP BY wave, state"
    times = []
    for _ in range(repeat):
        start = time.monotonic()
        con.execute(sql, ("customers",)).fetchall()
        times.append(time.monotonic() - start)
    plan = " ".join(str(r[-1]) for r in con.execute("EXPLAIN QUERY PLAN " + sql, ("c",)))
    con.close()
    return round(statistics.median(times), 3), plan


COMMANDS: dict[str, list[str]] = {
    "customers (counts)": ["customers", "run.yaml"],
    "customers --in failed": ["customers", "run.yaml", "--in", "failed"],
    "customers KEY (a journey)": ["customers", "run.yaml", "7"],
    "status": ["status", "run.yaml"],
    "plan (frozen)": ["plan", "run.yaml"],
    "report --format json": ["report", "run.yaml", "--format", "json"],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    res: dict[str, Any] = {"entities": args.entities, "machine": _machine()}
    with tempfile.TemporaryDirectory(prefix="bench-customers-") as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        res["apply_s"] = round(make(big, args.entities), 1)
        make(small, 100)
        res["load"] = os.getloadavg()[0]
        res["commands"] = {
            name: {
                "big_s": median(big, args.repeat, *cmd),
                "t0_s": median(small, args.repeat, *cmd),
            }
            for name, cmd in COMMANDS.items()
        }
        csv_s = timed(big, "customers", "run.yaml", "--format", "csv")
        res["csv_rows_per_s"] = round(args.entities / csv_s)
        res["csv_s"] = round(csv_s, 2)
        res["bare_s"], res["plan"] = bare(big, args.repeat)
    print(_table(res))
    print(json.dumps(res, indent=2))
    counts = res["commands"]["customers (counts)"]["big_s"]
    return 0 if counts <= GOAL_S else 1


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python " + (
        platform.python_version()
    )


def _table(res: dict[str, Any]) -> str:
    n = res["entities"]
    out = [
        f"{n:,} entities; apply (draw, freeze, mark 3 waves) {res['apply_s']} s; "
        f"load average {res['load']:.1f}; {res['machine']}",
        "",
        f"| command | T({n:,}) whole process | T(0): 100 entities | difference |",
        "|---|---|---|---|",
    ]
    for name, c in res["commands"].items():
        out.append(
            f"| `{name}` | {c['big_s']} s | {c['t0_s']} s | {round(c['big_s'] - c['t0_s'], 3)} s |"
        )
    out += [
        "",
        f"- bare `GROUP BY wave, state` through sqlite3: {res['bare_s']} s; plan: {res['plan']}",
        f"- `customers --format csv` of every entity: {res['csv_s']} s "
        f"({res['csv_rows_per_s']:,} rows/s)",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
