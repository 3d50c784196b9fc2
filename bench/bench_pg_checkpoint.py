"""Per-step checkpoint cost of ``apply`` on the PostgreSQL state backend (issue 14), beside bare
psycopg loops of ``INSERT; COMMIT`` of same-sized rows and the directory backend, in one run.

    .venv/bin/python bench/bench_pg_checkpoint.py [--steps 300] [--repeat 5]

A throw-away PostgreSQL 15 cluster is started on 127.0.0.1 (``tests/servers/postgres.py``)
with the server's defaults for durability: ``fsync=on``, ``synchronous_commit=on``. Runs
alternate (every figure once, then again) so that a change of the machine's load hits each
alike; the median and the minimum of each are printed, with the load average before and after.

- **(c) apply**: a WHOLE PROCESS, ``runbook apply FILE --yes`` with ``RUNBOOK_STATE=URL``, on a
  fresh database (``state init`` first) per run. Every runbook starts with a phase ``base`` of
  ONE ``wait 0s`` step; the N measured ``wait 0s`` steps come after it. T(0) is the runbook
  with only that phase, so per step = (T(N) - T(0)) / N, start-up and the lease excluded. It
  includes the engine's own work per step (scheduling, records, output), not only the
  checkpoint.
- **(c') checkpoint alone**: in one process, what the state does per step of that apply,
  under a real lease: read the records other processes appended (``Store.refresh``, at most
  every ``DECISIONS_EVERY`` seconds, as a busy apply reads them), stage the
  step's ``running`` record, write it (``Store.flush``), stage its ``succeeded`` record (written
  with the next step's ``running``, as the engine groups them).
- **(a) bare**: one connection, N times ``BEGIN; INSERT`` of one row as large as the engine's
  average journal record into a table shaped like ``runbook.journal``, ``COMMIT``. **(a1)**: the
  same INSERT as one autocommit statement (one round trip, one commit). **(b)**: two such
  transactions per step (a ``running`` and a ``succeeded`` row), the two durable transitions of
  a step that stands alone.
- (c'), (a), (a1) and (b) run in one process on one database, alternating every 10 steps, so
  that a swing of the machine's load hits each alike; their ratios are the steadiest figures.
- **(d)** the same runbooks applied on a fresh state directory, and the local floor beside it:
  append 300 bytes to a file and ``fsync``, in the same temporary file system.

Before the timed runs one apply of each runbook runs on a database that logs every statement
(``log_statement = 'all'``): statements (round trips) and journal transactions (commits, by the
rows' ``xmin``) per step are counted from it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNBOOK = str(Path(sys.executable).with_name("runbook"))
DIGEST = "sha256:" + "5" * 64
RUN = "20261202T120000Z-b288"


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


def _apply(server: Any, file: Path, env_extra: dict[str, str] | None = None) -> tuple[str, float]:
    """(database, wall seconds) of one apply on a fresh database; the caller drops it."""
    name = server.create_database()
    url = server.dsn(name)
    env = {**os.environ, "RUNBOOK_STATE": url, **(env_extra or {})}
    subprocess.run([RUNBOOK, "state", "init", url], check=True, capture_output=True, env=env)
    return name, _run_apply(env, file)


def _run_apply(env: dict[str, str], file: Path, *pre: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [RUNBOOK, *pre, "apply", str(file), "--yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=file.parent,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"apply failed: {done.stderr}")
    return wall


def _journal_stats(url: str) -> tuple[int, float, int]:
    """(records, mean stored length, transactions that wrote them) of the journal."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), avg(length(rec)), count(DISTINCT xmin::text) FROM runbook.journal"
        ).fetchone()
        assert row is not None
    return int(row[0]), float(row[1] or 0), int(row[2])


def timed_apply(server: Any, file: Path) -> tuple[float, int, float]:
    """(wall seconds, journal records, mean record length) of one apply on a fresh database."""
    name, wall = _apply(server, file)
    try:
        records, mean, _ = _journal_stats(server.dsn(name))
        return wall, records, mean
    finally:
        server.drop_database(name)


