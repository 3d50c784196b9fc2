"""Benchmark of cohorts at scale (issue 11, SPEC §7 "Scale"), next to the floors in the same run.

    .venv/bin/python bench/bench_cohort.py [--entities 1000000] [--repeat 3]

Figures (medians of --repeat runs; whole processes timed with ``time.perf_counter`` around
``/usr/bin/time -v``, peak RSS from it):

- freeze: ``runbook cohort freeze`` of N entities (the source query read once, exclusions in
  the source database, the draw, the ledger written in one transaction), beside the floor: a
  bare ``ATTACH`` + ``INSERT INTO entity SELECT …`` of the same rows into an empty ledger table
  with the same indexes (what SQLite itself needs to write them). Goal ≤ 10 s for 1M.
- mark: the marks of one wave of 20 % of N (``ledger.apply_mark``: a transition row per member
  and the state update, set-wise), in-process on the frozen ledger, beside a bare ``UPDATE`` of
  the same rows. Goal ≤ 2 s for 200,000 members.
- customers: ``runbook customers FILE`` (counts by wave × state) on the frozen ledger, whole
  process, beside the start-up of ``runbook --version``. Goal ≤ 1 s for 1M.
- copy: the copy step of a wave of 20 % of N by ``cohort:`` against the same number of rows
  copied by ``where`` (the step's own duration, from the journal), both SQLite -> SQLite. Goal
  ≤ 1.5x.
- wave start: what starting a wave costs (reading the source again for late and vanished
  entities), from the journal.

Everything it writes goes under ``bench/out/cohort/`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "cohort"
RUNBOOK = ROOT / ".venv" / "bin" / "runbook"

COHORT = """\
cohorts:
  customers:
    source: {{dsn: "sqlite:///{legacy}", query: "SELECT id, email, locale, segment FROM customers WHERE active = 1"}}
    key: id
    attributes: [email, locale, segment]
    exclude: [{{reason: no-contact, where: "email IS NULL"}}]
    stratify_by: [segment, locale]
    waves: [{{id: pilot, size: 20%}}, {{id: rest, size: rest}}]
    seed: 7
"""


def runbook_text(name: str, legacy: Path, target: Path, by_cohort: bool) -> str:
    head = f"apiVersion: runbook/v1\nkind: Runbook\nmetadata: {{name: {name}}}\n"
    copy = f'source: "sqlite:///{legacy}", target: "sqlite:///{target}", table: customers, key: id'
    if by_cohort:
        return (
            head
            + COHORT.format(legacy=legacy)
            + "phases:\n  - id: move\n    waves: {cohort: customers}\n    steps:\n"
            + "      - {id: copy, action: sql.copy, marks: moved, rollback: none,\n"
            + f"         with: {{{copy}, cohort: customers, batch_size: 20000}}}}\n"
        )
    return (
        head
        + "phases:\n  - id: move\n    steps:\n"
        + "      - {id: copy, action: sql.copy, rollback: none,\n"
        + f'         with: {{{copy}, where: "id % 5 = 0", batch_size: 20000}}}}\n'
    )


def make_source(path: Path, n: int) -> None:
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT, segment TEXT,"
        " active INTEGER, name TEXT, city TEXT)"
    )
    locales, segments = ("pt-BR", "es", "en"), ("retail", "wholesale", "online")
    db.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?, 1, ?, ?)",
        (
            (
                i,
                None if i % 100 == 0 else f"c{i}@example.com",
                locales[i % 3],
                segments[(i * 7) % 3],
                f"Customer {i}",
                "São Paulo",
            )
            for i in range(1, n + 1)
        ),
    )
    db.commit()
    db.close()


def make_target(path: Path) -> None:
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT, segment TEXT,"
        " active INTEGER, name TEXT, city TEXT)"
    )
    db.commit()
    db.close()


def timed(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, peak RSS MB, exit code) of one whole process."""
    t = time.perf_counter()
    p = subprocess.run(
        ["/usr/bin/time", "-v", *argv], cwd=cwd, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t
    rss = 0.0
    for line in p.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[1]) / 1024
    if p.returncode not in (0,):
        sys.stderr.write(p.stdout[-2000:] + p.stderr[-2000:])
    return wall, rss, p.returncode


def floor_insert(source: Path, n_expected: int) -> float:
    """A bare ATTACH + INSERT … SELECT of the same rows into an empty ledger-shaped table."""
    path = OUT / "floor.db"
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(
        "CREATE TABLE entity (cohort TEXT NOT NULL, key NOT NULL, wave TEXT, state TEXT NOT"
        " NULL, reason TEXT, stratum TEXT, rank INTEGER, attrs TEXT, updated_at TEXT NOT NULL,"
        " PRIMARY KEY (cohort, key))"
    )
    db.execute("ATTACH DATABASE ? AS src", (str(source),))
    t = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO entity SELECT 'customers', id, 'pilot', 'pending', NULL,"
        " json_array(segment, locale), id, json_object('email', email, 'locale', locale,"
        " 'segment', segment), '2026-01-01' FROM src.customers"
    )
    db.execute("CREATE INDEX entity_by_wave ON entity (cohort, wave, state)")
    db.execute("COMMIT")
    took = time.perf_counter() - t
    db.close()
    return took


