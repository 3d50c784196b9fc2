"""Render a ``Diff`` as a pull-request comment: always under ``LIMIT`` characters.

Order: a title, a summary table, the flagged (riskier) changes, then every change by phase
and a mermaid graph of the changed part, each folded in ``<details>``.  When a huge change
would not fit, the list is cut where the budget ends with a note saying how much was left
out (GitHub refuses comments over 65,536 characters; the budget counts UTF-8 bytes, so it
holds however the limit is counted).
"""

from __future__ import annotations

import re

from .compare import ADDED, REMOVED, Diff
from .text import describe, groups

LIMIT = 65_000
_RESERVE = 700  # room kept for the cut note and the closing tags
MAX_GRAPH_NODES = 60
_LABELS = {
    "metadata": "metadata",
    "defaults": "defaults",
    "var": "vars",
    "secret": "secrets (names only)",
    "host": "hosts",
    "risk": "risks",
    "contingency": "contingencies",
    "phase": "phases",
    "wave": "waves",
    "step": "steps",
    "needs": "dependencies (per instance)",
}


_TICKS = re.compile(r"`+")
# `@name` and `@org/team` ping people from a PR comment: a zero-width space after the `@`
# keeps the text readable and the mention dead (outside code spans, where mentions work)
_MENTION = re.compile(r"@(?=[A-Za-z0-9_])")


def code(text: str) -> str:
    """``text`` as one code span: its fence is longer than any backtick run inside it (a
    double backtick cannot close it early), padded when the text holds a backtick."""
    text = " ".join(text.splitlines())
    runs = [len(m.group()) for m in _TICKS.finditer(text)]
    if not runs:
        return f"`{text}`"
    fence = "`" * (max(runs) + 1)
    return f"{fence} {text} {fence}"


def _spans(text: str) -> list[tuple[bool, str]]:
    """``text`` cut into (is a code span, part), the way CommonMark reads backtick runs."""
    out: list[tuple[bool, str]] = []
    pos = 0
    plain_from = 0
    while True:
        m = _TICKS.search(text, pos)
        if m is None:
            break
        closer = next(
            (c for c in _TICKS.finditer(text, m.end()) if len(c.group()) == len(m.group())), None
        )
        if closer is None:  # an opening run with no closing one is literal text
            pos = m.end()
            continue
        out.append((False, text[plain_from : m.start()]))
        out.append((True, text[m.start() : closer.end()]))
        pos = plain_from = closer.end()
    out.append((False, text[plain_from:]))
    return [(is_code, part) for is_code, part in out if part]


def _escape(text: str) -> str:
    """Outside the code spans of ``text``: HTML escaped, stray backticks escaped, mentions
    neutralised, arrows as arrows."""
    out = []
    for is_code, part in _spans(text):
        if not is_code:
            part = part.replace(" -> ", " → ").replace("&", "&amp;")
            part = part.replace("<", "&lt;").replace(">", "&gt;").replace("`", "\\`")
            part = _MENTION.sub("@&#8203;", part)
        out.append(part)
    return "".join(out)


def _size(text: str) -> int:
    """UTF-8 bytes: never fewer than characters, so the bound holds either way."""
    return len(text.encode("utf-8"))


class _Out:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0

    def fits(self, text: str, reserve: int = _RESERVE) -> bool:
        return self.size + _size(text) + 1 + reserve <= self.limit

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += _size(text) + 1

    def text(self) -> str:
        return "\n".join(self.parts) + "\n"


def _cut_note(left: int, what: str) -> str:
    return (
        f"\n> **Cut:** {left} more {what} not shown, to keep this comment under "
        f"{LIMIT:,} characters. Run `runbook diff --format text` (or `--format json`) for all."
    )


def _summary(d: Diff, out: _Out) -> None:
    out.add(f"### Runbook diff: {code(d.old.file)} → {code(d.new.file)}")
    out.add("")
    if not d.changed:
        out.add("No semantic changes (formatting, comments and key order are not changes).")
        return
    out.add("| | added | removed | changed |")
    out.add("|---|---:|---:|---:|")
    for subject, kinds in d.summary().items():
        out.add(f"| {_LABELS[subject]} | {kinds[ADDED]} | {kinds[REMOVED]} | {kinds['changed']} |")
    if d.shifted:
        out.add(f"| steps at another depth of the DAG | | | {len(d.shifted)} |")
    out.add("")


def _flags(d: Diff, out: _Out) -> bool:
    """False when the budget ran out."""
    if not d.flags:
        out.add("No change was flagged as making the migration riskier.")
        return True
    out.add(f"#### ⚠️ {len(d.flags)} change(s) make this migration riskier")
    out.add("")
    for i, f in enumerate(d.flags):
        message = f.message if len(f.message) <= 600 else f.message[:599] + "…"
        line = f"- **`{f.rule}`** {_escape(message)}"
        if not out.fits(line):
            out.add(_cut_note(len(d.flags) - i, "flagged change(s)"))
            return False
        out.add(line)
    out.add("")
    return True