def counted_apply(server: Any, file: Path) -> tuple[int, int, int]:
    """(statements the server ran for the apply, journal records, journal transactions), from
    the server's own statement log; not timed."""
    import psycopg

    name = server.create_database()
    url = server.dsn(name)
    try:
        env = {**os.environ, "RUNBOOK_STATE": url}
        subprocess.run([RUNBOOK, "state", "init", url], check=True, capture_output=True, env=env)
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{name}\" SET log_statement = 'all'")
        log = server.root / "server.log"
        start = log.stat().st_size
        _run_apply(env, file)
        time.sleep(0.3)  # the logger writes behind
        with log.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
        statements = len(re.findall(r"LOG:  (?:statement|execute [^:]*): ", text))
        records, _, transactions = _journal_stats(url)
        return statements, records, transactions
    finally:
        server.drop_database(name)


def timed_apply_dir(file: Path) -> float:
    """Wall seconds of one apply on a fresh state directory."""
    state = Path(tempfile.mkdtemp(prefix="bench-pg-dir-"))
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_STATE"}
    return _run_apply(env, file, "--state", str(state / "s"))


def interleaved(
    server: Any, n: int, size: int, sizes: list[int], block: int = 10
) -> dict[str, float]:
    """Seconds per step of (c') the checkpoint alone and the bare loops (a), (a1), (b), in one
    process on one database, alternating every ``block`` steps so that a swing of the
    machine's load (other processes' fsyncs) hits each alike."""
    import psycopg

    from runbook_engine.masking import Masker
    from runbook_engine.run.scheduler import DECISIONS_EVERY
    from runbook_engine.state import backend, pg

    name = server.create_database()
    url = server.dsn(name)
    try:
        pg.init(url)
        with (
            backend.leased(url, "bench-pg", Masker()) as (store, _),
            psycopg.connect(url, autocommit=True) as conn,
        ):
            conn.execute(
                "CREATE TABLE bare (runbook TEXT NOT NULL, seq BIGINT NOT NULL, at TEXT NOT "
                "NULL, kind TEXT NOT NULL, rec TEXT NOT NULL, hash TEXT, PRIMARY KEY (runbook, seq))"
            )
            store.stage({"t": "step", "id": "b0", "status": "pending"})
            store.flush()
            sql = "INSERT INTO bare VALUES (%s, %s, %s, %s, %s, %s)"
            seq = 0
            step_no = 0

            def rows(lengths: list[int]) -> None:
                nonlocal seq
                for length in lengths:
                    seq += 1
                    with conn.transaction():
                        conn.execute(sql, ("b", seq, "2026-12-02T00:00:00.000Z", "step",
                                           "x" * length, "0" * 64))  # fmt: skip

            def one_statement() -> None:
                nonlocal seq
                seq += 1
                conn.execute(sql, ("b", seq, "2026-12-02T00:00:00.000Z", "step", "x" * size,
                                   "0" * 64))  # fmt: skip

            last_read = float("-inf")

            def checkpoint() -> None:
                nonlocal step_no, last_read
                step = {"t": "step", "id": f"s{step_no:05d}", "attempt": 1, "digest": DIGEST}
                step_no += 1
                if time.monotonic() - last_read >= DECISIONS_EVERY:  # as a busy apply reads
                    last_read = time.monotonic()
                    store.refresh()
                store.stage({**step, "status": "running", "run": RUN})
                store.flush()
                store.stage({**step, "status": "succeeded", "outputs": {}, "run": RUN})

            kinds: dict[str, Callable[[], None]] = {
                "c1": checkpoint,
                "a": lambda: rows([size]),
                "a1": one_statement,
                "b": lambda: rows(sizes),
            }
            spent = dict.fromkeys(kinds, 0.0)
            for _ in range(max(1, n // block)):
                for kind, fn in kinds.items():
                    t0 = time.perf_counter()
                    for _ in range(block):
                        fn()
                    spent[kind] += time.perf_counter() - t0
            store.flush()
        steps = max(1, n // block) * block
        return {k: v / steps for k, v in spent.items()}
    finally:
        server.drop_database(name)


def fsync_floor(n: int) -> float:
    """Seconds per append of 300 bytes + fsync to a file in the temporary file system."""
    folder = Path(tempfile.mkdtemp(prefix="bench-pg-fsync-"))
    fd = os.open(folder / "j", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, b"x" * 299 + b"\n")
            os.fsync(fd)
        return (time.perf_counter() - t0) / n
    finally:
        os.close(fd)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from tests.servers.postgres import cluster

    n = args.steps
    work = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    files = {k: work / f"r{k}.yaml" for k in (0, n)}
    for k, f in files.items():
        f.write_text(runbook(k))
    got: dict[str, list[float]] = {k: [] for k in ("c", "c1", "a", "a1", "b", "d", "fsync")}
    load_before = os.getloadavg()
    with cluster(fsync=True) as server:
        import psycopg

        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            settings = {
                k: conn.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
                for k in ("fsync", "synchronous_commit", "server_version")
            }
        counts = {k: counted_apply(server, files[k]) for k in (0, n)}
        size, sizes = 300, [200, 250]
        for _ in range(args.repeat):
            t_n, _, mean_len = timed_apply(server, files[n])
            t_0, _, _ = timed_apply(server, files[0])
            got["c"].append((t_n - t_0) / n)
            size = int(mean_len) or size
            sizes = [size - 24, size + 24]  # `running` and `succeeded` (outputs, no run-level)
            for k, v in interleaved(server, n, size, sizes).items():
                got[k].append(v)
            got["d"].append((timed_apply_dir(files[n]) - timed_apply_dir(files[0])) / n)
            got["fsync"].append(fsync_floor(n))
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in got.items()}

    def fig(k: str) -> str:
        return f"median {med[k] * 1000:.3f} ms, min {min(got[k]) * 1000:.3f} ms"

    (s_n, r_n, x_n), (s_0, r_0, x_0) = counts[n], counts[0]
    per: Callable[[int, int], float] = lambda a, b: (a - b) / n  # noqa: E731
    print(f"{_cpu()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"PostgreSQL {settings['server_version']}, fsync={settings['fsync']}, "
          f"synchronous_commit={settings['synchronous_commit']}")  # fmt: skip
    print(f"N={n} `wait 0s` steps, {args.repeat} alternated runs; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")  # fmt: skip
    print(f"per step of the apply (counted on one run): {per(r_n, r_0):.2f} journal records, "
          f"{per(x_n, x_0):.2f} journal transactions (commits), {per(s_n, s_0):.2f} statements "
          "(round trips)")  # fmt: skip
    print(f"(c)  apply on PostgreSQL, per step (T(N)-T(0))/N: {fig('c')}")
    print(f"(c') the checkpoint alone, per step (stage, flush; refresh every 0.2 s): {fig('c1')}")
    print(f"(a)  bare BEGIN; INSERT; COMMIT of a {size}-byte row: {fig('a')}")
    print(f"(a1) bare autocommit INSERT of the same row (one round trip): {fig('a1')}")
    print(f"(b)  bare, two commits per step ({sizes[0]} + {sizes[1]} bytes): {fig('b')}")
    print(f"(d)  the same apply on a state directory, per step: {fig('d')}")
    print(f"(d') append 300 bytes + fsync, local file: {fig('fsync')}")
    ratio = statistics.median(c / a for c, a in zip(got["c"], got["a"], strict=True))
    print(f"(c)/(a) per run, median: {ratio:.2f}x; "
          f"(c')/(a) per run, median: "
          f"{statistics.median(c / a for c, a in zip(got['c1'], got['a'], strict=True)):.2f}x")  # fmt: skip
    for ref in ("a", "a1", "b"):
        print(f"(c)/({ref}) {med['c'] / med[ref]:.2f}x, (c')/({ref}) {med['c1'] / med[ref]:.2f}x;"
              f" (c)-({ref}) {(med['c'] - med[ref]) * 1000:+.3f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
