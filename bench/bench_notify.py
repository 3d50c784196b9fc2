"""Benchmark of ``notify`` over SMTP next to the limits it sits on, measured in one run.

    .venv/bin/python bench/bench_notify.py [--smtp 2000] [--repeat 3]

``--smtp`` recipients (three locales) through ``NotifyAction.run`` to a local aiosmtpd on one
reused connection, next to a bare ``smtplib`` loop sending the same number of ready-made
messages on one connection to the same server, and the same loop with one fsynced line per
message (what any send recorded durably before it is made costs at least).  The server runs in
a process of its own (this script with ``--serve``), started and stopped by PID, and counts
what it received.

The action keeps its per-recipient records in the outbox table of a real state database (one
transaction per message: the ``sent`` of one and the ``sending`` of the next).  Times are
``time.perf_counter`` around the work only (imports and start-up excluded); each figure is the
median of ``--repeat`` runs, the action and its limits back to back in alternating order.
The ``outbox`` channel (a table since issue 13) has its own benchmark: ``bench_outbox.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: bench-notify}
phases:
  - id: only
    steps:
      - {id: tell, action: wait, with: {duration: 0s}}
"""
TEMPLATES = {
    "pt-BR": {
        "subject": "Migração da sua conta",
        "body": "Olá {{ recipient.name }}, sua conta "
        "{{ recipient.account }} migra em {{ vars.date }}.",
    },
    "es": {
        "subject": "Migración de su cuenta",
        "body": "Hola {{ recipient.name }}, su cuenta "
        "{{ recipient.account }} migra el {{ vars.date }}.",
    },
    "en": {
        "subject": "Your account migration",
        "body": "Hello {{ recipient.name }}, account "
        "{{ recipient.account }} moves on {{ vars.date }}.",
    },
}
LOCALES = ["pt-BR", "es-MX", "en"]


class Records:
    """Per-recipient records of an earlier version (none here)."""

    def get(self, key: str) -> str | None:
        return None

    def items(self) -> Mapping[str, str]:
        return {}

    def put(self, items: Mapping[str, str]) -> None:
        raise AssertionError("records are kept in the outbox table")


class NoMask:
    def mask(self, text: str) -> str:
        return text


def recipients(n: int) -> list[dict[str, Any]]:
    return [
        {
            "address": f"customer{i}@example.com",
            "name": f"Customer {i}",
            "locale": LOCALES[i % 3],
            "vars": {"account": f"AC-{i:07d}"},
        }
        for i in range(n)
    ]


class Counted:
    """The step's outbox (a real state database), counting its transactions."""

    def __init__(self, work: Path) -> None:
        from runbook_engine.masking import Masker
        from runbook_engine.state.store import Store

        self.store = Store(work / "state", "bench-notify", Masker())
        self.port = self.store.outbox_for("bench", "tell", "1")
        self.writes = 0
        self.run, self.step, self.attempt = self.port.run, self.port.step, self.port.attempt

    def states(self) -> dict[str, str]:
        return self.port.states()

    def rows(self) -> Any:
        return self.port.rows()

    def counts(self) -> dict[str, int]:
        return self.port.counts()

    def write(self, *args: Any, **kw: Any) -> int:
        self.writes += 1
        return self.port.write(*args, **kw)


