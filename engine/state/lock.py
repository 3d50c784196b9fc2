"""One writer per runbook state: ``STATE_DIR/NAME/lock``.

The lock is an ``flock`` on the file (released by the kernel when the holder dies, even by
SIGKILL) plus the holder's host, pid, user, command and start time written inside it.  A lock
whose holder process is gone on this host is taken over with a notice; a lock held from
another host (the flock cannot tell) is refused until ``runbook unlock FILE --force``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, LockHeld
from ..files import private_dir
from .identity import os_user
from .store import now

LOCK = "lock"


@dataclass
class Holder:
    host: str
    pid: int
    user: str
    started_at: str
    command: str

    def describe(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid} since {self.started_at} (`{self.command}`)"


def _me(command: str) -> Holder:
    # the real identity (identity.py), never $USER/$LOGNAME as getpass would take it
    return Holder(socket.gethostname(), os.getpid(), os_user(), now(), command)


def _read(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    if not raw.strip():
        return None
    try:
        data: dict[str, Any] = json.loads(raw)
        return Holder(**{k: data[k] for k in ("host", "pid", "user", "started_at", "command")})
    except (ValueError, KeyError, TypeError):
        return Holder("?", 0, "?", "?", "unreadable lock file")


def probe(directory: Path) -> tuple[Holder | None, bool | None]:
    """Who holds the lock of a state, without taking it: (holder, alive). ``alive`` is True
    when a process holds the lock now, False when the recorded holder is gone (its lock was
    released by its death: SIGKILL, a crash), None when nobody is recorded or the holder is on
    another host (the lock cannot tell from here)."""
    path = directory / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, None
    try:
        holder = _read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder, True  # held right now
        fcntl.flock(fd, fcntl.LOCK_UN)
        if holder is None:
            return None, None
        if holder.host != socket.gethostname():
            return holder, None
        return holder, False
    finally:
        os.close(fd)


class Lock:
    def __init__(self, directory: Path, command: str | None = None) -> None:
        self.path = directory / LOCK
        self.command = command or " ".join(["runbook", *sys.argv[1:]])
        self.fd = -1
        self.notice: str | None = None

    def acquire(self) -> Lock:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = holder.describe() if holder else "another process on this host"
            raise LockHeld(f"the state is locked by {who}") from None
        holder = _read(fd)
        me = _me(self.command)
        if holder is not None and holder.host != me.host:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise LockHeld(
                f"the state is locked by {holder.describe()} on another host; if that run is "
                f"gone, clear it with `runbook unlock FILE --force`"
            )
        if holder is not None:
            self.notice = f"took over a stale lock: {holder.describe()} is no longer running"
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me.__dict__).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd >= 0:
            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def force_unlock(directory: Path) -> str:
    """Clear a lock left by a holder on another host (or a dead one); returns who held it."""
    path = directory / LOCK
    if not path.exists():
        raise InvalidInput(f"no lock at {path}: nothing to clear")
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            who = holder.describe() if holder else "a process"
            raise LockHeld(
                f"the lock is held by {who}, which is running on this host: stop it "
                "(Ctrl-C) instead of forcing the lock"
            ) from None
        holder = _read(fd)
        os.ftruncate(fd, 0)
        os.fsync(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return holder.describe() if holder else "nobody (the lock was already clear)"
