"""The report as Markdown: the summary, a mermaid ``gantt`` timeline, then tables.

Everything that comes from the runbook or the journal goes through ``md`` (or into a fenced
block whose fence is longer than any backtick run inside), so that an error message holding
``|``, ``<script>`` or a newline can neither break a table nor inject HTML into a rendered page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

from ..state.outcome import run_words
from .gates import (
    BASELINE_HEAD,
    DECISION_HEAD,
    WAITING_HEAD,
    baseline_rows,
    counted,
    decision_rows,
    every_gate,
    measured,
    values_range,
    waiting_rows,
)
from .model import Report, StepRow
from .sections import FUNNEL_HEAD, RISK_HEAD, funnel_rows, risk_rows, took
from .summary import counts_text
from .timeline import build_timeline

STEP_TABLE_ROWS = 300
MERMAID_TASKS = 250
_SPECIAL = re.compile(r"([\\`*_\[\]#|~!{}])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_GANTT_WORDS = re.compile(
    r"^(title|section|dateformat|axisformat|tickinterval|excludes|includes|todaymarker|"
    r"weekday|inclusiveenddates|topaxis|acctitle|accdescr|click)\b",
    re.IGNORECASE,
)


def visible(text: str) -> str:
    """Control characters (ESC, a bell, C1 codes) as their Unicode pictures: a terminal or a
    page shows them, never obeys them. Line breaks and tabs are kept."""
    return _CONTROL.sub(
        lambda m: chr(0x2400 + ord(m.group())) if m.group() < " " else "\ufffd", text
    )


def md(value: object) -> str:
    """Plain text safe in a Markdown paragraph or table cell: no markup, no HTML, no
    ``@mention`` (a zero-width space after the ``@``: the report is pasted into PRs and chats)."""
    text = visible(str(value if value is not None else ""))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SPECIAL.sub(r"\\\1", text).replace("@", "@\u200b")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def fenced(text: str, lang: str = "") -> str:
    text = visible(text)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


class Raw(str):
    """Markdown made here (not from the runbook or the journal): not escaped again."""


def table(head: list[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells = (c if isinstance(c, Raw) else md(c) for row in rows for c in row)
    width = len(head)
    flat = list(cells)
    for i in range(0, len(flat), width):
        out.append("| " + " | ".join(flat[i : i + width]) + " |")
    return out if len(out) > 2 else ["None."]


def n(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


# -- the timeline -----------------------------------------------------------------------------
def _mm_text(text: str) -> str:
    text = re.sub(r"[:#;\n\r]", " ", text).strip() or "?"
    return f"step {text}" if _GANTT_WORDS.match(text) else text


def _tags(status: str, kind: str) -> str:
    if kind == "rollback":
        return "crit, " if status != "rolled_back" else "done, "
    return {
        "succeeded": "done, ",
        "failed": "crit, ",
        "rollback_failed": "crit, ",
        "running": "active, ",
        "waiting": "active, ",
    }.get(status, "")


def gantt(rep: Report) -> list[str]:
    tl = build_timeline(rep)
    base = datetime.fromisoformat(rep.run.started).astimezone(UTC)

    def at(t: float) -> str:
        d = base + timedelta(seconds=t)
        return d.strftime("%Y-%m-%d %H:%M:%S.") + f"{d.microsecond // 1000:03d}"

    out = [
        "gantt",
        f"  title {_mm_text('run ' + rep.run.id)} (UTC)",
        "  dateFormat YYYY-MM-DD HH:mm:ss.SSS",
        "  axisFormat %H:%M:%S",
    ]
    tasks = sum(len(r.bars) for r in tl.rows)
    grouped = tl.grouped or tasks > MERMAID_TASKS
    section = None
    for row in tl.rows:
        sec = "contingencies" if row.section == "contingencies" else row.section
        if grouped and sec != "contingencies" and row.bars:
            sec = "steps by phase and wave"
        if sec != section:
            out.append(f"  section {_mm_text(sec)}")
            section = sec
        if grouped and row.section != "contingencies":
            bars = row.bars
            if not bars:
                continue
            t0, t1 = min(b.t0 for b in bars), max(b.t1 for b in bars)
            worst = next((b.status for b in bars if b.status in ("failed", "rollback_failed")), "")
            label = f"{row.section} ({len({b.title.split(':')[0] for b in bars})} steps)"
            tag = _tags(worst or "succeeded", "apply")
            out.append(f"  {_mm_text(label)} :{tag}{at(t0)}, {at(max(t1, t0 + 0.001))}")
            continue
        for bar in row.bars:
            label = row.label
            if bar.kind == "waiting":
                label += " (waiting)"
            elif bar.kind == "rollback":
                label = "undo " + label
            tag = _tags(bar.status, bar.kind)
            out.append(f"  {_mm_text(label)} :{tag}{at(bar.t0)}, {at(max(bar.t1, bar.t0 + 0.001))}")
    return out


# -- sections ---------------------------------------------------------------------------------
def _head(rep: Report) -> Iterator[str]:
    run = rep.run
    yield f"# Run report: {md(rep.runbook)}"
    yield ""
    about = [md(x) for x in (rep.description, f"owner: {rep.owner}" if rep.owner else "") if x]
    if about:
        yield " — ".join(about)
        yield ""
    yield (
        f"**Run {md(run.id)}: {md(run_words(run.status, run.compensated))}** · started "
        f"{md(run.started)}"
        f" · last record {md(run.finished)} · elapsed {took(run.elapsed)}"
        f" · steps busy {took(run.busy)} · file {md(run.file or rep.file)}"
    )
    if len(rep.runs) > 1:
        others = ", ".join(f"{md(r['id'])} ({md(r['status'])})" for r in rep.runs)
        yield ""
        yield f"Runs in this state: {others}; pick one with `--run ID`."
    for note in rep.notices:
        yield ""
        yield f"> **Notice:** {md(note)}"
    yield ""
    yield "## Summary"
    for key, title in (
        ("happened", "What happened"),
        ("hurt", "Where it hurt"),
        ("customers", "What customers got"),
    ):
        yield ""
        yield f"**{title}**"
        yield ""
        yield from (f"- {md(line)}" for line in rep.summary[key])


def _waves(rep: Report) -> Iterator[str]:
    yield "## Waves"
    yield ""
    rows = []
    for w in rep.waves:
        checked = sum(v.rows_checked or 0 for v in w.verifies)
        bad = sum(v.mismatches or 0 for v in w.verifies)
        passed = ", ".join(f"{g.step} {counted(g)}" for g in w.gates)
        rows.append(
            [
                f"{w.phase}.{w.wave}",
                w.outcome,
                counts_text(w.counts),
                f"{w.customers_moved:,}" if w.copies else "—",
                f"{w.customers_moved_back:,}" if w.customers_moved_back else "—",
                f"{checked:,} ({bad:,} mismatches)" if w.verifies else "—",
                passed or "—",
                took(w.duration),
            ]
        )
    head = ["wave", "outcome", "steps", "rows moved", "moved back", "verified", "gates"]
    yield from table([*head, "duration"], rows)
    yield ""
    yield "### Gates"
    yield ""
    grows = []
    for g in every_gate(rep):
        shown = ", ".join(measured(m) for m in g.measurements[:20])
        more = " …" if len(g.measurements) > 20 else ""
        grows.append(
            [
                g.step,
                g.condition,
                g.status,
                counted(g),
                values_range(g),
                shown + more or "—",
                g.outcome or "—",
            ]
        )
    head = ["gate", "condition", "status", "passed", "range", "values (✗ failed, ? inconclusive)"]
    yield from table([*head, "outcome"], grows)
    yield ""
    baselines = baseline_rows(rep)
    if baselines:
        yield "#### Each measurement against its baseline"
        yield ""
        yield from table(BASELINE_HEAD, baselines)
        yield ""
    waiting = waiting_rows(rep)
    if waiting:
        yield "#### Waiting for a person's decision"
        yield ""
        yield from table(WAITING_HEAD, waiting)
        yield ""
    decisions = decision_rows(rep)
    if decisions:
        yield "#### Decided by a person"
        yield ""
        yield from table(DECISION_HEAD, decisions)
        yield ""
    yield "### Phases"
    yield ""
    prow = [[p.phase, p.outcome, counts_text(p.counts), took(p.duration)] for p in rep.phases]
    yield from table(["phase", "outcome", "steps", "duration"], prow)
    verifies = [v for p in rep.phases for v in p.verifies if v.first_differences]
    for v in verifies:
        yield ""
        yield f"First differences found by {md(v.step)}: {md(v.first_differences)}"


def _keys(keys: list[object]) -> str:
    return ", ".join(str(k) for k in keys)


def _cohorts(rep: Report) -> Iterator[str]:
    yield "## Customers"
    for c in rep.cohorts:
        yield ""
        yield f"### Cohort {md(c.name)}"
        yield ""
        yield f"{md(c.summary)} · drawn {md(c.frozen_at)} · the ledger as it stands now."
        for line in c.short:
            yield ""
            yield f"**Not clean:** {md(line)}"
        yield ""
        head, rows = FUNNEL_HEAD, funnel_rows(c.funnel, n)
        yield from table(head, rows)
        yield ""
        yield "Excluded (never moved), by reason:"
        yield ""
        yield from table(
            ["reason", "entities", "first keys"],
            [[x.what, n(x.count), _keys(x.first)] for x in c.excluded],
        )
        yield ""
        yield "Late (appeared after the draw) and vanished (gone from the source before moving):"
        yield ""
        yield from table(
            ["", "entities", "first keys"],
            [[x.what, n(x.count), _keys(x.first)] for x in (c.late, c.vanished)],
        )
        if c.reconciled:
            yield ""
            yield "Compared with the source by the applies of this run:"
            yield ""
            yield from table(
                ["at", "late", "vanished", "first late keys", "first vanished keys"],
                [
                    [
                        r.at,
                        n(r.late),
                        n(r.vanished),
                        _keys(list(r.late_keys)),
                        _keys(list(r.vanished_keys)),
                    ]
                    for r in c.reconciled
                ],
            )


def _trouble(rep: Report) -> Iterator[str]:
    yield "## Retries and failures"
    yield ""
    frows = [[f.step, f.phase, f.attempt, f.at, f.error] for f in rep.failures]
    yield from table(["step", "during", "attempt", "at", "error"], frows)
    for f in rep.failures[:20]:
        if f.details.strip():
            yield ""
            yield f"Output of {md(f.step)} (attempt {f.attempt}):"
            yield ""
            yield fenced("\n".join(f.details.splitlines()[-30:]))
    yield ""
    rrows = [[r.step, r.attempt, r.at, took(r.delay), r.error] for r in rep.retries]
    yield from table(
        ["retried step", "attempt", "at", "after", "error of the attempt before"], rrows
    )
    yield ""
    yield "## Contingencies fired"
    yield ""
    crows = [
        [c.id, c.risk, c.step, c.action, c.status, c.started, took(c.duration), c.error or ""]
        for c in rep.contingencies
    ]
    head = ["contingency", "risk", "after failure of", "action", "outcome", "started"]
    yield from table([*head, "duration", "error"], crows)
    yield ""
    yield "## Approvals"
    yield ""
    arows = [
        [
            a.step,
            a.by,
            a.on_behalf_of or "—",
            a.at,
            took(a.waited),
            a.comment + (f" (void: {a.void})" if a.void else ""),
        ]
        for a in rep.approvals
    ]
    yield from table(["step", "by", "on behalf of", "at", "waited", "comment"], arows)
    yield ""
    yield "## Rollbacks"
    yield ""
    brows = [
        [r.step, r.status, r.at, took(r.duration), r.error or r.note or "", _undo(r.outputs)]
        for r in rep.rollbacks
    ]
    yield from table(["step", "outcome", "at", "duration", "note or error", "outputs"], brows)


def _undo(outputs: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in outputs.items() if not isinstance(v, (dict, list)))


def _rest(rep: Report) -> Iterator[str]:
    yield "## Notifications"
    yield ""
    nrows = [
        [
            x.step,
            x.kind,
            x.status,
            f"{x.sent:,}",
            f"{x.skipped_already_sent:,}",
            f"{x.uncertain:,}",
            ", ".join(x.uncertain_recipients),
        ]
        for x in rep.notifications
    ]
    head = ["step", "kind", "status", "sent", "skipped (already sent)", "uncertain"]
    yield from table([*head, "uncertain recipients"], nrows)
    yield ""
    yield "## Risk register"
    yield ""
    yield from table(RISK_HEAD, risk_rows(rep, Raw("**yes**")))
    yield ""
    yield "## Slowest steps"
    yield ""
    yield from table(["step", "duration"], [[s, took(d)] for s, d in rep.slowest])
    yield ""
    yield from _steps(rep.steps)


def _steps(steps: list[StepRow]) -> Iterator[str]:
    yield "## Steps"
    yield ""
    shown = steps
    if len(steps) > STEP_TABLE_ROWS:
        shown = [s for s in steps if s.status not in ("succeeded", "pending") or s.error]
        shown = shown[:STEP_TABLE_ROWS]
        yield (
            f"{len(steps):,} steps: the {len(shown):,} that did not simply succeed are listed "
            "(`--format json` or `--format html` has every step)."
        )
        yield ""
    rows = [
        [
            s.id,
            s.phase or "?",
            s.wave or "",
            s.action,
            s.status + ("" if s.this_run or s.status == "pending" else " (earlier run)"),
            s.attempts,
            took(s.duration),
            s.error or "",
        ]
        for s in shown
    ]
    yield from table(
        ["step", "phase", "wave", "action", "status", "attempts", "duration", "error"], rows
    )


def render_markdown(rep: Report) -> str:
    lines = list(_head(rep))
    lines += ["", "## Timeline", "", fenced("\n".join(gantt(rep)), "mermaid"), ""]
    if rep.cohorts:
        lines += [*_cohorts(rep), ""]
    lines += list(_waves(rep))
    lines.append("")
    lines += list(_trouble(rep))
    lines.append("")
    lines += list(_rest(rep))
    return "\n".join(lines) + "\n"
