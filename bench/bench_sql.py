"""Benchmark of ``sql.copy`` and ``sql.verify`` next to the raw limits, measured in one run.

    .venv/bin/python bench/bench_sql.py [--rows 1000000] [--repeat 3] [--no-postgres]

Each measurement runs in a process of its own (this script re-invoked with ``--one``) so that
its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own.  The time is
``time.perf_counter`` around the action's ``run`` (or the raw copy) only, not process start-up
or imports.  Per-row rates are N / (T(N) - T(0)), T(0) the same measurement on an empty table
in the same run.  Memory is shown flat by the peak RSS at N/10 rows next to the one at N.

PostgreSQL: a throw-away cluster (Debian ``postgresql``) with its default settings (fsync on),
started by the test fixture's code on 127.0.0.1; SQLite files in a temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SQLITE_DDL = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT,"
    " status TEXT, created_at TIMESTAMP, balance NUMERIC(12,2), locale TEXT)"
)
PG_DDL = (
    "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text,"
    " status text, created_at timestamptz, balance numeric(12,2), locale text)"
)
SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO customers SELECT i, 'Customer ' || i,
  CASE WHEN i % 7 = 0 THEN NULL ELSE 'c' || i || '@example.com' END,
  CASE i % 3 WHEN 0 THEN 'active' WHEN 1 THEN 'cancelled' ELSE 'pending' END,
  datetime('2024-01-01', '+' || i || ' minutes'), round((i % 100000) / 100.0 + 0.5, 2),
  CASE i % 4 WHEN 0 THEN 'fr_FR' WHEN 1 THEN 'en_GB' WHEN 2 THEN 'pt_BR' ELSE 'de_DE' END
FROM n
"""
PG_FILL = """
INSERT INTO customers SELECT i, 'Customer ' || i,
  CASE WHEN i % 7 = 0 THEN NULL ELSE 'c' || i || '@example.com' END,
  (ARRAY['active', 'cancelled', 'pending'])[i % 3 + 1],
  timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute',
  (i % 100000) / 100.0 + 0.5, (ARRAY['fr_FR', 'en_GB', 'pt_BR', 'de_DE'])[i % 4 + 1]
FROM generate_series(1, %s) AS i
"""
COLS = "id, name, email, status, created_at, balance, locale"


# -- one measurement, in its own process --------------------------------------------------------


def _ctx() -> Any:
    import threading

    from runbook_engine.actions import ActionContext
    from runbook_engine.format.loader import load_text

    text = (
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: bench}\nphases:\n"
        "  - id: p\n    steps:\n      - {id: s, action: wait, with: {duration: 0s}}\n"
    )

    class Mask:
        def mask(self, text: str) -> str:
            return text

    class Records(dict[str, str]):
        def put(self, items: Any) -> None:
            self.update(items)

    return ActionContext(
        step_id="s", run_id="bench", attempt=1, timeout=3600.0,
        runbook=load_text(text, "bench.yaml").runbook, state_dir=Path(tempfile.gettempdir()),
        masker=Mask(), records=Records(), emit=lambda _k, _d: None, cancel=threading.Event(),
    )  # fmt: skip


def one(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    if kind in ("copy", "verify"):
        from runbook_engine.plugins.sql.actions import SqlCopyAction, SqlVerifyAction

        action = SqlCopyAction() if kind == "copy" else SqlVerifyAction()
        ctx = _ctx()
        t0 = time.perf_counter()
        out = dict(action.run(args, ctx))
        seconds = time.perf_counter() - t0
    elif kind == "raw-sqlite":
        conn = sqlite3.connect(args["target"], isolation_level=None)
        t0 = time.perf_counter()
        conn.execute("ATTACH DATABASE ? AS src", (args["source"],))
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO customers ({COLS}) SELECT {COLS} FROM src.customers")
        conn.execute("COMMIT")
        seconds = time.perf_counter() - t0
        out = {}
    elif kind == "raw-pg":  # COPY TO STDOUT streamed into COPY FROM STDIN (text)
        import psycopg

        with psycopg.connect(args["source"]) as src, psycopg.connect(args["target"]) as dst:
            t0 = time.perf_counter()
            with (
                src.cursor() as sc,
                dst.cursor() as dc,
                sc.copy(f"COPY customers ({COLS}) TO STDOUT") as out_,
                dc.copy(f"COPY customers ({COLS}) FROM STDIN") as in_,
            ):
                for block in out_:
                    in_.write(block)
            dst.commit()
            seconds = time.perf_counter() - t0
        out = {}
    elif kind == "raw-sqlite-pg":  # fetchmany -> COPY write_row
        import psycopg

        lite = sqlite3.connect(args["source"])
        with psycopg.connect(args["target"]) as dst:
            t0 = time.perf_counter()
            cur = lite.execute(f"SELECT {COLS} FROM customers")
            with dst.cursor() as dc, dc.copy(f"COPY customers ({COLS}) FROM STDIN") as in_:
                while rows := cur.fetchmany(10_000):
                    for row in rows:
                        in_.write_row(row)
            dst.commit()
            seconds = time.perf_counter() - t0
        out = {}
    else:
        raise SystemExit(f"unknown measurement {kind}")
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "rss_mb": rss_kb / 1024, "outputs": out}


# -- the driver ---------------------------------------------------------------------------------


