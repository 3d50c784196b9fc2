"""Render a ``Diff`` as text (for a terminal or git) or JSON; markdown is in ``diff_markdown``.

Flagged changes come first; then the changes grouped: the runbook as a whole (metadata,
defaults, vars, secrets, hosts), the risk register, then each phase in NEW's order.  Secrets
are named, never valued (the diff never holds a value to print).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .compare import (
    ADDED,
    MOVED,
    REMOVED,
    RENAMED,
    REORDERED,
    RESIZED,
    Change,
    Diff,
)

SIGNS = {ADDED: "+", REMOVED: "-", RENAMED: ">", MOVED: ">"}
GLOBAL = ("metadata", "defaults", "var", "secret", "host")
REGISTER = ("risk", "contingency")

Style = Callable[..., str]


def value(v: Any, limit: int = 200) -> str:
    """A value as compact JSON, cut at ``limit`` characters; absent as ``(unset)``."""
    if v is None:
        return "(unset)"
    text = json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ids(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def describe(c: Change, code: Callable[[str], str] = str, limit: int = 200) -> tuple[str, str]:
    """(sign, one line) for a change; ``code`` wraps ids and values (backticks in markdown)."""
    sign = SIGNS.get(c.kind, "~")
    name, ident = c.subject, code(c.id)

    def v(x: Any) -> str:
        return code(value(x, limit))

    if c.subject in ("metadata", "defaults"):
        return sign, f"{name}.{c.field}: {v(c.old)} -> {v(c.new)}"
    if c.subject == "secret":
        if c.kind == "changed":
            return sign, f"secret {ident}: where its value comes from changed (never shown)"
        return sign, f"secret {ident}"
    if c.subject == "needs":
        plus = [p for p in c.new if p not in c.old]
        minus = [p for p in c.old if p not in c.new]
        parts = []
        if plus:
            parts.append("+ " + _ids([code(p) for p in plus]))
        if minus:
            parts.append("- " + _ids([code(p) for p in minus]))
        return sign, f"needs of {ident}: {'; '.join(parts)}"
    if c.subject == "step":
        if c.kind == ADDED:
            return sign, f"step {ident} ({c.new['action']})"
        if c.kind == REMOVED:
            return sign, f"step {ident} ({c.old['action']}, phase {code(c.old['phase'])})"
        if c.kind == RENAMED:
            return sign, f"step {ident} renamed from {code(c.old)}"
        if c.kind == MOVED:
            return sign, f"step {ident} moved from phase {code(c.old)} to {code(c.new)}"
        return sign, f"step {ident} {c.field}: {v(c.old)} -> {v(c.new)}"
    if c.subject == "phase":
        if c.kind in (ADDED, REMOVED):
            steps = c.new if c.kind == ADDED else c.old
            return sign, f"phase {ident} ({len(steps)} steps)"
        if c.kind == REORDERED:
            what = f"phase {ident}: steps" if c.id else "phases"
            return sign, f"{what} reordered: {_ids(c.new)}"
        return sign, f"phase {ident} {c.field}: {v(c.old)} -> {v(c.new)}"
    if c.subject == "wave":
        if c.kind == ADDED:
            return sign, f"wave {ident} {v(c.new)}"
        if c.kind == REMOVED:
            return sign, f"wave {ident} (was {v(c.old)})"
        if c.kind == RESIZED:
            return sign, f"wave {ident} resized: {v(c.old)} -> {v(c.new)}"
        if c.kind == REORDERED:
            return sign, f"waves of phase {ident} reordered: {_ids(c.new)}"
        return sign, f"wave {ident} {c.field}: {v(c.old)} -> {v(c.new)}"
    # var, host, risk, contingency: records by id
    if c.kind == ADDED:
        return sign, f"{name} {ident} = {v(c.new)}"
    if c.kind == REMOVED:
        return sign, f"{name} {ident} (was {v(c.old)})"
    where = f".{c.field}" if c.field else ""
    return sign, f"{name} {ident}{where}: {v(c.old)} -> {v(c.new)}"


def groups(d: Diff) -> list[tuple[str, list[Change]]]:
    """(heading, changes) in reading order: runbook, risk register, phases (NEW's order,
    then phases only OLD has)."""
    out: dict[str, list[Change]] = {"runbook": [], "risk register": []}
    for pid in d.new.phases:
        out[f"phase {pid}"] = []
    for pid in d.old.phases:
        out.setdefault(f"phase {pid}", [])
    for c in d.changes:
        if c.subject in GLOBAL or (c.subject == "phase" and not c.id):
            out["runbook"].append(c)
        elif c.subject in REGISTER:
            out["risk register"].append(c)
        else:
            out[f"phase {c.phase}"].append(c)
    return [(k, v) for k, v in out.items() if v]


_COLOUR = {"+": "green", "-": "red", ">": "cyan", "~": "yellow"}


def text(d: Diff, style: Style, header: str = "") -> str:
    lines = [header or f"runbook diff {d.old.file} -> {d.new.file}"]
    if not d.changed:
        lines.append("no semantic changes")
        return "\n".join(lines)
    if d.flags:
        lines.append(
            style(f"RISKIER: {len(d.flags)} change(s) make this migration riskier", "red", "bold")
        )
        for f in d.flags:
            lines.append(style(f"  !! [{f.rule}] {f.message}", "red"))
        lines.append("")
    for heading, changes in groups(d):
        lines.append(style(heading, "bold"))
        for c in changes:
            sign, line = describe(c)
            lines.append(style(f"  {sign} {line}", _COLOUR[sign]))
    if d.shifted:
        shown = ", ".join(f"{i} {a}->{b}" for i, a, b in d.shifted[:10])
        more = f", … ({len(d.shifted) - 10} more)" if len(d.shifted) > 10 else ""
        lines.append(style("execution order", "bold"))
        lines.append(f"  {len(d.shifted)} step(s) now at another depth of the DAG: {shown}{more}")
    counts = ", ".join(
        f"{subject}: " + " ".join(f"{n} {k}" for k, n in kinds.items() if n)
        for subject, kinds in d.summary().items()
    )
    lines.append(f"{len(d.changes)} change(s) ({counts}); {len(d.flags)} flagged as riskier")
    return "\n".join(lines)


def as_json(d: Diff) -> dict[str, Any]:
    return {
        "old": d.old.file,
        "new": d.new.file,
        "changed": d.changed,
        "summary": d.summary(),
        "flags": [f.as_json() for f in d.flags],
        "changes": [c.as_json() for c in d.changes],
        "renamed": d.renamed,
        "order": [{"id": i, "old_generation": a, "new_generation": b} for i, a, b in d.shifted],
    }
