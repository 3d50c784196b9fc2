"""Messages of the outbox table as ``.eml`` files: the ``outbox:`` folder of a ``notify`` step
(after each batch commits) and ``runbook outbox FILE --export DIR``.

One ``<Message-ID token>.eml`` per message, the bytes the relay would send (``email_bytes``,
dated when the message was queued, so every export of a message is the same file). Files are
0600 and the folders made here 0700 (SPEC §9). A file is written under a temporary name and
renamed, so a reader never sees half a message (a temporary file left by a killed writer is
removed the next time the folder is opened); the folder is synced once per batch, not once
per file: the table is the durable outbox, and a file lost to a power cut is written again
from it (by the step's next run, or by ``--export``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from runbook_engine.actions import OutboxRow
from runbook_engine.files import private_dir
from runbook_engine.plugins.notify.channels import email_bytes
from runbook_engine.plugins.notify.recipients import token


class ExportError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def file_name(message_id: str) -> str:
    return f"{token(message_id)}.eml"


class Folder:
    """A folder of ``.eml`` files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._made = False
        self._pid = os.getpid()

    def open(self) -> None:
        if self._made:
            return
        try:
            private_dir(self.folder)
        except OSError as exc:
            raise ExportError(f"cannot create {self.folder}: {exc.strerror or exc}") from None
        self._made = True
        self._sweep()

    def _sweep(self) -> None:
        """Temporary files of a writer that was killed between a write and its rename (never
        those of a process still running: another step or an export may share the folder)."""
        for temp in self.folder.glob(".*.eml.*.tmp"):
            pid = temp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and int(pid) != self._pid and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    temp.unlink()

    def path(self, message_id: str) -> Path:
        return self.folder / file_name(message_id)

    def write(self, row: OutboxRow, queued_at: str) -> None:
        """One message, atomically (temporary name, rename); not synced: see ``sync``."""
        self.open()
        final = self.path(row.message_id)
        temp = final.with_name(f".{final.name}.{self._pid}.tmp")
        data = email_bytes(row, queued_at)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)  # an older file of another mode is not trusted
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except OSError as exc:
            raise ExportError(f"cannot write {final}: {exc.strerror or exc}") from None

    def sync(self) -> None:
        """The folder's entries made durable: once per batch."""
        if not self._made:
            return
        try:
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ExportError(f"cannot sync {self.folder}: {exc.strerror or exc}") from None

    def missing(self, rows: Iterable[tuple[OutboxRow, str]]) -> list[tuple[OutboxRow, str]]:
        """The messages whose file is not in the folder (a crash between a batch's commit and
        its files)."""
        return [(r, at) for r, at in rows if not self.path(r.message_id).exists()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def export_all(rows: Iterable[tuple[OutboxRow, str, str]], folder: Path, batch: int = 1000) -> int:
    """``--export DIR``: every (row, step, queued_at) as ``DIR/STEP/<token>.eml``, each step's
    folder synced once per batch; returns how many files were written."""
    folders: dict[str, Folder] = {}
    dirty: set[str] = set()
    written = 0
    try:
        private_dir(folder)
    except OSError as exc:
        raise ExportError(f"cannot create {folder}: {exc.strerror or exc}") from None
    for row, step, at in rows:
        out = folders.get(step)
        if out is None:
            out = folders[step] = Folder(folder / step)
        out.write(row, at)
        dirty.add(step)
        written += 1
        if written % batch == 0:
            for name in dirty:
                folders[name].sync()
            dirty.clear()
    for name in dirty:
        folders[name].sync()
    return written
