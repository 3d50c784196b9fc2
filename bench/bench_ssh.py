"""Benchmark of the ``ssh`` action against a real sshd, next to bare paramiko in the same run.

One ``/usr/sbin/sshd`` listens on 10 loopback endpoints (127.0.0.1..10, aliases h1..h10, the
test fixture of ``tests/servers/sshd.py``).  Measured, each ``--repeat`` times (medians shown):

- limit, one host: a bare paramiko loop of ``exec_command('true')`` on one open connection
  whose socket has TCP_NODELAY (what LIMITS.md calls the floor), ms per command;
- limit, ten hosts: the same loop on 10 connections in 10 threads, ``--commands`` each;
- the action, one host: ``--commands`` steps of ``ssh true`` on h1 (pool warm), ms per step;
- the action, ten hosts: ``--commands`` steps of ``ssh true`` on h1..h10 with ``forks: 10``;
- connection set-up (first step on a cold pool, 10 hosts) and, for scale, bare paramiko
  without TCP_NODELAY.

    .venv/bin/python bench/bench_ssh.py [--commands 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paramiko  # noqa: E402

from runbook_engine.actions import ActionContext, Resources  # noqa: E402
from runbook_engine.format.loader import load_text  # noqa: E402
from runbook_engine.plugins.ssh.action import SshAction  # noqa: E402
from tests.servers.sshd import SshdFactory, SshServer, make_keys, sshd_missing  # noqa: E402

HOSTS = 10


class _NoMask:
    def mask(self, text: str) -> str:
        return text


class _Records:
    def get(self, key: str) -> str | None:
        return None

    def items(self) -> dict[str, str]:
        return {}

    def put(self, items: Any) -> None:
        pass


def _ctx(text: str, resources: Resources, state_dir: Path) -> ActionContext:
    return ActionContext(
        step_id="bench",
        run_id="bench",
        attempt=1,
        timeout=600.0,
        runbook=load_text(text, "bench.yaml").runbook,
        state_dir=state_dir,
        masker=_NoMask(),
        records=_Records(),
        emit=lambda _k, _d: None,
        resources=resources,
    )


def _bare_client(server: SshServer, index: int, nodelay: bool = True) -> paramiko.SSHClient:
    addr, port = server.endpoints[index]
    sock = socket.create_connection((addr, port), timeout=10)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        addr,
        port,
        username=server.keys.user,
        key_filename=str(server.keys.client_key),
        allow_agent=False,
        look_for_keys=False,
        sock=sock,
    )
    return client


def _loop(client: paramiko.SSHClient, n: int) -> None:
    transport = client.get_transport()
    assert transport is not None
    for _ in range(n):
        chan = transport.open_session()
        chan.exec_command("true")
        if chan.recv_exit_status() != 0:
            raise SystemExit("bare paramiko: `true` failed")
        chan.close()


def _timed(fn: Callable[..., None], *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _parallel(clients: list[paramiko.SSHClient], n: int) -> None:
    threads = [threading.Thread(target=_loop, args=(c, n)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _action_steps(ctx: ActionContext, hosts: list[str], n: int) -> None:
    action = SshAction()
    known = str(ctx.state_dir / "known_hosts")
    params = {"command": "true", "hosts": hosts, "forks": HOSTS, "known_hosts": known}
    for _ in range(n):
        out = action.run(params, ctx)
        if out["ok_count"] != len(hosts):
            raise SystemExit(f"ssh action failed: {out['failed']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, reps = args.commands, args.repeat
    missing = sshd_missing()
    if missing:
        raise SystemExit(f"needs {missing}")
    root = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    factory = SshdFactory(make_keys(root))
    try:
        server = factory(HOSTS)
        known = root / "known_hosts"
        known.write_text(server.known_hosts_text())
        text = (
            "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: bench}\n"
            + server.inventory()
            + "phases:\n  - id: p\n    steps:\n      - {id: s, action: wait, with: {duration: 0s}}\n"
        )
        aliases = server.aliases
        rows: dict[str, list[float]] = {k: [] for k in ("bare1", "bare10", "act1", "act10", "cold")}
        slow: list[float] = []
        for _ in range(reps):
            one = _bare_client(server, 0)
            _loop(one, 3)  # warm
            rows["bare1"].append(_timed(_loop, one, n) / n)
            one.close()
            many = [_bare_client(server, i) for i in range(HOSTS)]
            rows["bare10"].append(_timed(_parallel, many, n) / n)
            for c in many:
                c.close()
            resources = Resources()
            ctx = _ctx(text, resources, root)
            rows["cold"].append(_timed(_action_steps, ctx, aliases, 1))
            _action_steps(ctx, ["h1"], 3)  # warm
            rows["act1"].append(_timed(_action_steps, ctx, ["h1"], n) / n)
            rows["act10"].append(_timed(_action_steps, ctx, aliases, n) / n)
            resources.close()
        plain = _bare_client(server, 0, nodelay=False)
        slow.append(_timed(_loop, plain, n) / n)
        plain.close()
    finally:
        factory.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    _print(rows, slow, n, reps)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _print(rows: dict[str, list[float]], slow: list[float], n: int, reps: int) -> None:
    import os

    def ms(key: str) -> float:
        return statistics.median(rows[key]) * 1000

    def spread(key: str) -> str:
        return f"{min(rows[key]) * 1000:.2f}–{max(rows[key]) * 1000:.2f}"

    print(f"machine: nproc={os.cpu_count()} arch={platform.machine()} cpu={_cpu()}")
    print(f"python {platform.python_version()}, paramiko {paramiko.__version__}")
    print(f"{n} commands (`true`) per host, {reps} repeats, medians (min–max)\n")
    print("| what | ms per step (all its hosts) | ms per command per host | range |")
    print("|---|---|---|---|")
    print(f"| limit: bare paramiko, 1 connection, TCP_NODELAY | {ms('bare1'):.2f} | {ms('bare1'):.2f} | {spread('bare1')} |")  # fmt: skip
    print(f"| limit: bare paramiko, 10 connections in 10 threads | {ms('bare10'):.2f} | {ms('bare10') / HOSTS:.2f} | {spread('bare10')} |")  # fmt: skip
    print(f"| ssh action, 1 host | {ms('act1'):.2f} | {ms('act1'):.2f} | {spread('act1')} |")
    print(f"| ssh action, 10 hosts, forks 10 | {ms('act10'):.2f} | {ms('act10') / HOSTS:.2f} | {spread('act10')} |")  # fmt: skip
    print(f"| first step on a cold pool, 10 hosts (connects) | {ms('cold'):.1f} | | {spread('cold')} |")  # fmt: skip
    print(f"| bare paramiko without TCP_NODELAY, 1 host | {statistics.median(slow) * 1000:.2f} | | |")  # fmt: skip
    print()
    print(f"ratio, 1 host: action / limit = {ms('act1') / ms('bare1'):.2f}x")
    print(f"ratio, 10 hosts: action / limit (same parallelism) = {ms('act10') / ms('bare10'):.2f}x")
    print(f"ratio, 10-host step / one bare command on one host = {ms('act10') / ms('bare1'):.2f}x")


if __name__ == "__main__":
    main()
