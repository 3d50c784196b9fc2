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

from .durations import format_duration
from .secrets import Masker

_ICONS = {
    "running": "▶",
    "succeeded": "✓",
    "failed": "✗",
    "skipped": "–",
    "waiting": "⏸",
    "unknown": "?",
    "pending": "·",
    "rolling_back": "↶",
    "rolled_back": "↶",
    "rollback_failed": "✗",
}


class Reporter(Protocol):
    def records(self, recs: Sequence[dict[str, Any]]) -> None: ...

    def progress(self, node: str, line: str) -> None: ...

    def notice(self, text: str) -> None: ...

    def summary(self, text: str, data: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def describe(rec: dict[str, Any]) -> str | None:
    """One line for a journal record, or None for records people need not see."""
    kind = rec.get("t")
    if kind == "step":
        status = rec["status"]
        icon = _ICONS.get(status, "·")
        sid = rec["id"]
        if status == "running":
            attempt = rec.get("attempt", 1)
            return f"{icon} {sid} started" + (f" (attempt {attempt})" if attempt > 1 else "")
        if status == "succeeded":
            took = rec.get("duration")
            return f"{icon} {sid} succeeded" + (f" in {format_duration(took)}" if took else "")
        if status == "failed":
            tries = rec.get("attempt", 1)
            after = f" after {tries} attempts" if tries and tries > 1 else ""
            text = f"{icon} {sid} failed{after}: {rec.get('error')}"
            details = rec.get("details")
            if details:
                text += "\n" + "\n".join("    " + ln for ln in str(details).splitlines()[-20:])
            return text
        if status == "skipped":
            return f"{icon} {sid} skipped ({rec.get('reason', 'when')})"
        if status == "waiting":
            return f"{icon} {sid} waiting: {rec.get('error') or 'a decision'}"
        if status == "unknown":
            return f"{icon} {sid} unknown: {rec.get('error') or 'found running after a crash'}"
        if status == "rolling_back":
            return f"{icon} {sid} rolling back"
        if status == "rolled_back":
            note = rec.get("note")
            return f"{icon} {sid} rolled back" + (f" ({note})" if note else "")
        if status == "rollback_failed":
            return f"{icon} {sid} rollback FAILED: {rec.get('error')}"
        if status == "pending" and rec.get("reason"):
            return f"· {sid} pending again ({rec['reason']})"
        return None
    if kind == "retry":
        return (
            f"↻ {rec['id']} failed ({rec.get('error')}); attempt {rec['attempt']} "
            f"in {format_duration(rec.get('delay', 0))}"
        )
    if kind == "contingency":
        status = rec["status"]
        head = f"⚑ contingency {rec['id']} (risk {rec.get('risk')}, after {rec.get('step')})"
        if status == "running":
            return f"{head} started"
        if status == "failed":
            return f"{head} FAILED: {rec.get('error')}"
        return f"{head} {status}"
    if kind == "approval":
        who = rec.get("by")
        return f"✓ {rec['step']} approved by {who}" + (
            f": {rec['comment']}" if rec.get("comment") else ""
        )
    if kind == "run" and rec["status"] == "running":
        return f"run {rec['run']} " + ("resumed" if rec.get("resumed") else "started")
    return None


class PlainReporter:
    """Plain lines, for logs and pipes."""

    def __init__(self, masker: Masker, out: TextIO | None = None) -> None:
        self.masker = masker
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def _write(self, text: str) -> None:
        with self._lock:
            stamp = time.strftime("%H:%M:%S")
            for line in self.masker.mask(text).splitlines():
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

    def summary(self, text: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.out.write(self.masker.mask(text).rstrip("\n") + "\n")
            self.out.flush()

    def close(self) -> None:
        pass


class JsonReporter:
    """One JSON object per line on stdout: every journal record, plus progress and notices."""

    def __init__(self, masker: Masker, out: TextIO | None = None) -> None:
        self.masker = masker
        self.out = out or sys.stdout
        self._lock = threading.Lock()

    def _emit(self, obj: dict[str, Any]) -> None:
        line = json.dumps(self.masker.mask_value(obj), default=str, ensure_ascii=False)
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
