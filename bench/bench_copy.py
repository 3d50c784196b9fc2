"""``sql.copy`` into PostgreSQL against the bare pipe, alternated in one run (issue 13, SPEC §10).

    .venv/bin/python bench/bench_copy.py [--rows 1000000] [--repeat 5]

Two directions, each against its own bare pipe (SPEC §11):

- PostgreSQL -> PostgreSQL: ``COPY customers TO STDOUT`` streamed into ``COPY customers FROM
  STDIN`` of an empty target (psycopg 3, text format), one commit;
- SQLite -> PostgreSQL: ``fetchmany(10000)`` -> COPY ``write_row`` into an empty target.

Runs alternate A B B A … (the machine is shared: load drifts), each in a process of its own
(``bench_sql.py --one``), timed around the pipe or the action's ``run`` only. Rates are
N / (T(N) − T(0)), T(0) the same measurement on an empty table in the same run. A re-run into
the full target (upserting) is reported apart. The load average is printed before and after.
Results also go to bench/out/copy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_sql import measure, pg_db, sqlite_db  # noqa: E402


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), "?",
    )  # fmt: skip
    return f"nproc={os.cpu_count()} {platform.machine()} {cpu}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["pg", "sqlite"], help="one direction (the source)")
    ns = parser.parse_args()
    from tests.servers.postgres import cluster

    print(f"machine: {machine()}; rows={ns.rows:,}; repeat={ns.repeat}; load {load()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-copy-"))
    results: dict[str, Any] = {"machine": machine(), "rows": ns.rows, "load_before": load()}
    try:
        with cluster(fsync=True) as server:
            lite = {n: sqlite_db(tmp / f"src{n}.db", n) for n in (0, ns.rows)}
            pg = {n: pg_db(server, n) for n in (0, ns.rows)}
            made: list[str] = []

            def target() -> str:
                dsn = pg_db(server, 0)
                made.append(dsn)
                return dsn

            def drop_targets() -> None:
                while made:
                    server.drop_database(made.pop().rsplit("/", 1)[1])

            def copy_args(src: str, n: int) -> dict[str, Any]:
                source = pg[n] if src == "pg" else f"sqlite:///{lite[n]}"
                return {"source": source, "target": target(), "table": "customers", "key": "id"}

            kinds = {
                "pg": {
                    "pipe": ("raw-pg", lambda n: {"source": pg[n], "target": target()}),
                    "copy": ("copy", lambda n: copy_args("pg", n)),
                },
                "sqlite": {
                    "pipe": ("raw-sqlite-pg", lambda n: {"source": lite[n], "target": target()}),
                    "copy": ("copy", lambda n: copy_args("sqlite", n)),
                },
            }
            for direction, pair in kinds.items():
                if ns.only and direction != ns.only:
                    continue
                runs: dict[str, list[float]] = {"pipe": [], "copy": []}
                t0: dict[str, list[float]] = {"pipe": [], "copy": []}
                for i in range(ns.repeat):
                    order = ["pipe", "copy"] if i % 2 == 0 else ["copy", "pipe"]
                    for name in order:
                        kind, make = pair[name]
                        runs[name].append(measure(kind, make(ns.rows))["seconds"])
                        t0[name].append(measure(kind, make(0))["seconds"])
                        drop_targets()
                # a re-run into the full target: every batch upserted
                full = copy_args(direction, ns.rows)
                measure("copy", full)
                rerun = [measure("copy", full)["seconds"] for _ in range(max(1, ns.repeat // 2))]
                drop_targets()
                row: dict[str, Any] = {"runs": runs, "t0": t0, "rerun": rerun}
                for name in ("pipe", "copy"):
                    t, z = statistics.median(runs[name]), statistics.median(t0[name])
                    row[name] = {"seconds": t, "t0": z, "rate": ns.rows / max(t - z, 1e-9)}
                row["ratio"] = row["copy"]["rate"] / row["pipe"]["rate"]
                row["rerun_rate"] = ns.rows / statistics.median(rerun)
                results[direction] = row
                label = "PostgreSQL" if direction == "pg" else "SQLite"
                print(
                    f"{label}->PostgreSQL: pipe {row['pipe']['seconds']:.3f} s (T0 "
                    f"{row['pipe']['t0']:.3f}) {row['pipe']['rate'] / 1e6:.3f} M rows/s; sql.copy "
                    f"{row['copy']['seconds']:.3f} s (T0 {row['copy']['t0']:.3f}) "
                    f"{row['copy']['rate'] / 1e6:.3f} M rows/s = {100 * row['ratio']:.0f} % of the "
                    f"pipe; re-run (upsert) {row['rerun_rate'] / 1e6:.3f} M rows/s; runs "
                    f"pipe {[round(x, 3) for x in runs['pipe']]} copy "
                    f"{[round(x, 3) for x in runs['copy']]}; load {load()}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_after"] = load()
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / f"copy{'-' + ns.only if ns.only else ''}.json").write_text(json.dumps(results, indent=1))
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
