"""Benchmark of ``foreach`` (issue 12), next to bare loops doing the same work, in one run.

    .venv/bin/python bench/bench_foreach.py [--members 10000] [--concurrency 16] [--repeat 3]
        [--sqlite-members 2000] [--only http|sqlite]

* http: a step ``action: http`` with ``foreach: {cohort, concurrency}`` and ``marks: moved``
  over a wave of ``--members`` members, POSTing to a local HTTP server (the subscription
  demo's fake provider, ``runbooks/examples/fake_provider.py``, with no rate limit and no
  declines, in a process of its own), with every member's start and result durable in the
  state (the journal's ``members`` records) and an ``Idempotency-Key`` per call. Next to it,
  against the same server, with the same concurrency, the same requests (path, JSON body,
  ``Idempotency-Key``): a bare ``concurrent.futures`` + ``http.client`` loop in a process of
  its own, that opens one connection per request (what ``urllib``, and so the ``http`` action,
  does), and the same loop keeping one connection per thread (keep-alive). The foreach figure
  is the step's own time (from its ``running`` to its ``succeeded`` record, the ledger's marks
  included; start-up, the draw of the cohort and the plan excluded); the bare loops' figure is
  their pool's time. The server's counts are checked after every run: one call per
  idempotency key, none without one.
* sqlite: ``foreach`` of ``sql.exec`` (one ``UPDATE`` with a bound parameter per member) on a
  SQLite file in WAL mode, at concurrency 1 and 4, next to a bare loop that does what one
  member's ``sql.exec`` does (connect, one transaction, close), a bare loop on one connection
  with one transaction per member, the set-wise statement (``sql.exec`` with ``cohort:``: one
  ``UPDATE … WHERE id IN (members)``), and one append + fsync on the same filesystem.

Runs alternate (ABBA...) so that a change of the machine's load hits every figure alike; the
share of the bare loop is computed run by run, and the medians are reported. Everything is
written under ``bench/out/foreach/`` (gitignored).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "foreach"
RUNBOOK = ROOT / ".venv" / "bin" / "runbook"
PROVIDER = ROOT / "runbooks" / "examples" / "fake_provider.py"
PATH = "/v1/customers/{}/payment-method"
BARE = ("new", "urllib", "keepalive")  # the bare loops' modes

HTTP_RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {{name: bench-foreach}}
vars: {{provider: "http://127.0.0.1:{port}"}}
cohorts:
  customers:
    source: {{dsn: "sqlite:///{source}", query: "SELECT id, email, locale FROM customers"}}
    key: id
    attributes: [email, locale]
    waves: [{{id: all, size: rest}}]
phases:
  - id: move
    waves: {{cohort: customers}}
    steps:
      - id: move-payment-method
        action: http
        marks: moved
        foreach: {{cohort: customers, concurrency: {concurrency}}}
        retries: {{attempts: 1}}
        rollback: none
        with:
          method: POST
          url: "{{{{ vars.provider }}}}/v1/customers/{{{{ member.key }}}}/payment-method"
          json: {{customer: "{{{{ member.key }}}}", locale: "{{{{ member.locale }}}}"}}
"""
SQL_RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {{name: bench-foreach-sql}}
cohorts:
  customers:
    source: {{dsn: "sqlite:///{source}", query: "SELECT id, email, locale FROM customers"}}
    key: id
    attributes: [email, locale]
    waves: [{{id: all, size: rest}}]
phases:
  - id: move
    waves: {{cohort: customers}}
    steps:
      - id: switch-plan
        action: sql.exec
        marks: moved
        foreach: {{cohort: customers, concurrency: {concurrency}}}
        retries: {{attempts: 1}}
        rollback: none
        with:
          dsn: "sqlite:///{target}"
          sql: "UPDATE accounts SET plan = 'new', moved_at = CURRENT_TIMESTAMP WHERE id = :id"
          params: {{id: "{{{{ member.key }}}}"}}
