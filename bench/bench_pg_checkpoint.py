"""Per-step checkpoint cost of ``apply`` on the PostgreSQL state backend (issue 14), beside a
bare psycopg loop of ``INSERT; COMMIT`` of a same-sized row, in the same run.

    .venv/bin/python bench/bench_pg_checkpoint.py [--steps 300] [--repeat 3]

A throw-away PostgreSQL 15 cluster is started on 127.0.0.1 (``tests/servers/postgres.py``)
with the server's defaults for durability: ``fsync=on``, ``synchronous_commit=on``.

- **apply**: a WHOLE PROCESS, ``runbook --state URL apply FILE --yes``, on a fresh database
  (``state init`` first) per run. Every runbook starts with a phase ``base`` of ONE ``wait 0s``
  step; the N measured ``wait 0s`` steps come after it. T(0) is the runbook with only that
  phase, so per step = (T(N) - T(0)) / N, start-up and the lease excluded.
- **bare**: one connection, N times ``INSERT`` of a row as large as the engine's average
  journal record into a table shaped like ``runbook.journal``, then ``COMMIT``: the floor of
  one durable transaction per checkpoint. The engine commits once per group of records; the
  journal's records per step are printed beside it.

For reading the figure, the same runbooks are also applied on a fresh state directory (the
engine's own work per step beside a local fsync). Runs alternate (apply N, apply 0, bare,
directory, then again) so that a change of the machine's load
hits each alike; the median and the minimum of each are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNBOOK = str(Path(sys.executable).with_name("runbook"))


def runbook(n: int) -> str:
    lines = [
        "apiVersion: runbook/v1",
        "kind: Runbook",
        "metadata: {name: bench-pg}",
        "phases:",
        "  - id: base",
        "    steps:",
        "      - {id: b0, action: wait, with: {duration: 0s}, rollback: none}",
    ]
    if n:
        lines += ["  - id: p", "    needs: [base]", "    steps:"]
        lines += [
            f"      - {{id: s{i:04d}, action: wait, with: {{duration: 0s}}, rollback: none}}"
            for i in range(n)
        ]
    return "\n".join(lines) + "\n"


def timed_apply(server: object, file: Path) -> tuple[float, int, float]:
    """(wall seconds, journal records, mean record length) of one apply on a fresh database."""
    import psycopg

    name = server.create_database()  # type: ignore[attr-defined]
    url = server.dsn(name)  # type: ignore[attr-defined]
    env = {**os.environ, "RUNBOOK_STATE": url}
    try:
        subprocess.run([RUNBOOK, "state", "init", url], check=True, capture_output=True, env=env)
        t0 = time.perf_counter()
        done = subprocess.run(
            [RUNBOOK, "apply", str(file), "--yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=file.parent,
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"apply failed: {done.stderr}")
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*), avg(length(rec)) FROM runbook.journal").fetchone()
            assert row is not None
        return wall, int(row[0]), float(row[1] or 0)
    finally:
        server.drop_database(name)  # type: ignore[attr-defined]


def timed_apply_dir(file: Path) -> float:
    """Wall seconds of one apply on a fresh state directory (the engine's own cost per step
    beside a local fsync, for reading the PostgreSQL figure)."""
    state = Path(tempfile.mkdtemp(prefix="bench-pg-dir-"))
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_STATE"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [RUNBOOK, "--state", str(state / "s"), "apply", str(file), "--yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=file.parent,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"apply failed: {done.stderr}")
    return wall


def bare(server: object, n: int, size: int) -> float:
    """Seconds per ``INSERT; COMMIT`` of a ``size``-byte row, over ``n`` of them."""
    import psycopg

    name = server.create_database()  # type: ignore[attr-defined]
    try:
        with psycopg.connect(server.dsn(name), autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(
                "CREATE TABLE journal (runbook TEXT NOT NULL, seq BIGINT NOT NULL, at TEXT NOT "
                "NULL, kind TEXT NOT NULL, rec TEXT NOT NULL, hash TEXT, PRIMARY KEY (runbook, seq))"
            )
            text = "x" * size
            t0 = time.perf_counter()
            for seq in range(1, n + 1):
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO journal VALUES (%s, %s, %s, %s, %s, %s)",
                        ("bench-pg", seq, "2026-12-02T00:00:00.000Z", "step", text, "0" * 64),
                    )
            return (time.perf_counter() - t0) / n
    finally:
        server.drop_database(name)  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from tests.servers.postgres import cluster

    work = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    files = {n: work / f"r{n}.yaml" for n in (0, args.steps)}
    for n, f in files.items():
        f.write_text(runbook(n))
    per_step: list[float] = []
    bares: list[float] = []
    dirs: list[float] = []
    records_per_step = 0.0
    with cluster(fsync=True) as server:
        with __import__("psycopg").connect(server.dsn(), autocommit=True) as conn:
            settings = {
                k: conn.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
                for k in ("fsync", "synchronous_commit", "server_version")
            }
        size = 300
        for _ in range(args.repeat):
            t_n, recs_n, mean_len = timed_apply(server, files[args.steps])
            t_0, recs_0, _ = timed_apply(server, files[0])
            per_step.append((t_n - t_0) / args.steps)
            records_per_step = (recs_n - recs_0) / args.steps
            size = int(mean_len) or size
            bares.append(bare(server, args.steps, size))
            dirs.append(
                (timed_apply_dir(files[args.steps]) - timed_apply_dir(files[0])) / args.steps
            )
    med_step, med_bare = statistics.median(per_step), statistics.median(bares)
    print(f"PostgreSQL {settings['server_version']}, fsync={settings['fsync']}, "
          f"synchronous_commit={settings['synchronous_commit']}; N={args.steps} `wait 0s` steps, "
          f"{args.repeat} alternated runs")  # fmt: skip
    print(
        f"apply, per step (T(N)-T(0))/N: median {med_step * 1000:.3f} ms, "
        f"min {min(per_step) * 1000:.3f} ms ({records_per_step:.1f} journal records per step)"
    )
    print(
        f"bare INSERT; COMMIT of a {size}-byte row: median {med_bare * 1000:.3f} ms, "
        f"min {min(bares) * 1000:.3f} ms"
    )
    print(
        f"the same apply on a state directory, per step: median "
        f"{statistics.median(dirs) * 1000:.3f} ms, min {min(dirs) * 1000:.3f} ms"
    )
    print(
        f"apply per step / bare: {med_step / med_bare:.2f}x; "
        f"apply per step - bare: {(med_step - med_bare) * 1000:.3f} ms"
    )


if __name__ == "__main__":
    main()
