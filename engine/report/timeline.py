"""The rows of the report's timeline (a Gantt chart), shared by the mermaid and SVG renderers.

Up to ``DETAIL_ROWS`` steps, each step has its own labelled row.  Past that (a run of thousands
of steps) each phase or wave is one row and its steps' bars are packed into lanes (a bar goes
to the first lane free at its start): every step is still drawn, the labels name the groups.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from .model import Mark, Report, StepRow

DETAIL_ROWS = 250


@dataclass
class Bar:
    t0: float
    t1: float
    status: str  # colours the bar: the status the span ended with
    kind: str  # apply | waiting | rollback
    title: str  # the tooltip
    lane: int = 0


@dataclass
class Row:
    label: str
    section: str
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    lanes: int = 1


@dataclass
class Timeline:
    rows: list[Row]
    end: float  # seconds after the run's start
    grouped: bool
    steps: int  # step rows drawn (detail) or steps packed (grouped)


def section_of(row: StepRow) -> str:
    if row.phase is None:
        return "(no longer in the runbook)"
    return f"{row.phase} · {row.wave}" if row.wave else row.phase


def _bars(row: StepRow) -> list[Bar]:
    out = []
    for s in row.spans:
        what = {"apply": "ran", "waiting": "waited", "rollback": "rolled back"}[s.kind]
        attempt = f", attempt {s.attempt}" if s.attempt and s.kind == "apply" else ""
        title = f"{row.id}: {what} {s.start} → {s.end}{attempt}: {s.status}"
        status = "waiting" if s.kind == "waiting" else s.status
        out.append(Bar(s.t0, s.t1, status, s.kind, title))
    return out


def build_timeline(rep: Report) -> Timeline:
    steps = [r for r in rep.steps if r.spans or r.marks]
    end = max(rep.run.elapsed, 0.001)
    if len(steps) <= DETAIL_ROWS:
        rows = [Row(r.id, section_of(r), _bars(r), r.marks) for r in steps]
        grouped = False
    else:
        by: dict[str, Row] = {}
        for r in steps:
            sec = section_of(r)
            row = by.setdefault(sec, Row(sec, sec))
            row.bars.extend(_bars(r))
            row.marks.extend(m for m in r.marks if m.kind != "skipped")
        rows = list(by.values())
        for row in rows:
            row.lanes = pack(row.bars)
        grouped = True
    for c in rep.contingencies:
        if c.span is not None:
            title = f"contingency {c.id} (risk {c.risk}, after {c.step}): {c.status}"
            bar = Bar(c.span.t0, c.span.t1, c.status, "apply", title)
            rows.append(Row(c.id, "contingencies", [bar]))
    return Timeline(rows, end, grouped, len(steps))


def pack(bars: list[Bar]) -> int:
    """Give each bar the first lane free at its start; returns the number of lanes."""
    free: list[tuple[float, int]] = []  # (lane's end, lane)
    lanes = 0
    for bar in sorted(bars, key=lambda b: (b.t0, b.t1)):
        if free and free[0][0] <= bar.t0:
            _, lane = heapq.heappop(free)
        else:
            lane = lanes
            lanes += 1
        bar.lane = lane
        heapq.heappush(free, (bar.t1, lane))
    return max(lanes, 1)


def ticks(end: float, target: int = 8) -> list[float]:
    """Round tick positions from 0 to ``end`` seconds (1-2-5 steps)."""
    if end <= 0:
        return [0.0]
    raw = end / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    for nice in (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if raw > 10 and nice >= raw:
            step = float(nice)
            break
    n = int(end / step + 1e-9)
    return [round(i * step, 6) for i in range(n + 1)]


def tick_label(t: float, end: float) -> str:
    """``+1:05`` (minutes:seconds), ``+1:02:00`` past an hour, ``+250ms`` under two seconds."""
    if end < 2:
        return f"+{round(t * 1000)}ms"
    s = round(t)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"+{h}:{m:02d}:{sec:02d}" if end >= 3600 else f"+{m}:{sec:02d}"
