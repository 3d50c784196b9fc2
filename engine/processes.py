"""Commands left running by a run that died (kill -9, a crash): found and stopped by the next
``apply`` or ``rollback``. A base module: it imports nothing of the engine.

Every command the engine starts (``shell``, a ``check`` command) carries, in its environment,
``RUNBOOK_STEP=STATE:STEP``: which state and which step started it.  Its children inherit the
variable, so a process group that outlived its leader is found too.  When a run dies, its
commands would run on as orphans, and one of them may still change things after the operator
has decided the step failed.  So when ``apply`` or ``rollback`` takes over the lease of a
holder that is gone, it stops (SIGTERM, then SIGKILL) the processes of this state whose step
the journal says was ``running`` or ``rolling_back``, and says so.  Processes of steps that
finished are left alone: a step may start a service on purpose (``nohup server &``).

Why not a parent-death signal (``prctl(PR_SET_PDEATHSIG)`` in the child)?  It needs a
``preexec_fn``, which makes every spawn a full ``fork`` of the engine (no ``vfork``), and it
reaches only the shell itself, not the commands the shell started, which are the ones doing
the work.  A process that clears its environment (``env -i``, ``sudo``) is not found.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ENV = "RUNBOOK_STEP"
GRACE = 2.0  # seconds between SIGTERM and SIGKILL


def _state_key(state_dir: Path) -> str:
    return hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]


def marker(state_dir: Path, step: str) -> str:
    return f"{_state_key(state_dir)}:{step}"


def child_env(state_dir: Path, step: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a command the engine starts for ``step``."""
    return {**os.environ, **(extra or {}), ENV: marker(state_dir, step)}


@dataclass(frozen=True)
class Leftover:
    pid: int
    step: str
    command: str


def leftovers(state_dir: Path, steps: Iterable[str]) -> list[Leftover]:
    """Processes of this machine started for one of ``steps`` of the state ``state_dir``."""
    wanted = {marker(state_dir, s).encode(): s for s in steps}
    if not wanted:
        return []
    found: list[Leftover] = []
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue  # gone, or another user's
        for item in env.split(b"\0"):
            if item.startswith(ENV.encode() + b"="):
                step = wanted.get(item[len(ENV) + 1 :])
                if step is not None:
                    found.append(Leftover(int(entry), step, _cmdline(int(entry))))
                break
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def stop(procs: list[Leftover], grace: float = GRACE) -> None:
    """SIGTERM each, then SIGKILL the ones still there after ``grace`` seconds."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(procs)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p.pid)]
    for p in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return False