def measure(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--one", kind, json.dumps(args)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def sqlite_db(path: Path, rows: int) -> str:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(SQLITE_DDL)
    if rows:
        conn.execute("BEGIN")
        conn.execute(SQLITE_FILL, (rows,))
        conn.execute("COMMIT")
    conn.close()
    return str(path)


def pg_db(server: Any, rows: int) -> str:
    import psycopg

    dsn: str = server.dsn(server.create_database())
    with psycopg.connect(dsn) as conn:
        conn.execute(PG_DDL)
        if rows:
            conn.execute(PG_FILL.replace("%s", str(int(rows))))
        conn.execute("ANALYZE customers")
    return dsn


class Runner:
    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.lines: list[str] = []

    def series(self, label: str, kind: str, make: Any, rows: int, note: str = "") -> dict[str, Any]:
        """Median of ``repeat`` runs at N rows, T(0) on empty tables, peak RSS at N and N/10."""
        times, rss = [], []
        for _ in range(self.repeat):
            r = measure(kind, make(rows))
            times.append(r["seconds"])
            rss.append(r["rss_mb"])
        t0 = statistics.median(measure(kind, make(0))["seconds"] for _ in range(self.repeat))
        small = measure(kind, make(rows // 10))
        t = statistics.median(times)
        rate = rows / max(t - t0, 1e-9)
        row = {
            "label": label, "seconds": t, "t0": t0, "rate": rate, "rss": max(rss),
            "rss_small": small["rss_mb"], "runs": times, "note": note,
        }  # fmt: skip
        print(
            f"{label:44s} {t:7.3f} s (T0 {t0:.3f})  {rate / 1e6:5.2f} M rows/s  "
            f"peak RSS {max(rss):6.1f} MB (N/10: {small['rss_mb']:.1f} MB)",
            flush=True,
        )
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "JSON"))
    ns = parser.parse_args()
    if ns.one:
        print(json.dumps(one(ns.one[0], json.loads(ns.one[1]))))
        return
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), "?",
    )  # fmt: skip
    print(f"machine: nproc={os.cpu_count()} {platform.machine()} {cpu}; "
          f"SQLite {sqlite3.sqlite_version}; rows={ns.rows:,}; repeat={ns.repeat}")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench-sql-"))
    run = Runner(ns.repeat)
    results = []
    try:
        sources = {n: sqlite_db(tmp / f"src{n}.db", n) for n in {0, ns.rows // 10, ns.rows}}

        def fresh_target(n: int, name: str = "dst") -> str:
            return sqlite_db(tmp / f"{name}.db", 0)

        def raw_args(n: int) -> dict[str, Any]:
            return {"source": sources[n], "target": fresh_target(n)}

        def copy_args(n: int) -> dict[str, Any]:
            return {"source": f"sqlite:///{sources[n]}", "target": f"sqlite:///{fresh_target(n)}",
                    "table": "customers", "key": "id"}  # fmt: skip

        results.append(
            run.series("SQLite->SQLite raw ATTACH + INSERT…SELECT", "raw-sqlite", raw_args, ns.rows)
        )
        results.append(run.series("SQLite->SQLite sql.copy", "copy", copy_args, ns.rows))
        copied = {}
        for n in sources:  # identical copies to verify against
            copied[n] = str(tmp / f"copy{n}.db")
            shutil.copy(sources[n], copied[n])

        def verify_args(n: int) -> dict[str, Any]:
            return {"source": f"sqlite:///{sources[n]}", "target": f"sqlite:///{copied[n]}",
                    "table": "customers", "key": "id"}  # fmt: skip

        results.append(run.series("SQLite/SQLite sql.verify", "verify", verify_args, ns.rows))
        if not ns.no_postgres:
            results += pg_part(run, ns.rows, sources)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("JSON " + json.dumps(results))


def pg_part(run: Runner, rows: int, sources: dict[int, str]) -> list[dict[str, Any]]:
    from tests.servers.postgres import cluster

    out = []
    with cluster(fsync=True) as server:
        pg_src = {n: pg_db(server, n) for n in sources}

        def pg_target(n: int) -> str:
            return pg_db(server, 0)

        def raw_pg(n: int) -> dict[str, Any]:
            return {"source": pg_src[n], "target": pg_target(n)}

        def copy_pg(n: int) -> dict[str, Any]:
            return {"source": pg_src[n], "target": pg_target(n), "table": "customers", "key": "id"}

        def raw_lite_pg(n: int) -> dict[str, Any]:
            return {"source": sources[n], "target": pg_target(n)}

        def copy_lite_pg(n: int) -> dict[str, Any]:
            return {"source": f"sqlite:///{sources[n]}", "target": pg_target(n),
                    "table": "customers", "key": "id"}  # fmt: skip

        def verify_pg(n: int) -> dict[str, Any]:
            return {"source": pg_src[n], "target": pg_src[n], "table": "customers", "key": "id"}

        def verify_lite_pg(n: int) -> dict[str, Any]:
            return {"source": f"sqlite:///{sources[n]}", "target": pg_src[n],
                    "table": "customers", "key": "id"}  # fmt: skip

        out.append(
            run.series("PostgreSQL->PostgreSQL raw COPY-to-COPY pipe", "raw-pg", raw_pg, rows)
        )
        out.append(run.series("PostgreSQL->PostgreSQL sql.copy", "copy", copy_pg, rows))
        out.append(
            run.series(
                "SQLite->PostgreSQL raw fetchmany -> COPY", "raw-sqlite-pg", raw_lite_pg, rows
            )
        )
        out.append(run.series("SQLite->PostgreSQL sql.copy", "copy", copy_lite_pg, rows))

        def copy_lite_pg_big(n: int) -> dict[str, Any]:
            return {**copy_lite_pg(n), "batch_size": 100_000}

        out.append(
            run.series(
                "SQLite->PostgreSQL sql.copy batch_size=100000", "copy", copy_lite_pg_big, rows
            )
        )
        out.append(run.series("PostgreSQL/PostgreSQL sql.verify", "verify", verify_pg, rows))
        out.append(run.series("SQLite/PostgreSQL sql.verify", "verify", verify_lite_pg, rows))
    return out


if __name__ == "__main__":
    main()
