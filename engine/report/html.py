"""The report as ONE self-contained HTML page: inline CSS, inline SVG, no script, no URL.

Every value from the runbook or the journal is escaped (``e``); markup made here is wrapped in
``Html`` so that it is not escaped again.  A Content-Security-Policy of ``default-src 'none'``
makes the browser refuse any script or fetch even if something slipped through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from .. import __version__
from ..graph.colours import style
from ..state.outcome import run_words
from .gates import (
    BASELINE_HEAD,
    DECISION_HEAD,
    WAITING_HEAD,
    baseline_rows,
    counted,
    decision_rows,
    every_gate,
    waiting_rows,
)
from .model import Report
from .sections import FUNNEL_HEAD, RISK_HEAD, funnel_rows, risk_rows, took
from .summary import counts_text
from .svg import e, gantt_svg, gate_svg, legend_html
from .timeline import build_timeline

OPEN_STEPS = 300  # past this many steps the step table is folded in a <details>

CSS = """
:root{--fg:#212529;--muted:#6c757d;--line:#dee2e6;--bg:#fff;--soft:#f8f9fa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:1060px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;
border-bottom:2px solid var(--line);padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:var(--muted);margin:2px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;
border:1px solid;font-size:13px}
.notice{background:#fff3bf;border-left:4px solid #f08c00;padding:8px 12px;margin:10px 0}
.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:12px;margin-top:12px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 14px;background:var(--soft)}
.card h3{margin:0 0 6px}.card ul{margin:0;padding-left:18px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
th{background:var(--soft)}td.n{text-align:right;font-variant-numeric:tabular-nums}
.none{color:var(--muted);font-style:italic}
pre{background:var(--soft);border:1px solid var(--line);padding:8px;overflow-x:auto;
font-size:12px;white-space:pre-wrap;word-break:break-word}
.chart{overflow-x:auto;border:1px solid var(--line);border-radius:6px;padding:4px}
svg.gantt{display:block;max-width:100%;height:auto}
svg text{font:11px system-ui,"DejaVu Sans",Arial,sans-serif;fill:#343a40}
svg text.sec{font-weight:600}svg text.tick,svg text.ax{fill:#6c757d;font-size:10px}
svg text.tick{text-anchor:middle}svg text.thr{fill:#e03131}
svg line.grid{stroke:#e9ecef;stroke-width:1}svg rect.band{fill:none;stroke:#f1f3f5}
svg text.tick-l{fill:#6c757d;font-size:10px}
.legend{margin:6px 0;font-size:12px}.key{margin-right:12px;white-space:nowrap}
.key i{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
.gates{display:flex;flex-wrap:wrap;gap:12px}
.gate-box{border:1px solid var(--line);border-radius:6px;padding:6px 8px}
.gate-box h4{margin:0 0 2px;font-size:13px}.gate-box p{margin:0 0 4px;font-size:12px}
footer{color:var(--muted);font-size:12px;margin-top:32px}
@media (max-width:800px){.cards{grid-template-columns:1fr}}
@media print{
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 main{max-width:none;padding:0}body{font-size:11px}
 .chart{overflow:visible;border:0}svg.gantt{width:100%}
 h2{break-after:avoid}table,.card,.gate-box,svg{break-inside:avoid}
 details{display:block}
}
"""


class Html(str):
    """Markup made here: not escaped again."""


def cell(value: object, numeric: bool = False) -> str:
    body = value if isinstance(value, Html) else e(value if value is not None else "")
    return f'<td class="n">{body}</td>' if numeric else f"<td>{body}</td>"


def table(head: list[str], rows: Iterable[Sequence[object]], numeric: tuple[int, ...] = ()) -> str:
    out = ["<table><thead><tr>", *(f"<th>{e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    count = 0
    for row in rows:
        count += 1
        out.append("<tr>" + "".join(cell(c, i in numeric) for i, c in enumerate(row)) + "</tr>")
    if not count:
        return '<p class="none">None.</p>'
    out.append("</tbody></table>")
    return "".join(out)


def badge(status: str) -> Html:
    key = {"rolled back": "rolled_back", "completed": "succeeded"}.get(status, status)
    s = style(key.replace(" ", "_"))
    return Html(
        f'<span class="badge" style="background:{s.fill};border-color:{s.strong}">'
        f"{e(status.replace('_', ' '))}</span>"
    )


def _n(v: int | None) -> str:
    return "—" if v is None else f"{v:,}"


# -- sections ---------------------------------------------------------------------------------
def _head(rep: Report) -> Iterator[str]:
    run = rep.run
    yield f"<h1>Run report: {e(rep.runbook)}</h1>"
    if rep.description or rep.owner:
        owner = f" — owner {e(rep.owner)}" if rep.owner else ""
        yield f'<p class="meta">{e(rep.description)}{owner}</p>'
    yield (
        f'<p class="meta">Run <b>{e(run.id)}</b> {badge(run.status)} · started {e(run.started)}'
        f" · last record {e(run.finished)} · elapsed <b>{e(took(run.elapsed))}</b>"
        f" · steps busy {e(took(run.busy))} · file {e(run.file or rep.file)}</p>"
    )
    if len(rep.runs) > 1:
        runs = ", ".join(f"{e(r['id'])} ({e(r['status'])})" for r in rep.runs)
        yield f'<p class="meta">Runs in this state: {runs}; pick one with <code>--run ID</code>.</p>'
    for note in rep.notices:
        yield f'<p class="notice"><b>Notice:</b> {e(note)}</p>'
    yield '<section class="cards">'
    for key, title in (
        ("happened", "What happened"),
        ("hurt", "Where it hurt"),
        ("customers", "What customers got"),
    ):
        items = "".join(f"<li>{e(line)}</li>" for line in rep.summary[key])
        yield f'<div class="card"><h3>{title}</h3><ul>{items}</ul></div>'
    yield "</section>"


def _timeline(rep: Report) -> Iterator[str]:
    tl = build_timeline(rep)
    yield "<h2>Timeline</h2>"
    seen = {b.status for r in tl.rows for b in r.bars}
    note = ""
    if tl.grouped:
        note = (
            f" {tl.steps:,} steps: one row per phase or wave, each step a bar in the first "
            "free lane (hover a bar for its step)."
        )
    yield (
        f'<p class="legend">{legend_html(seen)}<span class="key">▼ retry</span>'
        f'<span class="key">◆ approval</span><span class="key">● skipped</span>{e(note)}</p>'
    )
    if tl.rows:
        yield f'<div class="chart">{gantt_svg(tl)}</div>'
    else:
        yield '<p class="none">No step ran in this run.</p>'


def _waves(rep: Report) -> Iterator[str]:
    yield "<h2>Waves</h2>"
    rows: list[list[object]] = []
    for w in rep.waves:
        checked = sum(v.rows_checked or 0 for v in w.verifies)
        bad = sum(v.mismatches or 0 for v in w.verifies)
        rows.append(
            [
                f"{w.phase}.{w.wave}",
                badge(w.outcome),
                counts_text(w.counts),
                f"{w.customers_moved:,}" if w.copies else "—",
                f"{w.customers_moved_back:,}" if w.customers_moved_back else "—",
                f"{checked:,} ({bad:,} mismatches)" if w.verifies else "—",
                took(w.duration),
            ]
        )
    head = ["wave", "outcome", "steps", "rows moved", "moved back", "verified", "duration"]
    yield table(head, rows, numeric=(3, 4))
    gates = every_gate(rep)
    yield "<h3>Gates</h3>"
    if not gates:
        yield '<p class="none">None.</p>'
    else:
        yield '<div class="gates">'
        for g in gates:
            outcome = f" · {e(g.outcome)}" if g.outcome else ""
            yield (
                f'<div class="gate-box"><h4>{e(g.step)} {badge(g.status)}</h4>'
                f"<p><code>{e(g.condition)}</code> · {e(counted(g))} passed{outcome}</p>"
                f"{gate_svg(g)}</div>"
            )
        yield "</div>"
    baselines = baseline_rows(rep)
    if baselines:
        yield "<h4>Each measurement against its baseline</h4>"
        yield table(BASELINE_HEAD, baselines, numeric=(2, 3, 4, 5, 6))
    waiting = waiting_rows(rep)
    if waiting:
        yield "<h4>Waiting for a person's decision</h4>"
        yield table(WAITING_HEAD, waiting)
    decisions = decision_rows(rep)
    if decisions:
        yield "<h4>Decided by a person</h4>"
        yield table(DECISION_HEAD, decisions)
    yield "<h3>Phases</h3>"
    prow: list[list[object]] = [
        [p.phase, badge(p.outcome), counts_text(p.counts), took(p.duration)] for p in rep.phases
    ]
    yield table(["phase", "outcome", "steps", "duration"], prow)
    for v in (v for p in rep.phases for v in p.verifies if v.first_differences):
        yield f"<p>First differences found by {e(v.step)}: <code>{e(v.first_differences)}</code></p>"


def _keys(keys: list[object]) -> str:
    return ", ".join(str(k) for k in keys)


def _clean(clean: bool) -> Html:
    s = style("succeeded" if clean else "failed")
    return Html(
        f'<span class="badge" style="background:{s.fill};border-color:{s.strong}">'
        f"{'clean' if clean else 'not clean'}</span>"
    )


def _cohorts(rep: Report) -> Iterator[str]:
    yield "<h2>Customers</h2>"
    for c in rep.cohorts:
        yield f"<h3>Cohort {e(c.name)}</h3>"
        yield (
            f"<p>{e(c.summary)} {_clean(c.clean)}"
            f'<span class="meta"> · drawn {e(c.frozen_at)} · the ledger as it stands now</span></p>'
        )
        for line in c.short:
            yield f'<p class="notice"><b>Not clean:</b> {e(line)}</p>'
        head, rows = FUNNEL_HEAD, funnel_rows(c.funnel, _n)
        yield table(head, rows, numeric=tuple(range(1, 12)))
        yield "<p>Excluded (never moved), by reason:</p>"
        yield table(
            ["reason", "entities", "first keys"],
            [[x.what, _n(x.count), _keys(x.first)] for x in c.excluded],
            numeric=(1,),
        )
        yield "<p>Late (appeared after the draw) and vanished (gone from the source before moving):</p>"
        yield table(
            ["", "entities", "first keys"],
            [[x.what, _n(x.count), _keys(x.first)] for x in (c.late, c.vanished)],
            numeric=(1,),
        )
        if c.reconciled:
            yield "<p>Compared with the source by the applies of this run:</p>"
            yield table(
                ["at", "late", "vanished", "first late keys", "first vanished keys"],
                [
                    [
                        r.at,
                        _n(r.late),
                        _n(r.vanished),
                        _keys(list(r.late_keys)),
                        _keys(list(r.vanished_keys)),
                    ]
                    for r in c.reconciled
                ],
                numeric=(1, 2),
            )


def _trouble(rep: Report) -> Iterator[str]:
    yield "<h2>Failures and retries</h2>"
    frows = [[f.step, f.phase, f.attempt, f.at, f.error] for f in rep.failures]
    yield table(["step", "during", "attempt", "at", "error"], frows, numeric=(2,))
    for f in rep.failures[:20]:
        if f.details.strip():
            tail = "\n".join(f.details.splitlines()[-30:])
            yield f"<p>Output of {e(f.step)} (attempt {f.attempt}):</p><pre>{e(tail)}</pre>"
    rrows = [[r.step, r.attempt, r.at, took(r.delay), r.error] for r in rep.retries]
    yield "<h3>Retries</h3>"
    head = ["retried step", "attempt", "at", "after", "error of the attempt before"]
    yield table(head, rrows, numeric=(1,))
    yield "<h2>Contingencies fired</h2>"
    crows = [
        [c.id, c.risk, c.step, c.action, badge(c.status), c.started, took(c.duration), c.error]
        for c in rep.contingencies
    ]
    head = ["contingency", "risk", "after failure of", "action", "outcome", "started"]
    yield table([*head, "duration", "error"], crows)
    yield "<h2>Approvals</h2>"
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
    yield table(["step", "by", "on behalf of", "at", "waited", "comment"], arows)
    yield "<h2>Rollbacks</h2>"
    brows = [
        [
            r.step,
            badge(r.status),
            r.at,
            took(r.duration),
            r.error or r.note or "",
            ", ".join(f"{k}={v}" for k, v in r.outputs.items() if not isinstance(v, dict | list)),
        ]
        for r in rep.rollbacks
    ]
    yield table(["step", "outcome", "at", "duration", "note or error", "outputs"], brows)


def _rest(rep: Report) -> Iterator[str]:
    yield "<h2>Notifications</h2>"
    nrows = [
        [
            x.step,
            x.kind,
            badge(x.status),
            _n(x.sent),
            _n(x.skipped_already_sent),
            _n(x.uncertain),
            ", ".join(x.uncertain_recipients),
        ]
        for x in rep.notifications
    ]
    head = ["step", "kind", "status", "sent", "skipped (already sent)", "uncertain"]
    yield table([*head, "uncertain recipients"], nrows, numeric=(3, 4, 5))
    yield "<h2>Risk register</h2>"
    yield table(RISK_HEAD, risk_rows(rep, badge("failed")))
    yield "<h2>Slowest steps</h2>"
    yield table(["step", "duration"], [[s, took(d)] for s, d in rep.slowest])
    yield "<h2>Steps</h2>"
    rows = [
        [
            s.id,
            s.phase or "?",
            s.wave or "",
            s.action,
            badge(s.status),
            s.attempts,
            took(s.duration),
            s.error or "",
        ]
        for s in rep.steps
    ]
    head = ["step", "phase", "wave", "action", "status", "attempts", "duration", "error"]
    body = table(head, rows, numeric=(5,))
    if len(rep.steps) > OPEN_STEPS:
        yield f"<details><summary>All {len(rep.steps):,} steps</summary>{body}</details>"
    else:
        yield body


def render_html(rep: Report) -> str:
    title = (
        f"Run report: {rep.runbook} — run {rep.run.id} "
        f"({run_words(rep.run.status, rep.run.compensated)})"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>",
        *_head(rep),
        *_timeline(rep),
        *(_cohorts(rep) if rep.cohorts else ()),
        *_waves(rep),
        *_trouble(rep),
        *_rest(rep),
        f"<footer>Made by runbook {e(__version__)} report from the journal of "
        f"{e(rep.runbook)}; every value in it was masked when it was written.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"