def context(work: Path, outbox: Counted) -> Any:
    from runbook_engine.actions import ActionContext
    from runbook_engine.format.loader import load_text

    state = work / "state"
    state.mkdir(exist_ok=True)
    return ActionContext(
        step_id="tell",
        run_id="bench",
        attempt=1,
        timeout=3600.0,
        runbook=load_text(RUNBOOK, "bench.yaml").runbook,
        state_dir=state,
        masker=NoMask(),
        records=Records(),
        emit=lambda _kind, _data: None,
        template_context={"vars": {"date": "2026-12-01"}},
        outbox=outbox,  # type: ignore[arg-type]
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def notify_smtp(n: int, port: int, work: Path) -> tuple[float, int]:
    from runbook_engine.plugins.notify.action import NotifyAction

    outbox = Counted(work)
    params = {
        "channel": "email",
        "to": recipients(n),
        "templates": TEMPLATES,
        "smtp": {"host": "127.0.0.1", "port": port},
        "from": "ops@example.org",
    }
    ctx = context(work, outbox)
    seconds, out = timed(lambda: NotifyAction().run(params, ctx))
    assert out["sent"] == n, out
    outbox.store.close()
    return seconds, outbox.writes


def bare_smtp(n: int, port: int, log: Path | None = None) -> float:
    """smtplib on one connection; with ``log``, one fsynced line per message first (the floor
    of a send recorded durably before it is made)."""
    from email.message import EmailMessage

    messages = []
    for i in range(n):
        em = EmailMessage()
        em["From"], em["To"], em["Subject"] = "ops@example.org", f"c{i}@example.com", "Subject"
        em.set_content(f"Hello Customer {i}, account AC-{i:07d} moves on 2026-12-01.")
        messages.append((f"c{i}@example.com", em.as_bytes()))

    def loop() -> None:
        conn = smtplib.SMTP("127.0.0.1", port, timeout=60)
        conn.ehlo()
        with open(log or os.devnull, "ab") as f:
            for to, data in messages:
                if log is not None:
                    f.write(to.encode() + b"\n")
                    f.flush()
                    os.fsync(f.fileno())
                conn.sendmail("ops@example.org", [to], data)
        conn.quit()

    seconds, _ = timed(loop)
    return seconds


# the SMTP server process --------------------------------------------------------------------


def serve(port: int) -> None:
    """``--serve PORT``: aiosmtpd counting messages; prints the count on SIGTERM."""
    from aiosmtpd.controller import Controller

    class Counter:
        received = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Counter.received += 1
            return "250 OK"

    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)

    def stop(_sig: int, _frame: Any) -> None:
        controller.stop()
        print(Counter.received, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        signal.pause()


def start_server() -> tuple[subprocess.Popen[str], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, port


def stop_server(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return int(out.strip().splitlines()[-1])


def machine() -> str:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"nproc {os.cpu_count()}, {platform.machine()}, {model}, "
        f"Python {platform.python_version()}, load average {loadavg()}"
    )


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smtp", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    keys = ("smtp", "bare_smtp", "durable_smtp")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    puts: dict[str, int] = {}
    base = Path(tempfile.mkdtemp(prefix="bench-notify-", dir=os.environ.get("BENCH_DIR")))
    proc, port = start_server()
    try:
        for r in range(args.repeat):
            work = base / f"smtp-{r}"
            work.mkdir()
            order = ("smtp", "bare_smtp", "durable_smtp")
            for key in order if r % 2 == 0 else tuple(reversed(order)):
                if key == "smtp":
                    seconds, puts["smtp"] = notify_smtp(args.smtp, port, work)
                    rows["smtp"].append(seconds)
                elif key == "bare_smtp":
                    rows["bare_smtp"].append(bare_smtp(args.smtp, port))
                else:
                    rows["durable_smtp"].append(bare_smtp(args.smtp, port, work / "log"))
    finally:
        received = stop_server(proc)
    subprocess.run(["rm", "-rf", str(base)], check=True)
    expected = 3 * args.smtp * args.repeat
    print(f"server received {received} messages (expected {expected})")
    report(args, rows, puts)


def report(args: argparse.Namespace, rows: dict[str, list[float]], puts: dict[str, int]) -> None:
    med = {k: statistics.median(v) for k, v in rows.items()}
    print("| what | messages | median s | messages/s | runs (s) |")
    print("|---|---|---|---|---|")
    labels = {
        "smtp": f"notify email, one connection ({puts['smtp']} outbox transactions)",
        "bare_smtp": "bare smtplib loop, one connection (limit)",
        "durable_smtp": "bare smtplib loop + one fsynced line per message",
    }
    for key, label in labels.items():
        runs = ", ".join(f"{s:.2f}" for s in rows[key])
        n = args.smtp
        print(f"| {label} | {n} | {med[key]:.2f} | {n / med[key]:,.0f} | {runs} |")
    mails = [b / a for a, b in zip(rows["smtp"], rows["bare_smtp"], strict=True)]
    durable = [b / a for a, b in zip(rows["smtp"], rows["durable_smtp"], strict=True)]
    print(f"load average at the end: {loadavg()}")
    print(
        "share of the limit, run by run (median): "
        f"email {_pcts(mails)}; email vs the durable loop {_pcts(durable)}"
    )


def _pcts(values: list[float]) -> str:
    runs = ", ".join(f"{v:.0%}" for v in values)
    return f"{runs} ({statistics.median(values):.0%})"


if __name__ == "__main__":
    main()
