"""Benchmark of ``notify`` into the outbox table (SPEC §10-§11), next to a bare loop, in one run.

    .venv/bin/python bench/bench_outbox.py [--messages 40000] [--repeat 3] [--batch 1000]

1. A legacy SQLite table of N customers (three locales) and a runbook whose cohort is one wave
   of all of them, with one step: ``notify`` ``channel: outbox`` to the cohort, three
   per-locale templates of about 600 bytes, ``marks: notified``. The cohort is frozen first
   (``runbook cohort freeze``, not timed); then ``runbook apply`` runs as a whole process.
2. **notify step**: the step as a whole, from its ``running`` record to its ``succeeded``
   record in the journal (SPEC §11 "Timed spans"): the members read from the ledger,
   rendering, the outbox rows and the ledger's message rows, one transaction per batch of
   ``--batch``, and the marks committed with the step's success. The whole process beside it.
3. **bare loop** (the limit, same run, alternating with the step): public tools only — the
   sqlite3 module and Jinja2 (a sandboxed environment, strict undefined) — reads the same
   customers, renders the same templates, computes the same Message-IDs and inserts the same
   rows into a table of the same schema (the same UNIQUE key), ``--batch`` per transaction,
   in a new SQLite database in WAL mode with ``synchronous=FULL`` (the state's settings).
4. **bare INSERT alone**: the same, with every row made before the clock starts: the storage
   limit (what LIMITS.md measured as 56,000 msg/s on a loaded machine).

Prints a Markdown table (docs/benchmarks/outbox.md) and the raw figures as JSON. Goals:
>= 20,000 messages/s for the step, and >= 50 % of the bare loop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

RUNBOOK = str(Path(sys.executable).with_name("runbook"))
GOAL_RATE = 20_000
GOAL_SHARE = 0.5
LOCALES = ("pt-BR", "es", "en")
FILLER = (
    "Nothing changes for you: your orders, prices and payment terms stay the same. On the day "
    "of the move the portal is closed for about an hour; orders placed by phone are taken as "
    "usual. If anything looks wrong afterwards, answer this message and our team will call "
    "you back within one working day. Your sales representative has the details of the new "
    "portal and can walk you through it; the opening hours of the support line do not change."
)
TEMPLATES = {
    "pt-BR": {
        "subject": "Sua conta {{ recipient.account }} migra em {{ vars.date }}",
        "body": "Olá {{ recipient.name }},\n\nsua conta {{ recipient.account }} passa para a "
        "nova plataforma em {{ vars.date }} ({{ wave.id }}).\n\n" + FILLER + "\n",
    },
    "es": {
        "subject": "Su cuenta {{ recipient.account }} migra el {{ vars.date }}",
        "body": "Hola {{ recipient.name }},\n\nsu cuenta {{ recipient.account }} pasa a la "
        "nueva plataforma el {{ vars.date }} ({{ wave.id }}).\n\n" + FILLER + "\n",
    },
    "en": {
        "subject": "Your account {{ recipient.account }} moves on {{ vars.date }}",
        "body": "Hello {{ recipient.name }},\n\nyour account {{ recipient.account }} moves to "
        "the new platform on {{ vars.date }} ({{ wave.id }}).\n\n" + FILLER + "\n",
    },
}
SCHEMA = (  # the state's outbox table (engine/state/schema.py, version 3)
    "CREATE TABLE outbox (id INTEGER PRIMARY KEY, run TEXT NOT NULL, step TEXT NOT NULL,"
    " attempt TEXT NOT NULL, recipient TEXT NOT NULL, cohort TEXT, entity,"
    " channel TEXT NOT NULL, state TEXT NOT NULL, reason TEXT, message_id TEXT NOT NULL,"
    " sender TEXT NOT NULL, address TEXT NOT NULL, name TEXT NOT NULL, locale TEXT,"
    " subject TEXT NOT NULL, body TEXT NOT NULL, headers TEXT NOT NULL,"
    " queued_at TEXT NOT NULL, updated_at TEXT NOT NULL, claimed_by TEXT,"
    " UNIQUE (run, step, attempt, recipient))"
)


def runbook_text(batch: int) -> str:
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "bench-outbox"},
        "vars": {"legacy_db": "sqlite:///legacy.db", "date": "2026-12-15"},
        "cohorts": {
            "customers": {
                "source": {
                    "dsn": "{{ vars.legacy_db }}",
                    "query": "SELECT id, email, name, locale, account FROM customers",
                },
                "key": "id",
                "attributes": ["email", "name", "locale", "account"],
                "waves": [{"id": "all", "size": "rest"}],
                "seed": 1,
            }
        },
        "phases": [
            {
                "id": "tell",
                "waves": {"cohort": "customers"},
                "steps": [
                    {
                        "id": "announce",
                        "action": "notify",
                        "marks": "notified",
                        "rollback": "none",
                        "timeout": "1h",
                        "with": {
                            "channel": "outbox",
                            "to": {"cohort": "customers"},
                            "from": "Migration team <migration@example.org>",
                            "templates": TEMPLATES,
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(doc, ensure_ascii=False)


def customers(n: int) -> list[tuple[int, str, str, str, str]]:
    return [
        (i, f"customer{i}@example.com", f"Customer {i}", LOCALES[i % 3], f"AC-{i:07d}")
        for i in range(1, n + 1)
    ]


def legacy(path: Path, n: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, name TEXT, locale TEXT,"
            " account TEXT)"
        )
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", customers(n))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNBOOK, *args], cwd=cwd, capture_output=True, text=True, timeout=3600, check=False
    )


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def notify_step(n: int, batch: int, work: Path) -> dict[str, Any]:
    """One apply of the runbook on a frozen cohort: the step's span, the whole process."""
    work.mkdir()
    legacy(work / "legacy.db", n)
    (work / "rb.json").write_text(runbook_text(batch))
    frozen = run("cohort", "freeze", "rb.json", cwd=work)
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    start = time.perf_counter()
    done = run("apply", "rb.json", "--yes", cwd=work)
    whole = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    db = sqlite3.connect(work / ".runbook" / "bench-outbox" / "state.db")
    try:
        recs = [json.loads(r) for (r,) in db.execute("SELECT rec FROM journal ORDER BY seq")]
        queued = db.execute("SELECT count(*) FROM outbox WHERE state = 'queued'").fetchone()[0]
        told = db.execute("SELECT count(*) FROM message WHERE state = 'sent'").fetchone()[0]
        size = db.execute("SELECT avg(length(subject) + length(body)) FROM outbox").fetchone()[0]
        notified = db.execute("SELECT count(*) FROM entity WHERE state = 'notified'").fetchone()
    finally:
        db.close()
    steps = [r for r in recs if r.get("t") == "step" and r.get("id") == "announce[all]"]
    began = next(r["at"] for r in steps if r["status"] == "running")
    ended = next(r for r in steps if r["status"] == "succeeded")
    assert ended["outputs"]["sent"] == n == queued == told == notified[0], (ended, queued, told)
    span = _at(ended["at"]) - _at(began)
    return {"span": span, "whole": whole, "bytes": size}


