"""``sql.verify`` against reladiff 0.6, whole processes alternated in one run (issue 13, §10-§11).

    .venv/bin/python bench/bench_verify.py [--rows 1000000] [--repeat 5]

- PostgreSQL <-> PostgreSQL, 1M rows of the ``customers`` table of bench_sql.py (7 columns), in
  two databases of one throw-away cluster (fsync on): identical, and with 12 scattered
  differences (8 rows changed in 4 columns — one e-mail NULL -> '' —, 2 deleted, 2 added).
  ``runbook apply --yes`` of a one-step runbook (a fresh state each time) against
  ``reladiff DSN_A customers DSN_B customers -k id -c …every column…`` (its defaults otherwise:
  hashdiff, one thread per database), installed in its own venv (bench/out/venv, ``pip install
  'reladiff==0.6.*' psycopg2-binary``). Both are timed as whole processes, start-up included;
  runs alternate A B B A …; medians. Each tool's findings are checked: the runbook exits 0 /
  1 with "12 of"; reladiff prints 12 distinct keys.
- SQLite <-> PostgreSQL: a legacy SQLite table (``created_at TEXT`` of ISO timestamps,
  ``balance REAL``) against the PostgreSQL one (``timestamptz``, ``numeric(12,2)``); the rate is
  N / (T(N) − T(0)), T(0) the same process on empty tables. Beside each run, the SQLite side
  alone in this process: reading the columns, their canonical texts, the table's digest
  (``sqlite_floors``). reladiff has no SQLite driver (``sqlite://`` is not among its
  databases), so it is not run there.

The load average is printed with each series; results also go to bench/out/verify.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_copy import load, machine  # noqa: E402
from bench_sql import COLS, SQLITE_DDL, SQLITE_FILL, pg_db  # noqa: E402

RUNBOOK = ROOT / ".venv" / "bin" / "runbook"
RELADIFF = HERE / "out" / "venv" / "bin" / "reladiff"
LEGACY_DDL = SQLITE_DDL.replace("created_at TIMESTAMP", "created_at TEXT").replace(
    "balance NUMERIC(12,2)", "balance REAL"
)


def legacy_db(path: Path, rows: int) -> str:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(LEGACY_DDL)
    if rows:
        conn.execute("BEGIN")
        conn.execute(SQLITE_FILL.replace("datetime(", "strftime('%Y-%m-%dT%H:%M:%S', "), (rows,))
        conn.execute("COMMIT")
    conn.close()
    return f"sqlite:///{path}"


def scatter(dsn: str, rows: int) -> list[int]:
    """12 differences spread over the key range; the keys they touch."""
    import psycopg

    step = rows // 12
    ids = [7 + k * step for k in range(12)]
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE customers SET name = name || '!' WHERE id = ANY(%s)", [ids[0:3]])
        conn.execute("UPDATE customers SET balance = balance + 0.01 WHERE id = ANY(%s)", [ids[3:5]])
        conn.execute(
            "UPDATE customers SET created_at = created_at + interval '1 second' WHERE id = %s",
            [ids[5]],
        )
        conn.execute("UPDATE customers SET email = '' WHERE id = %s", [7 * (ids[6] // 7)])
        conn.execute("UPDATE customers SET status = 'closed' WHERE id = %s", [ids[7]])
        conn.execute("DELETE FROM customers WHERE id = ANY(%s)", [ids[8:10]])
        conn.execute(
            f"INSERT INTO customers ({COLS}) VALUES (%s, 'new', NULL, 'active', now(), 1, 'fr_FR'),"
            " (%s, 'new', NULL, 'active', now(), 2, 'fr_FR')",
            [rows + 5, rows + 1000],
        )
        conn.execute("ANALYZE customers")
    return [*ids[:6], 7 * (ids[6] // 7), ids[7], ids[8], ids[9], rows + 5, rows + 1000]


def runbook_file(tmp: Path, name: str, source: str, target: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: bench-verify}\nphases:\n"
        "  - id: p\n    steps:\n"
        f"      - id: verify\n        action: sql.verify\n"
        f"        with: {{source: {json.dumps(source)}, target: {json.dumps(target)}, "
        "table: customers, key: id, max_report: 20}\n"
    )
    return path


def ours(tmp: Path, path: Path) -> tuple[float, int, str]:
    state = tmp / "state"
    shutil.rmtree(state, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(RUNBOOK), "--state-dir", str(state), "apply", "--yes", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    line = next((ln.strip() for ln in text.splitlines() if " rows differ" in ln), "")
    return seconds, proc.returncode, line or text.strip().splitlines()[-1]


def reladiff(a: str, b: str) -> tuple[float, int, str]:
    cols = [x for c in COLS.split(", ") if c != "id" for x in ("-c", c)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(RELADIFF), a, "customers", b, "customers", "-k", "id", *cols, "--json"],
        capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "100000"},
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"reladiff failed: {proc.stderr[-2000:]}")
    keys = {json.loads(ln)[1][0] for ln in proc.stdout.splitlines() if ln.startswith('["')}
    return seconds, len(keys), proc.stdout


def sqlite_floors(path: str) -> dict[str, float]:
    """Where the SQLite side's time goes, in this process: reading the columns (a sum of their
    lengths), the canonical texts in SQL (the same, over ``canon.sqlite_text``), and the whole
    table's digest as ``rangediff`` asks for a range (canonical texts, per-column
    ``group_concat``, MD5 in Python)."""
    from runbook_engine.plugins.sql import rangediff
    from runbook_engine.plugins.sql.canon import sqlite_function, sqlite_text
    from runbook_engine.plugins.sql.common import describe_table
    from runbook_engine.plugins.sql.db import connect

    ctypes = {"id": "int", "created_at": "timestamp", "balance": "numeric"}
    out = {}
    with connect(path, must_exist=True, read_only=True) as conn:
        conn.raw.create_function("rb_canon", 2, sqlite_function, deterministic=True)
        table = describe_table(conn, "customers")
        assert table is not None
        cols = list(table.columns)
        types = [ctypes.get(c.name, "text") for c in cols]
        plain = " + ".join(f"coalesce(length({c.q}), 0)" for c in cols)
        canon = " + ".join(
            f"coalesce(length({sqlite_text(c.q, t)}), 0)" for c, t in zip(cols, types, strict=True)
        )
        for name, sql in (("read", plain), ("canonical texts", canon)):
            t0 = time.perf_counter()
            conn.raw.execute(f"SELECT sum({sql}) FROM customers").fetchone()
            out[name] = time.perf_counter() - t0
        side = rangediff.Side(conn, "customers", None, cols, cols[:1], types, "source", "text")
        t0 = time.perf_counter()
        rangediff._digests(side, [(None, None)])
        out["digest"] = time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    ns = parser.parse_args()
    if not RELADIFF.exists():
        raise SystemExit(
            f"reladiff is not installed in {RELADIFF.parent.parent}: python3 -m venv "
            "bench/out/venv && bench/out/venv/bin/pip install 'reladiff==0.6.*' psycopg2-binary"
        )
    from tests.servers.postgres import cluster

    version = subprocess.run(
        [str(RELADIFF), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"machine: {machine()}; rows={ns.rows:,}; repeat={ns.repeat}; {version}; "
          f"load {load()}", flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    results: dict[str, Any] = {"machine": machine(), "rows": ns.rows, "reladiff": version}
    try:
        with cluster(fsync=True) as server:
            src = pg_db(server, ns.rows)
            same = pg_db(server, ns.rows)
            diff = pg_db(server, ns.rows)
            touched = scatter(diff, ns.rows)
            print(f"12 differences at ids {touched}", flush=True)
            for case, dst, want in (("identical", same, 0), ("12 differences", diff, 12)):
                path = runbook_file(tmp, case.replace(" ", "-"), src, dst)
                runs: dict[str, list[float]] = {"runbook": [], "reladiff": []}
                found: dict[str, list[int]] = {"runbook": [], "reladiff": []}
                for i in range(ns.repeat):
                    order = ["runbook", "reladiff"] if i % 2 == 0 else ["reladiff", "runbook"]
                    for tool in order:
                        if tool == "runbook":
                            t, code, line = ours(tmp, path)
                            if code != (1 if want else 0) or (want and "12 of" not in line):
                                raise SystemExit(f"runbook: exit {code}: {line}")
                            found[tool].append(
                                int(line.split(" of ")[0].split()[-1]) if want else 0
                            )
                        else:
                            t, n, out = reladiff(src, dst)
                            found[tool].append(n)  # reladiff may report fewer: recorded
                        runs[tool].append(t)
                a, b = statistics.median(runs["runbook"]), statistics.median(runs["reladiff"])
                results[case] = {"runs": runs, "runbook": a, "reladiff": b, "load": load(),
                                 "keys_found": found}  # fmt: skip
                print(
                    f"PostgreSQL<->PostgreSQL {case}: runbook {a:.2f} s, reladiff {b:.2f} s: "
                    f"{b / a:.2f}x; runs {runs}; keys found {found}; load {load()}",
                    flush=True,
                )
                if want:
                    print(f"  runbook said: {line}", flush=True)
            # SQLite <-> PostgreSQL, the legacy table against PostgreSQL (reladiff: no driver)
            lite = {n: legacy_db(tmp / f"legacy{n}.db", n) for n in (0, ns.rows)}
            pg = {0: pg_db(server, 0), ns.rows: same}
            times: dict[int, list[float]] = {0: [], ns.rows: []}
            floors: list[dict[str, float]] = []
            for i in range(ns.repeat):
                for n in (ns.rows, 0) if i % 2 == 0 else (0, ns.rows):
                    path = runbook_file(tmp, f"lite{n}", lite[n], pg[n])
                    t, code, line = ours(tmp, path)
                    if code != 0:
                        raise SystemExit(f"SQLite<->PostgreSQL: exit {code}: {line}")
                    times[n].append(t)
                floors.append(sqlite_floors(lite[ns.rows]))
            t_n, t_0 = statistics.median(times[ns.rows]), statistics.median(times[0])
            rate = ns.rows / (t_n - t_0)
            floor = {k: statistics.median(f[k] for f in floors) for k in floors[0]}
            results["sqlite-pg"] = {"runs": times, "seconds": t_n, "t0": t_0, "rate": rate,
                                    "load": load(), "sqlite_side": floor}  # fmt: skip
            print(
                f"SQLite<->PostgreSQL: {t_n:.2f} s (T0 {t_0:.2f} s): {rate / 1e6:.3f} M rows/s; "
                f"runs {times}; load {load()}\n  the SQLite side alone, 1M rows in one thread "
                f"(medians): " + ", ".join(f"{k} {v:.2f} s" for k, v in floor.items()),
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "verify.json").write_text(json.dumps(results, indent=1))
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
