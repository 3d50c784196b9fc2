"""``ssh``: run a command on inventory hosts with paramiko.

The hosts are the step's ``hosts`` (aliases) and the members of its ``groups``, worked on
``forks`` at a time, each over the run's one connection to it (``ssh_pool``).  Every host gets
``{stdout, stderr, exit_code, ok, error}`` in the outputs; the step fails when the share of
failed hosts exceeds ``max_fail_percent`` (default 0), naming each failed host and why.  The
step's remaining time bounds the whole of it: a command still running then is stopped.  The
rendered command may hold secrets: it reaches messages only through ``ctx.masker``.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed
from runbook_engine.format.durations import format_duration, parse_duration
from runbook_engine.format.model import Host

from . import execute as ssh_exec
from .hostkeys import POLICIES
from .pool import HostFailed, SshPool, Target, Trust, make_target

DEFAULT_FORKS = 10
DEFAULT_CONNECT_TIMEOUT = 10.0
_SHOWN_HOSTS = 10  # failed hosts detailed in a failure message; the outputs list them all
_TAIL_LINES = 10


@dataclass(frozen=True)
class Options:
    command: str
    forks: int
    max_fail_percent: float
    connect_timeout: float
    known_hosts: Path
    policy: str

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Options:
        try:
            connect_timeout = parse_duration(params.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
        except ValueError as exc:
            raise ActionFailed(f"connect_timeout: {exc}", retryable=False) from None
        policy = str(params.get("host_key_policy", "verify"))
        if policy not in POLICIES:
            raise ActionFailed(
                f"host_key_policy: {policy!r} is not one of {', '.join(POLICIES)}", retryable=False
            )
        known = params.get("known_hosts")
        return cls(
            command=str(params["command"]),
            forks=max(1, int(params.get("forks", DEFAULT_FORKS))),
            max_fail_percent=float(params.get("max_fail_percent", 0)),
            connect_timeout=connect_timeout,
            known_hosts=(
                Path(str(known)).expanduser().absolute()
                if known
                else Path.home() / ".ssh" / "known_hosts"
            ),
            policy=policy,
        )


@dataclass(frozen=True)
class HostResult:
    target: Target
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    error: str | None = None
    retryable: bool = True
    ran: bool = False  # the command was started on the host

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_output(self) -> dict[str, Any]:
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "ok": self.ok,
            "error": self.error,
        }


def select_hosts(
    inventory: Mapping[str, Host], aliases: list[str], groups: list[str]
) -> list[Target]:
    """The step's hosts in order: its aliases as listed, then its groups' members."""
    if not inventory:
        raise ActionFailed("the runbook has no `hosts` inventory to run ssh on", retryable=False)
    problems = [f"unknown host alias {a!r}" for a in aliases if a not in inventory] + [
        f"no host is in group {g!r}"
        for g in groups
        if not any(g in h.groups for h in inventory.values())
    ]
    if problems:
        raise ActionFailed(
            "; ".join(problems) + f" (inventory: {', '.join(inventory)})", retryable=False
        )
    chosen = list(
        dict.fromkeys([*aliases, *(a for a, h in inventory.items() if set(groups) & set(h.groups))])
    )
    return [
        make_target(
            a, inventory[a].address, inventory[a].port, inventory[a].user, inventory[a].key_file
        )
        for a in chosen
    ]


def _on_host(
    pool: SshPool, target: Target, opts: Options, trust: Trust, ctx: ActionContext
) -> HostResult:
    if ctx.cancel.is_set():
        return HostResult(target, error="not started: the run was cancelled", retryable=False)
    remaining = ctx.remaining()
    if remaining <= 0:
        return HostResult(target, error="not started: the step ran out of time")
    try:
        chan = pool.session(target, trust, min(opts.connect_timeout, remaining))
        done = ssh_exec.run(
            chan, opts.command, deadline=ctx.deadline, cancel=ctx.cancel, masker=ctx.masker
        )
    except HostFailed as exc:
        return HostResult(target, error=exc.message, retryable=exc.retryable)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        return HostResult(target, error=f"connection to {target.label} failed: {exc}")
    error: str | None = None
    if done.stopped == "timeout":
        error = (
            f"timed out after {format_duration(ctx.timeout)} (the step's timeout): "
            "the command was sent TERM and its channel closed"
        )
    elif done.stopped == "cancelled":
        error = "cancelled: the command was sent TERM and its channel closed"
    elif done.exit_code is None:
        error = "the command ended without an exit status (killed by a signal?)"
    elif done.exit_code != 0:
        error = f"exit status {done.exit_code}"
    return HostResult(target, done.stdout, done.stderr, done.exit_code, error, ran=True)


def _tail(label: str, text: str) -> list[str]:
    lines = text.rstrip("\n").splitlines()[-_TAIL_LINES:]
    if not lines:
        return []
    return [f"  {label}:", *(f"    {line[:300]}" for line in lines)]  # masked already


def _failure(results: list[HostResult], opts: Options, ctx: ActionContext) -> ActionFailed:
    failed = [r for r in results if not r.ok]
    percent = 100.0 * len(failed) / len(results)
    named = "; ".join(f"{r.target.alias}: {r.error}" for r in failed[:_SHOWN_HOSTS])
    more = f"; and {len(failed) - _SHOWN_HOSTS} more" if len(failed) > _SHOWN_HOSTS else ""
    hosts = "host" if len(results) == 1 else "hosts"
    message = (
        f"{len(failed)} of {len(results)} {hosts} failed ({percent:.0f}%, more than "
        f"max_fail_percent {opts.max_fail_percent:g}%): {named}{more}"
    )
    command = " ".join(ctx.masker.mask(opts.command).split())
    details: list[str] = []
    for r in failed[:_SHOWN_HOSTS]:
        if not r.ran:  # the message says why; here only where it is
            details.append(f"{r.target.alias} ({r.target.label}): command not run")
            continue
        details.append(f"{r.target.alias} ({r.target.label}): {r.error}")
        details.append(f"  command: {command[:300]}")
        details += _tail("stdout", r.stdout) + _tail("stderr", r.stderr)
    return ActionFailed(
        ctx.masker.mask(message),
        details=ctx.masker.mask("\n".join(details)),
        outputs=_outputs(results),
        retryable=all(r.retryable for r in failed),
    )


def _outputs(results: list[HostResult]) -> dict[str, Any]:
    return {
        "hosts": {r.target.alias: r.as_output() for r in results},
        "failed": [r.target.alias for r in results if not r.ok],
        "ok_count": sum(1 for r in results if r.ok),
    }


class SshAction(BuiltinAction):
    name = "ssh"
    summary = "run a command on remote hosts over SSH"
    idempotent = False
    changes = True
    command_keys = frozenset({"command"})

    def describe(self, params: Mapping[str, Any]) -> str:
        def names(key: str, prefix: str = "") -> list[str]:
            value = params.get(key)
            if isinstance(value, list):
                return [f"{prefix}{v}" for v in value]
            return [f"{prefix}{value}"] if value else []  # a template, named as written

        targets = [*names("hosts"), *names("groups", "group ")]
        return f"ssh `{params.get('command', '')}` on {', '.join(targets)}"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        opts = Options.from_params(params)
        targets = select_hosts(
            ctx.runbook.hosts,
            [str(a) for a in params.get("hosts", [])],
            [str(g) for g in params.get("groups", [])],
        )
        pool: SshPool = ctx.resources.get("ssh", SshPool)
        trust = Trust(pool.known_hosts(opts.known_hosts), opts.policy)
        results: dict[str, HostResult] = {}
        with ThreadPoolExecutor(min(opts.forks, len(targets)), thread_name_prefix="ssh") as ex:
            futures = [ex.submit(_on_host, pool, t, opts, trust, ctx) for t in targets]
            for future in as_completed(futures):
                r = future.result()
                results[r.target.alias] = r
                bad = sum(1 for x in results.values() if not x.ok)
                ctx.progress(f"ssh: {len(results)}/{len(targets)} hosts done, {bad} failed")
        ordered = [results[t.alias] for t in targets]
        failed = sum(1 for r in ordered if not r.ok)
        if failed and 100.0 * failed / len(ordered) > opts.max_fail_percent:
            raise _failure(ordered, opts, ctx)
        return _outputs(ordered)