def mark_wave(state_db: Path) -> tuple[float, float, int]:
    """(apply_mark s, bare UPDATE s, members) on a copy of the frozen ledger."""
    sys.path.insert(0, str(ROOT))
    from runbook_engine.state import ledger
    from runbook_engine.state.db import Database, _connect, pragmas

    work = OUT / "mark.db"
    shutil.copy(state_db, work)
    for ext in ("-wal", "-shm"):
        Path(str(state_db) + ext).exists() and shutil.copy(str(state_db) + ext, str(work) + ext)
    db = Database(work, _connect(work))
    pragmas(db)
    (n,) = db.query("SELECT count(*) FROM entity WHERE wave = 'pilot'")[0]
    mark = ledger.Mark("customers", "pilot", "moved", "copy[pilot]", "bench", 1)
    t = time.perf_counter()
    with db.transaction():
        ledger.apply_mark(db, mark, "2026-01-01T00:00:00Z")
    took = time.perf_counter() - t
    t = time.perf_counter()
    with db.transaction():
        db.execute(
            "UPDATE entity SET state = 'verified', updated_at = 'x' WHERE cohort = 'customers'"
            " AND wave = 'pilot' AND state = 'moved'"
        )
    bare = time.perf_counter() - t
    db.close()
    return took, bare, int(n)


def journal(state_db: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)
    try:
        return [json.loads(r) for (r,) in db.execute("SELECT rec FROM journal ORDER BY seq")]
    finally:
        db.close()


def seconds(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def step_took(recs: list[dict[str, Any]], step: str) -> float:
    start = next(r["at"] for r in recs if r.get("id") == step and r.get("status") == "running")
    end = next(r["at"] for r in recs if r.get("id") == step and r.get("status") == "succeeded")
    return seconds(end) - seconds(start)


def wave_start(recs: list[dict[str, Any]]) -> float:
    """From the apply's run record to the wave's `started` record: the draw was frozen by an
    earlier command, so this is the start of the wave (the source read again for late and
    vanished entities, the wave's attributes refreshed)."""
    begun = next(r["at"] for r in recs if r.get("t") == "run" and r.get("status") == "running")
    started = next(r["at"] for r in recs if r.get("t") == "wave")
    return seconds(started) - seconds(begun)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    n = args.entities
    legacy = OUT / "legacy.db"
    make_source(legacy, n)
    res: dict[str, list[float]] = {}

    def add(k: str, v: float) -> None:
        res.setdefault(k, []).append(v)

    for i in range(args.repeat):
        work = OUT / f"run{i}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / "c.yaml").write_text(runbook_text("c", legacy, work / "new-c.db", True))
        (work / "w.yaml").write_text(runbook_text("w", legacy, work / "new-w.db", False))
        make_target(work / "new-c.db")
        make_target(work / "new-w.db")
        add("floor_insert", floor_insert(legacy, n))
        wall, rss, code = timed(
            [str(RUNBOOK), "--state-dir", "st", "cohort", "freeze", "c.yaml"], work
        )
        assert code == 0
        add("freeze", wall)
        add("freeze_rss", rss)
        took, bare, members = mark_wave(work / "st" / "c" / "state.db")
        add("mark", took)
        add("mark_bare", bare)
        res["members"] = [members]
        wall, _, code = timed([str(RUNBOOK), "--state-dir", "st", "customers", "c.yaml"], work)
        add("customers", wall)
        wall, _, _ = timed([str(RUNBOOK), "--version"], work)
        add("startup", wall)
        wall, _, code = timed([str(RUNBOOK), "--state-dir", "st", "apply", "--yes", "c.yaml"], work)
        assert code == 0
        recs = journal(work / "st" / "c" / "state.db")
        add("copy_cohort", step_took(recs, "copy[pilot]"))
        add("wave_start", wave_start(recs))
        wall, _, code = timed([str(RUNBOOK), "--state-dir", "st", "apply", "--yes", "w.yaml"], work)
        assert code == 0
        add("copy_where", step_took(journal(work / "st" / "w" / "state.db"), "copy"))
    out = {k: median(v) for k, v in res.items()}
    out["entities"] = n
    out["load"] = os.getloadavg()[0]
    out["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(json.dumps(out, indent=2))
    (OUT / "results.json").write_text(json.dumps({"medians": out, "runs": res}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
