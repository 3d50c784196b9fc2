"""Consumers of the engine's events: plain lines, JSON lines, or a live view on a terminal.

The engine commits each record to the journal first, then hands the same records to the
reporter: what the operator sees is what is on disk.  Every line is masked before printing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from ..format.printable import printable
from ..masking import Masker
from .lines import describe

# Note: the locks that keep lines whole are reentrant: the Ctrl-C/SIGTERM handler
# (``run/runner.py``) runs on the main thread, between two of its bytecodes, and prints a
# notice.  If the main thread was itself writing a line, a plain lock would never be given
# back (the apply hung, deaf to further signals); a reentrant one lets the notice through,
# between two whole lines.


class Reporter(Protocol):
    def records(self, recs: Sequence[dict[str, Any]]) -> None: ...

    def progress(self, node: str, line: str) -> None: ...

    def notice(self, text: str) -> None: ...

    def lease(self, state: str, text: str) -> None:
        """The lease's renewal: ``renewal_failed`` or ``renewal_recovered``, and what it means."""
        ...

    def summary(self, text: str, data: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class PlainReporter:
    """Plain lines, for logs and pipes."""

    def __init__(self, masker: Masker, out: TextIO | None = None) -> None:
        self.masker = masker
        self.out = out or sys.stdout
        self._lock = threading.RLock()  # reentrant: see the note above Reporter
        self._start = time.monotonic()

    def _write(self, text: str) -> None:
        with self._lock:
            stamp = time.strftime("%H:%M:%S")
            for line in printable(self.masker.mask(text)).split("\n"):
                self.out.write(f"{stamp} {line}\n")
            self.out.flush()

    def records(self, recs: Sequence[dict[str, Any]]) -> None:
        for rec in recs:
            text = describe(rec)
            if text:
                self._write(text)

    def progress(self, node: str, line: str) -> None:
        self._write(f"  {node}: {line}")

    def notice(self, text: str) -> None:
        self._write(text)

    def lease(self, state: str, text: str) -> None:
        self._write(f"notice: {text}")

    def summary(self, text: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.out.write(printable(self.masker.mask(text)).rstrip("\n") + "\n")
            self.out.flush()

    def close(self) -> None:
        pass


class JsonReporter:
    """One JSON object per line on stdout: every journal record, plus progress and notices."""

    def __init__(self, masker: Masker, out: TextIO | None = None) -> None:
        self.masker = masker
        self.out = out or sys.stdout
        self._lock = threading.RLock()  # reentrant: see the note above Reporter

    def _emit(self, obj: dict[str, Any]) -> None:
        # field by field: statuses, ids and kinds are never masked (``Masker.mask_record``)
        line = json.dumps(self.masker.mask_record(obj), default=str, ensure_ascii=False)
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def records(self, recs: Sequence[dict[str, Any]]) -> None:
        for rec in recs:
            self._emit({"event": rec.get("t"), **rec})

    def progress(self, node: str, line: str) -> None:
        self._emit({"event": "progress", "id": node, "message": line})

    def notice(self, text: str) -> None:
        self._emit({"event": "notice", "message": text})

    def lease(self, state: str, text: str) -> None:
        self._emit({"event": "lease", "state": state, "message": text})

    def summary(self, text: str, data: dict[str, Any]) -> None:
        self._emit({"event": "summary", "message": text, **data})

    def close(self) -> None:
        pass


def make_reporter(fmt: str, masker: Masker, total: int, title: str) -> Reporter:
    if fmt == "json":
        return JsonReporter(masker)
    if sys.stdout.isatty() and fmt == "text":
        from .live import LiveReporter

        return LiveReporter(masker, total, title)
    return PlainReporter(masker)
