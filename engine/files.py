"""Private files: what the engine writes (state, journal, outbox, logs, reports) is created
0600 in 0700 folders, whatever the umask (SPEC §9).  A base module: it imports nothing of the
engine.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder: the folders it creates (``path`` and its missing parents) are
    0700 whatever the umask; a folder that exists already is left as it is."""
    folder = Path(path)
    missing: list[Path] = []
    cur = folder
    while not cur.exists() and cur != cur.parent:
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # the umask does not decide
        fsync_dir(d.parent)  # the new folder survives a crash
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a directory")
    return folder


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_private(path: str | os.PathLike[str], *, exclusive: bool = True) -> int:
    """A new file descriptor for writing ``path``, 0600: never through a symbolic link, and
    (``exclusive``) never a file that exists already."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def owned_private_dir(path: str | os.PathLike[str]) -> Path:
    """``private_dir``, then refused unless it is a real folder of this user, 0700 (for a
    per-user folder such as the crash logs' when there is no state directory)."""
    folder = private_dir(path)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{folder} is not a folder of this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(folder, DIR_MODE)
    return folder


def unique_name(prefix: str, suffix: str) -> str:
    """``prefix-YYYYmmdd-HHMMSS-PID-RANDOM.suffix``: not guessable in advance."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