"""


# -- the bare loops (run in a process of their own: `--bare MODE PORT N C TAG`) ---------------


def bare_http(mode: str, port: int, n: int, concurrency: int, tag: str) -> float:
    local = threading.local()

    def one(i: int) -> None:
        body = json.dumps({"customer": str(i), "locale": "pt-BR"}).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": f"bare-{tag}/{i}",
            "User-Agent": "bench",
        }
        if mode == "urllib":  # what the http action sends with: urllib, one opener reused
            opener = getattr(local, "opener", None)
            if opener is None:
                opener = local.opener = urllib.request.build_opener()
            url = f"http://127.0.0.1:{port}{PATH.format(i)}"
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with opener.open(request, timeout=30) as got:
                got.read()
                if got.status not in (200, 201):
                    raise RuntimeError(f"status {got.status}")
            return
        if mode == "keepalive":
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", PATH.format(i), body, headers)
        reply = conn.getresponse()
        reply.read()
        if mode != "keepalive":
            conn.close()
        if reply.status not in (200, 201):
            raise RuntimeError(f"status {reply.status}")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(1, n + 1)))
    return time.perf_counter() - start


def bare_sqlite(mode: str, target: str, n: int) -> float:
    sql = "UPDATE accounts SET plan = 'bare', moved_at = CURRENT_TIMESTAMP WHERE id = :id"
    start = time.perf_counter()
    if mode == "connect":  # what one member's sql.exec does: connect, one transaction, close
        for i in range(1, n + 1):
            con = sqlite3.connect(target, isolation_level=None, timeout=30)
            con.execute("BEGIN")
            con.execute(sql, {"id": i})
            con.execute("COMMIT")
            con.close()
    elif mode == "reuse":  # one connection, one transaction per member
        con = sqlite3.connect(target, isolation_level=None, timeout=30)
        for i in range(1, n + 1):
            con.execute("BEGIN")
            con.execute(sql, {"id": i})
            con.execute("COMMIT")
        con.close()
    else:  # set-wise: every member in one statement (sql.exec with `cohort:`)
        con = sqlite3.connect(target, isolation_level=None, timeout=30)
        con.execute("BEGIN")
        con.execute(
            "UPDATE accounts SET plan = 'bare', moved_at = CURRENT_TIMESTAMP "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(range(1, n + 1))),),
        )
        con.execute("COMMIT")
        con.close()
    return time.perf_counter() - start


def children_cpu() -> float:
    """CPU seconds (user + system) of the child processes waited for so far."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run_bare(*args: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--bare", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return float(out.stdout.strip())


# -- fixtures ------------------------------------------------------------------------------------


def source_db(path: Path, n: int) -> None:
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, locale TEXT)")
        con.executemany(
            "INSERT INTO customers VALUES (?, ?, 'pt-BR')",
            ((i, f"c{i}@example.com") for i in range(1, n + 1)),
        )
    con.close()


def target_db(path: Path, n: int) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode = WAL")
    with con:
        con.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, plan TEXT, moved_at TEXT)")
        con.executemany("INSERT INTO accounts VALUES (?, 'old', NULL)", ((i,) for i in range(1, n + 1)))  # fmt: skip
    con.close()


