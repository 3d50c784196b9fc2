"""Inline SVG for the HTML report: the timeline (a Gantt chart) and one chart per gate.

Plain SVG elements with ``<title>`` tooltips: no script, no external reference.  Bars are
filled with the status colours of ``graph_state.STYLES`` (a succeeded bar is ``#2f9e44``),
with ``shape-rendering="crispEdges"`` so that their colour is exact on screen and in print.
"""

from __future__ import annotations

from html import escape

from ..graph.colours import STYLES, style
from .model import Gate
from .timeline import Timeline, tick_label, ticks

LABEL_W = 220
PLOT_W = 760
WIDTH = LABEL_W + PLOT_W + 16
AXIS_H = 24
ROW_H = 18
BAR_H = 12
SECTION_H = 20
LANE_H = 5
GATE_LINE = "#0b7285"  # the gate charts' line: a colour no status uses
GATE_W, GATE_H = 300, 150


def e(text: object) -> str:
    return escape(str(text), quote=True)


def _short(text: str, limit: int = 34) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def gantt_svg(tl: Timeline) -> str:
    scale = PLOT_W / tl.end

    def x(t: float) -> float:
        return round(LABEL_W + max(0.0, t) * scale, 2)

    body: list[str] = []
    y = AXIS_H
    section = None
    for row in tl.rows:
        lanes = tl.grouped and row.section != "contingencies"  # a group's steps in lanes
        if row.section != section and not lanes:
            section = row.section
            body.append(
                f'<rect x="0" y="{y}" width="{WIDTH}" height="{SECTION_H}" fill="#f1f3f5"/>'
                f'<text x="6" y="{y + 14}" class="sec">{e(_short(section, 90))}</text>'
            )
            y += SECTION_H
        height = ROW_H if not lanes else max(2 * ROW_H, row.lanes * LANE_H + 8)
        if lanes:
            body.append(
                f'<rect x="0" y="{y}" width="{WIDTH}" height="{height}" class="band"/>'
                f'<text x="6" y="{y + 14}" class="sec"><title>{e(row.label)}</title>'
                f"{e(_short(row.label))}</text>"
                f'<text x="6" y="{y + 29}" class="tick-l">{len(row.bars):,} bars in '
                f"{row.lanes} lane(s)</text>"
            )
        else:
            body.append(
                f'<text x="14" y="{y + 13}" class="lbl"><title>{e(row.label)}</title>'
                f"{e(_short(row.label))}</text>"
            )
        for bar in row.bars:
            x0, x1 = x(bar.t0), x(bar.t1)
            w = max(1.0, round(x1 - x0, 2))
            if lanes:
                by, bh = y + 4 + bar.lane * LANE_H, LANE_H - 1
            else:
                by, bh = y + (ROW_H - BAR_H) // 2, BAR_H
            s = style(bar.status)
            if bar.kind == "waiting":
                paint = f'fill="{s.fill}" stroke="{s.strong}" stroke-width="1"'
            else:
                paint = f'fill="{s.strong}"'
            body.append(
                f'<rect x="{x0}" y="{by}" width="{w}" height="{bh}" {paint}>'
                f"<title>{e(bar.title)}</title></rect>"
            )
        for m in row.marks:
            mx, my = x(m.t), y + ROW_H // 2
            if m.kind == "retry":
                shape = f'<path d="M{mx} {my - 7}l-4 -4h8z" fill="#212529"/>'
            elif m.kind == "approval":
                shape = (
                    f'<path d="M{mx} {my - 6}l5 6l-5 6l-5 -6z" fill="{STYLES["waiting"].strong}"'
                    ' stroke="#fff"/>'
                )
            else:
                shape = f'<circle cx="{mx}" cy="{my}" r="3.5" fill="{STYLES["skipped"].strong}"/>'
            body.append(f'<g class="mark"><title>{e(m.text)}</title>{shape}</g>')
        y += height
    height = y + 6
    grid = []
    for t in ticks(tl.end):
        gx = x(t)
        grid.append(
            f'<line x1="{gx}" y1="{AXIS_H - 4}" x2="{gx}" y2="{height}" class="grid"/>'
            f'<text x="{gx}" y="{AXIS_H - 8}" class="tick">{e(tick_label(t, tl.end))}</text>'
        )
    return (
        f'<svg class="gantt" viewBox="0 0 {WIDTH} {height}"'
        f' width="{WIDTH}" height="{height}" role="img" aria-label="timeline of the run"'
        ' shape-rendering="crispEdges">' + "".join(grid) + "".join(body) + "</svg>"
    )


