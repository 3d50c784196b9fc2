"""``shell``: run a command through /bin/sh, or an argv with no shell.

The command runs in its own process group; on timeout or cancellation the whole group gets
SIGTERM, then SIGKILL after a short grace, so that no grandchild outlives the step.
"""

from __future__ import annotations

import os
import select
import selectors
import shlex
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed
from runbook_engine.format.durations import format_duration
from runbook_engine.processes import child_env

KEEP = 16 * 1024  # bytes of stdout/stderr kept in the outputs (the tail)
KILL_GRACE = 2.0


class ShellAction(BuiltinAction):
    name = "shell"
    summary = "run a local command"
    idempotent = False
    changes = True
    command_keys = frozenset({"command"})

    def describe(self, params: Mapping[str, Any]) -> str:
        if "argv" in params and isinstance(params["argv"], list):
            return "run " + shlex.join(str(a) for a in params["argv"])
        return f"run `{_one_line(str(params.get('command', '')))}`"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        if "argv" in params:
            args: list[str] | str = [str(a) for a in params["argv"]]
            shell = False
            shown = shlex.join(args)
        else:
            args = str(params["command"])
            shell = True
            shown = args
        # RUNBOOK_STEP marks the command and its children: a run that dies leaves them to
        # the next apply, which stops them (runbook_engine/processes.py)
        extra = {k: _env_text(v) for k, v in (params.get("env") or {}).items()}
        env = child_env(ctx.state_dir, ctx.step_id, extra)
        stdin = params.get("stdin")
        try:
            proc = subprocess.Popen(
                args,
                shell=shell,
                cwd=params.get("cwd") or None,
                env=env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ActionFailed(
                f"cannot start `{_one_line(ctx.masker.mask(shown))}`: {exc.strerror}"
            ) from None
        out, err, why = _communicate(proc, stdin, ctx)
        stdout = _tail(out, ctx)
        stderr = _tail(err, ctx)
        outputs = {"stdout": stdout, "stderr": stderr, "exit_code": proc.returncode}
        if why is not None:
            raise ActionFailed(
                f"`{_one_line(ctx.masker.mask(shown))}` {why}",
                details=_details(stdout, stderr),
                outputs=outputs,
            )
        if proc.returncode != 0:
            raise ActionFailed(
                f"`{_one_line(ctx.masker.mask(shown))}` exited with status {proc.returncode}",
                details=_details(stdout, stderr),
                outputs=outputs,
            )
        return outputs


def _communicate(
    proc: subprocess.Popen[bytes], stdin: str | None, ctx: ActionContext
) -> tuple[bytes, bytes, str | None]:
    """Send stdin, read stdout and stderr to their end, wait for the exit; watch the timeout
    and Ctrl-C at least every 0.25 s.  With a pidfd the exit wakes us up at once:
    ``Popen.communicate(timeout=...)`` instead polls for it with sleeps of 1 ms and more,
    which doubled the cost of a short command (bench/bench_engine.py)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3
        return _communicate_polling(proc, stdin, ctx)
    try:
        return _pump(proc, stdin.encode() if stdin is not None else None, ctx, pidfd)
    finally:
        os.close(pidfd)


def _pump(
    proc: subprocess.Popen[bytes], data: bytes | None, ctx: ActionContext, pidfd: int
) -> tuple[bytes, bytes, str | None]:
    assert proc.stdout is not None and proc.stderr is not None
    sinks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    out, err = sinks[proc.stdout.fileno()], sinks[proc.stderr.fileno()]
    view = memoryview(data or b"")
    sent = 0
    why: str | None = None
    with selectors.DefaultSelector() as sel:
        if proc.stdin is not None:
            if view:
                sel.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        while sel.get_map():
            if why is None:
                if ctx.cancel.is_set():
                    why = "was stopped (interrupted)"
                elif ctx.remaining() <= 0:
                    why = f"timed out after {format_duration(ctx.timeout)}"
                if why is not None:
                    sel.unregister(pidfd)
                    _kill_group(proc)
                    continue
            ready = sel.select(min(0.25, ctx.remaining()) if why is None else None)
            for key, _events in ready:
                if key.fd == pidfd:
                    sel.unregister(pidfd)  # exited; reaped below
                elif key.fileobj is proc.stdin:
                    try:
                        sent += os.write(key.fd, view[sent : sent + _PIPE_BUF])
                    except BrokenPipeError:
                        sent = len(view)
                    if sent >= len(view):
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                else:
                    chunk = os.read(key.fd, 32768)
                    if chunk:
                        sinks[key.fd].append(chunk)
                    else:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()  # type: ignore[union-attr]
    proc.wait()
    return b"".join(out), b"".join(err), why


_PIPE_BUF = getattr(select, "PIPE_BUF", 512)


def _communicate_polling(
    proc: subprocess.Popen[bytes], stdin: str | None, ctx: ActionContext
) -> tuple[bytes, bytes, str | None]:
    data = stdin.encode() if stdin is not None else None
    while True:
        wait = min(0.25, ctx.remaining())
        try:
            out, err = proc.communicate(input=data, timeout=wait)
            return out, err, None
        except subprocess.TimeoutExpired:
            data = None  # already sent
            if ctx.cancel.is_set():
                why = "was stopped (interrupted)"
            elif ctx.remaining() <= 0:
                why = f"timed out after {format_duration(ctx.timeout)}"
            else:
                continue
            _kill_group(proc)
            out, err = proc.communicate()
            return out, err, why


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(data: bytes, ctx: ActionContext) -> str:
    """The last ``KEEP`` characters of an output, masked before they are cut."""
    return ctx.masker.tail(data.decode("utf-8", errors="replace"), KEEP)


def _details(stdout: str, stderr: str) -> str:
    parts = []
    for label, text in (("stdout", stdout), ("stderr", stderr)):
        lines = text.rstrip().splitlines()[-10:]
        if lines:
            parts.append(f"{label}:\n" + "\n".join("  " + ln for ln in lines))
    return "\n".join(parts)


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _one_line(text: str, limit: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