class Server:
    """The fake provider in a process of its own, stopped by its PID."""

    def __init__(self, work: Path) -> None:
        port_file = work / "provider.port"
        port_file.unlink(missing_ok=True)
        self.log = (work / "provider.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(PROVIDER), "--rate", "0", "--fail-once-every", "0",
             "--port-file", str(port_file)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(100):
            if port_file.exists():
                break
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def stats(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/stats")
        data: dict[str, Any] = json.loads(conn.getresponse().read())
        conn.close()
        return data

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.log.close()


def step_seconds(state: Path, runbook: Path) -> tuple[float, dict[str, Any]]:
    """The foreach step's own time, from its records (running -> succeeded), and outputs."""
    out = subprocess.run(
        [str(RUNBOOK), "--state-dir", str(state), "status", str(runbook), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (step,) = json.loads(out.stdout)["steps"]
    assert step["status"] == "succeeded", step

    def at(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    return at(step["finished_at"]) - at(step["started_at"]), step["outputs"]


def engine_run(work: Path, runbook: Path, tag: str) -> tuple[float, float, dict[str, Any]]:
    """(step seconds, whole process seconds, outputs) of one apply on a fresh state."""
    state = work / f"state-{tag}"
    shutil.rmtree(state, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [str(RUNBOOK), "--state-dir", str(state), "apply", "--yes", str(runbook)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=1800,
    )
    whole = time.perf_counter() - start
    seconds, outputs = step_seconds(state, runbook)
    shutil.rmtree(state, ignore_errors=True)
    return seconds, whole, outputs


def fsync_ms(folder: Path, n: int = 200) -> float:
    path = folder / "fsync.bin"
    with path.open("ab") as f:
        start = time.perf_counter()
        for _ in range(n):
            f.write(b"x" * 300)
            f.flush()
            os.fsync(f.fileno())
        took = time.perf_counter() - start
    path.unlink()
    return took / n * 1000


# -- the benchmarks ------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def bench_http(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, c = args.members, args.concurrency
    source_db(work / "source.db", n)
    server = Server(work)
    try:
        runbook = work / "fe-http.yaml"
        runbook.write_text(
            HTTP_RUNBOOK.format(port=server.port, source=work / "source.db", concurrency=c)
        )
        rows: dict[str, list[float]] = {k: [] for k in ("foreach", "whole", *BARE)}
        shares: dict[str, list[float]] = {k: [] for k in BARE}
        cpu: dict[str, list[float]] = {k: [] for k in ("foreach", *BARE)}
        for r in range(args.repeat):
            order = ["foreach", *BARE]
            if r % 2:
                order.reverse()
            seen: dict[str, float] = {}
            for what in order:
                before = server.stats()
                cpu_before = children_cpu()
                if what == "foreach":
                    seconds, whole, outputs = engine_run(work, runbook, f"http{r}")
                    assert outputs["done"] == n and outputs["failed"] == 0, outputs
                    rows["whole"].append(whole)
                else:
                    seconds = run_bare(what, str(server.port), str(n), str(c), f"{what}{r}")
                cpu[what].append((children_cpu() - cpu_before) / n * 1000)
                after = server.stats()
                new_keys = {k: v for k, v in after["calls"].items() if k not in before["calls"]}
                assert len(new_keys) == n and set(new_keys.values()) == {1}, what
                assert after["unkeyed"] == before["unkeyed"], what
                rows[what].append(seconds)
                seen[what] = seconds
                print(f"  http run {r + 1}: {what:<9} {seconds:7.3f} s  {n / seconds:7.0f}/s", flush=True)  # fmt: skip
            for bare in BARE:
                shares[bare].append(seen[bare] / seen["foreach"])
    finally:
        server.stop()
    return {"rows": rows, "shares": shares, "cpu": cpu, "n": n, "c": c}


def bench_sqlite(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n = args.sqlite_members
    source_db(work / "source-sql.db", n)
    target = work / "target.db"
    rows: dict[str, list[float]] = {}
    for r in range(args.repeat):
        order = ["foreach-1", "foreach-4", "connect", "reuse", "setwise"]
        if r % 2:
            order.reverse()
        for what in order:
            target_db(target, n)
            if what.startswith("foreach"):
                c = int(what.split("-")[1])
                runbook = work / f"fe-sql-{c}.yaml"
                runbook.write_text(
                    SQL_RUNBOOK.format(source=work / "source-sql.db", target=target, concurrency=c)
                )
                seconds, _whole, outputs = engine_run(work, runbook, f"sql{r}{c}")
                assert outputs["done"] == n and outputs["failed"] == 0, outputs
            else:
                seconds = run_bare(f"sqlite-{what}", str(target), str(n))
            con = sqlite3.connect(target)
            moved = con.execute("SELECT count(*) FROM accounts WHERE plan <> 'old'").fetchone()[0]
            con.close()
            assert moved == n, (what, moved)
            rows.setdefault(what, []).append(seconds)
            print(f"  sqlite run {r + 1}: {what:<9} {seconds:7.3f} s  {n / seconds:8.0f}/s", flush=True)  # fmt: skip
    return {"rows": rows, "n": n, "fsync_ms": fsync_ms(work)}


def report(http_: dict[str, Any] | None, sql: dict[str, Any] | None, argv: list[str]) -> None:
    print()
    print(f"machine: {platform.node()}, nproc {os.cpu_count()}, {platform.machine()}, "
          f"{_cpu()}, Python {platform.python_version()}; load average {_load()}")  # fmt: skip
    print(f"command: .venv/bin/python bench/bench_foreach.py {' '.join(argv)}".rstrip())
    if http_ is not None:
        n, rows = http_["n"], http_["rows"]
        print(f"\nhttp: {n:,} members, concurrency {http_['c']}, median of {len(rows['foreach'])}")
        print("| what | median s | per second | CPU ms per member | runs (s) |")
        print("|---|---|---|---|---|")
        names = {
            "foreach": "foreach http (step time, durable member records)",
            "new": "bare http.client loop, one connection per request",
            "urllib": "bare urllib loop, one connection per request (as the action sends)",
            "keepalive": "bare http.client loop, one connection per thread (keep-alive)",
            "whole": "foreach http: the whole `runbook apply` process",
        }
        for key, label in names.items():
            runs = rows[key]
            spent = http_["cpu"].get(key)
            ms = f"{med(spent):.2f}" if spent else "(as above)"
            print(f"| {label} | {med(runs):.3f} | {n / med(runs):,.0f} | {ms} | "
                  f"{', '.join(f'{x:.2f}' for x in runs)} |")  # fmt: skip
        for bare, shares in http_["shares"].items():
            print(f"foreach / bare {bare}: run by run {', '.join(f'{s:.0%}' for s in shares)}; "
                  f"median {med(shares):.0%}")  # fmt: skip
    if sql is not None:
        n, rows = sql["n"], sql["rows"]
        print(f"\nsqlite: {n:,} members, WAL, one UPDATE per member; fsync {sql['fsync_ms']:.2f} ms")  # fmt: skip
        print("| what | median s | per second | runs (s) |")
        print("|---|---|---|---|")
        names = {
            "foreach-1": "foreach sql.exec, concurrency 1",
            "foreach-4": "foreach sql.exec, concurrency 4",
            "connect": "bare: connect, one transaction, close, per member",
            "reuse": "bare: one connection, one transaction per member",
            "setwise": "set-wise: one UPDATE for all members",
        }
        for key, label in names.items():
            runs = rows[key]
            print(f"| {label} | {med(runs):.3f} | {n / med(runs):,.0f} | "
                  f"{', '.join(f'{x:.3f}' for x in runs)} |")  # fmt: skip


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--bare"]:
        mode = argv[1]
        if mode.startswith("sqlite-"):
            print(bare_sqlite(mode.split("-", 1)[1], argv[2], int(argv[3])))
        else:
            print(bare_http(mode, int(argv[2]), int(argv[3]), int(argv[4]), argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sqlite-members", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("http", "sqlite"))
    args = parser.parse_args(argv)
    if not RUNBOOK.exists():
        print(f"{RUNBOOK} is missing: run `make install-dev` first", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"start: load average {_load()}", flush=True)
    run: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
        "http": bench_http,
        "sqlite": bench_sqlite,
    }
    got = {name: fn(args, OUT) for name, fn in run.items() if args.only in (None, name)}
    report(got.get("http"), got.get("sqlite"), argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