def _details(d: Diff, out: _Out) -> bool:
    out.add(f"<details><summary>All {len(d.changes)} change(s), by phase</summary>")
    out.add("")
    done = 0
    for heading, changes in groups(d):
        if heading.startswith("phase "):
            title = f"##### phase {code(heading[len('phase ') :])}"
        else:
            title = f"##### {heading}"
        if not out.fits(title):
            out.add(_cut_note(len(d.changes) - done, "change(s)"))
            out.add("</details>")
            return False
        out.add(title)
        for c in changes:
            sign, line = describe(c, code, limit=120)
            text = f"- {sign} {_escape(line)}"
            if not out.fits(text):
                out.add(_cut_note(len(d.changes) - done, "change(s)"))
                out.add("</details>")
                return False
            out.add(text)
            done += 1
        out.add("")
    if d.shifted:
        shown = ", ".join(f"{code(i)} {a}→{b}" for i, a, b in d.shifted[:20])
        more = f", … ({len(d.shifted) - 20} more)" if len(d.shifted) > 20 else ""
        line = f"Execution order: {len(d.shifted)} step(s) at another depth: {shown}{more}"
        if out.fits(line):
            out.add(line)
    out.add("</details>")
    out.add("")
    return True


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid(d: Diff) -> str:
    """A flowchart of the changed instances and their nearest neighbours."""
    old, new = d.old, d.new
    status: dict[str, str] = {}  # node -> added | removed | changed | risky
    flagged = {f.id for f in d.flags}
    by_step_new: dict[str, list[str]] = {}
    for iid, (sid, _) in new.instances.items():
        by_step_new.setdefault(sid, []).append(iid)
    by_step_old: dict[str, list[str]] = {}
    for iid, (sid, _) in old.instances.items():
        by_step_old.setdefault(sid, []).append(iid)
    for c in d.changes:
        if c.subject == "step" and c.kind == REMOVED:
            for iid in by_step_old.get(c.id, []):
                status.setdefault("old:" + iid, "removed")
        elif c.subject == "step":
            for iid in by_step_new.get(c.id, []):
                cls = "added" if c.kind == ADDED else "changed"
                status.setdefault(iid, cls)
        elif c.subject == "needs":
            status.setdefault(c.id, "changed")
        if len(status) >= MAX_GRAPH_NODES:
            break
    for node in list(status):
        sid = new.instances[node][0] if node in new.instances else ""
        if node in flagged or sid in flagged:
            status[node] = "risky"
    shown = dict.fromkeys(status)
    for node in list(status):
        if node in new.preds:
            shown.update(dict.fromkeys(new.preds[node]))
    names = {n: f"n{i}" for i, n in enumerate(shown)}
    lines = ["flowchart TD"]
    for n, nid in names.items():
        label = n[4:] if n.startswith("old:") else n
        lines.append(f'  {nid}["{_label(label)}"]')
    for n in names:
        if n.startswith("old:"):
            for p in old.preds[n[4:]]:
                src = d.instance_map.get(p) or "old:" + p
                if src in names:
                    lines.append(f"  {names[src]} -.-> {names[n]}")
        elif n in new.preds:
            for p in new.preds[n]:
                if p in names:
                    lines.append(f"  {names[p]} --> {names[n]}")
    lines += [
        "  classDef added fill:#e6ffed,stroke:#1a7f37",
        "  classDef removed fill:#ffebe9,stroke:#cf222e,stroke-dasharray:5 3",
        "  classDef changed fill:#fff8c5,stroke:#9a6700",
        "  classDef risky fill:#ffcecb,stroke:#cf222e,stroke-width:3px",
    ]
    for cls in ("added", "removed", "changed", "risky"):
        members = [names[n] for n, s in status.items() if s == cls]
        if members:
            lines.append(f"  class {','.join(members)} {cls}")
    return "\n".join(lines)


def markdown(d: Diff, limit: int = LIMIT) -> str:
    out = _Out(limit)
    _summary(d, out)
    if not d.changed:
        return out.text()
    if not _flags(d, out) or not _details(d, out):
        return out.text()
    graph = (
        "<details><summary>Graph of the changed part</summary>\n\n"
        "Green: added, red dashed: removed, yellow: changed, red: flagged, white: neighbours."
        f"\n\n```mermaid\n{mermaid(d)}\n```\n</details>"
    )
    if out.fits(graph, reserve=0):
        out.add(graph)
    else:
        out.add("(The graph of the changed part is left out: it would not fit.)")
    return out.text()
