"""How each engine event reads as one line for a person (plain and live reporters)."""

from __future__ import annotations

from typing import Any

from ..format.durations import format_duration
from ..format.printable import one_line

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


def describe(rec: dict[str, Any]) -> str | None:
    """One line for a journal record, or None for records people need not see."""
    kind = rec.get("t")
    if kind == "step":
        status = rec["status"]
        icon = _ICONS.get(status, "·")
        sid = one_line(rec["id"])
        if status == "running":
            attempt = rec.get("attempt", 1)
            return f"{icon} {sid} started" + (f" (attempt {attempt})" if attempt > 1 else "")
        if status == "succeeded":
            took = rec.get("duration")
            return f"{icon} {sid} succeeded" + (f" in {format_duration(took)}" if took else "")
        if status == "failed":
            tries = rec.get("attempt", 1)
            after = f" after {tries} attempts" if tries and tries > 1 else ""
            text = f"{icon} {sid} failed{after}: {one_line(rec.get('error'))}"
            details = rec.get("details")
            if details:
                text += "\n" + "\n".join("    " + ln for ln in str(details).splitlines()[-20:])
            return text
        if status == "skipped":
            return f"{icon} {sid} skipped ({one_line(rec.get('reason', 'when'))})"
        if status == "waiting":
            return f"{icon} {sid} waiting: {one_line(rec.get('error') or 'a decision')}"
        if status == "unknown":
            why = one_line(rec.get("error") or "found running after a crash")
            return f"{icon} {sid} unknown: {why}"
        if status == "rolling_back":
            return f"{icon} {sid} rolling back"
        if status == "rolled_back":
            note = rec.get("note")
            return f"{icon} {sid} rolled back" + (f" ({one_line(note)})" if note else "")
        if status == "rollback_failed":
            return f"{icon} {sid} rollback FAILED: {one_line(rec.get('error'))}"
        if status == "pending" and rec.get("reason"):
            return f"· {sid} pending again ({one_line(rec['reason'])})"
        return None
    if kind == "retry":
        return (
            f"↻ {one_line(rec['id'])} failed ({one_line(rec.get('error'))}); attempt {rec['attempt']} "
            f"in {format_duration(rec.get('delay', 0))}"
        )
    if kind == "contingency":
        status = rec["status"]
        head = f"⚑ contingency {rec['id']} (risk {rec.get('risk')}, after {rec.get('step')})"
        if status == "running":
            return f"{head} started"
        if status == "failed":
            return f"{head} FAILED: {one_line(rec.get('error'))}"
        return f"{head} {status}"
    if kind == "approval":
        who = one_line(rec.get("by"))
        return f"✓ {one_line(rec['step'])} approved by {who}" + (
            f": {one_line(rec['comment'])}" if rec.get("comment") else ""
        )
    if kind == "run" and rec["status"] == "running":
        return f"run {rec['run']} " + ("resumed" if rec.get("resumed") else "started")
    return None