def legend_html(statuses: set[str]) -> str:
    items = []
    for st, s in STYLES.items():
        if st in statuses:
            items.append(
                f'<span class="key"><i style="background:{s.strong}"></i>{e(s.label)}</span>'
            )
    return "".join(items)


def gate_svg(g: Gate) -> str:
    """The gate's measurements in order, the threshold as a dashed line, failures in red."""
    ms = g.measurements
    pad_l, pad_r, pad_t, pad_b = 52, 12, 12, 26
    pw, ph = GATE_W - pad_l - pad_r, GATE_H - pad_t - pad_b
    values = [m.value for m in ms if m.value is not None]
    limits = values + ([g.threshold[1]] if g.threshold else [])
    lo, hi = (min(limits), max(limits)) if limits else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - (abs(lo) or 1) * 0.5, hi + (abs(hi) or 1) * 0.5
    span = hi - lo
    lo, hi = (0.0 if lo >= 0 else lo - span * 0.08), hi + span * 0.08  # rates: from zero

    def px(i: int) -> float:
        return round(pad_l + (pw * (i + 0.5) / max(len(ms), 1)), 2)

    def py(v: float) -> float:
        return round(pad_t + ph * (1 - (v - lo) / (hi - lo)), 2)

    out = [
        f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="#fff" stroke="#ced4da"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" class="ax" text-anchor="end">{hi:.3g}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + ph}" class="ax" text-anchor="end">{lo:.3g}</text>',
        f'<text x="{pad_l + pw / 2}" y="{GATE_H - 6}" class="ax" text-anchor="middle">'
        f"measurement 1 … {len(ms)}</text>",
    ]
    if g.threshold:
        op, value = g.threshold
        ty = py(value)
        out.append(
            f'<line x1="{pad_l}" y1="{ty}" x2="{pad_l + pw}" y2="{ty}" stroke="#e03131"'
            ' stroke-dasharray="5 4" stroke-width="1.5"/>'
            f'<text x="{pad_l + pw - 2}" y="{ty - 4}" class="ax thr" text-anchor="end">'
            f"{e(op)} {value:g}</text>"
        )
    points = [(i, m.value) for i, m in enumerate(ms) if m.value is not None]
    if len(points) > 1:
        pts = " ".join(f"{px(i)},{py(v)}" for i, v in points)
        out.append(
            f'<polyline points="{pts}" fill="none" stroke="{GATE_LINE}" stroke-width="2.5"/>'
        )
    for i, m in enumerate(ms):
        unsure = m.outcome == "inconclusive"
        key = "waiting" if unsure else ("succeeded" if m.passed else "failed")
        verdict = "inconclusive" if unsure else ("passed" if m.passed else "FAILED")
        why = f" ({m.reason})" if m.reason else ""
        shown = "no value" if m.value is None else f"{m.value:g}"
        # a measurement with no value sits on the axis
        y = py(m.value) if m.value is not None else pad_t + ph
        out.append(
            f'<circle cx="{px(i)}" cy="{y}" r="4" fill="{STYLES[key].strong}" stroke="#fff">'
            f"<title>#{m.index + 1} (series {m.series}) at {e(m.at)}: {e(shown)} {verdict}"
            f"{e(why)}</title></circle>"
        )
    if not ms:
        out.append(
            f'<text x="{pad_l + pw / 2}" y="{pad_t + ph / 2}" class="ax" text-anchor="middle">'
            "no measurement in this run</text>"
        )
    return (
        f'<svg class="gate" viewBox="0 0 {GATE_W} {GATE_H}"'
        f' width="{GATE_W}" height="{GATE_H}" role="img" aria-label="gate {e(g.step)}">'
        + "".join(out)
        + "</svg>"
    )