def bare_loop(n: int, batch: int, work: Path, insert_only: bool = False) -> float:
    """Read, render, Message-ID, insert ``batch`` rows per transaction: the limit. With
    ``insert_only`` the rows are made before the clock starts: the batched INSERT alone."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    work.mkdir()
    legacy(work / "legacy.db", n)
    db = sqlite3.connect(work / "bare.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(SCHEMA)
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    compiled = {
        k: (env.from_string(t["subject"]), env.from_string(t["body"])) for k, t in TEMPLATES.items()
    }
    context = {"vars": {"date": "2026-12-15"}, "wave": {"id": "all"}}
    headers = json.dumps({"X-Runbook": "bench-outbox", "X-Runbook-Step": "announce[all]"})
    sender = "Migration team <migration@example.org>"
    start = time.perf_counter()
    src = sqlite3.connect(work / "legacy.db")
    rows = src.execute("SELECT id, email, name, locale, account FROM customers ORDER BY id")
    people = rows.fetchall()
    src.close()
    made: list[list[tuple[Any, ...]]] = []
    for first in range(0, len(people), batch):
        out: list[tuple[Any, ...]] = []
        made.append(out)
        at = datetime.now().isoformat(timespec="milliseconds")
        for key, email, name, locale, account in people[first : first + batch]:
            subject, body = compiled[locale]
            recipient = {"address": email, "name": name, "locale": locale, "account": account}
            values = {**context, "recipient": recipient}
            recipient_key = f"member:1:{key!r}"
            digest = hashlib.sha256(
                f"bench-outbox\0run\0announce[all]\x001\0{recipient_key}".encode()
            ).hexdigest()[:40]
            out.append(
                (
                    "run", "announce[all]", "1", "customers", "queued", at, at, recipient_key,
                    "outbox", f"<{digest}@bench-outbox.runbook>", sender, email, name, locale,
                    subject.render(values).strip(), body.render(values), headers, key,
                )
            )  # fmt: skip
        if not insert_only:
            insert(db, out)
    if insert_only:
        start = time.perf_counter()
        for out in made:
            insert(db, out)
    seconds = time.perf_counter() - start
    got = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    db.close()
    assert got == n, got
    return seconds


def insert(db: sqlite3.Connection, out: list[tuple[Any, ...]]) -> None:
    """One batch, one transaction."""
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO outbox (run, step, attempt, cohort, state, queued_at, updated_at,"
        " recipient, channel, message_id, sender, address, name, locale, subject, body,"
        " headers, entity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (run, step, attempt, recipient) DO NOTHING",
        out,
    )
    db.execute("COMMIT")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"`nproc` {os.cpu_count()}, {platform.machine()}, {cpu}, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}; load average {load}"
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args(argv)
    n = args.messages
    print(f"machine: {machine()}", flush=True)
    steps: list[dict[str, Any]] = []
    bares: list[float] = []
    inserts: list[float] = []
    kinds = ("step", "bare", "insert")
    with tempfile.TemporaryDirectory(prefix="bench-outbox-", dir=Path.cwd()) as tmp:
        for i in range(args.repeat):  # alternated: the load of a shared machine drifts
            for what in kinds if i % 2 == 0 else tuple(reversed(kinds)):
                work = Path(tmp) / f"{what}-{i}"
                if what == "step":
                    steps.append(notify_step(n, args.batch, work))
                    print(f"  notify step   {steps[-1]['span']:.3f} s", flush=True)
                elif what == "bare":
                    bares.append(bare_loop(n, args.batch, work))
                    print(f"  bare loop     {bares[-1]:.3f} s", flush=True)
                else:
                    inserts.append(bare_loop(n, args.batch, work, insert_only=True))
                    print(f"  INSERT alone  {inserts[-1]:.3f} s", flush=True)
    report(n, args.batch, steps, bares, inserts)
    return 0


def report(
    n: int, batch: int, steps: list[dict[str, Any]], bares: list[float], inserts: list[float]
) -> None:
    span = statistics.median(s["span"] for s in steps)
    whole = statistics.median(s["whole"] for s in steps)
    bare, insert_s = statistics.median(bares), statistics.median(inserts)
    shares = [b / s["span"] for s, b in zip(steps, bares, strict=True)]
    runs = {
        "span": ", ".join(f"{s['span']:.3f}" for s in steps),
        "whole": ", ".join(f"{s['whole']:.3f}" for s in steps),
        "bare": ", ".join(f"{b:.3f}" for b in bares),
        "insert": ", ".join(f"{b:.3f}" for b in inserts),
    }
    print(f"\nmachine: {machine()}\n")
    print("| what | messages | median s | messages/s | runs (s) |")
    print("|---|---|---|---|---|")
    for label, seconds, key in (
        ("notify step (`runbook apply`, its span in the journal)", span, "span"),
        ("the same `runbook apply`, whole process", whole, "whole"),
        (f"bare loop: read, render, insert, {batch:,} per transaction (limit)", bare, "bare"),
        ("bare INSERT alone, rows made before the clock starts", insert_s, "insert"),
    ):
        print(f"| {label} | {n:,} | {seconds:.3f} | {n / seconds:,.0f} | {runs[key]} |")
    share_runs = ", ".join(f"{x:.0%}" for x in shares)
    print(
        f"\nshare of the bare loop, run by run: {share_runs} "
        f"(median {statistics.median(shares):.0%}); message size {steps[0]['bytes']:.0f} "
        "characters (subject + body)"
    )
    ok = n / span >= GOAL_RATE and statistics.median(shares) >= GOAL_SHARE
    verdict = "met" if ok else "NOT met"
    print(f"goals (>= {GOAL_RATE:,} msg/s, >= {GOAL_SHARE:.0%} of the bare loop): {verdict}")
    raw = {"steps": steps, "bare": bares, "insert": inserts, "messages": n, "batch": batch}
    print(json.dumps(raw))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
