"""The gates' part of a report, shared by the Markdown and HTML renderers: each measurement
against its baseline per wave (cohort gates: value, baseline, n, n_baseline, outcome), the gates
that wait for a person with their measurements, and the decisions people made on them."""

from __future__ import annotations

from ..format.gates import measurements_text, number
from .model import Gate, Measurement, Report

_MARK = {"failed": " ✗", "inconclusive": " ?"}


def every_gate(rep: Report) -> list[Gate]:
    return [g for p in rep.phases for g in p.gates]


def measured(m: Measurement) -> str:
    """``0.04 ✗``, ``0.01``, ``— ?`` (no number: inconclusive)."""
    outcome = m.outcome or ("passed" if m.passed else "failed")
    return f"{'—' if m.value is None else f'{m.value:g}'}{_MARK.get(outcome, '')}"


def counted(g: Gate) -> str:
    """``2/3`` passed; ``, 1 inconclusive`` when some were."""
    passed = sum(m.passed for m in g.measurements)
    unsure = sum(m.outcome == "inconclusive" for m in g.measurements)
    return f"{passed}/{len(g.measurements)}" + (f", {unsure} inconclusive" if unsure else "")


def values_range(g: Gate) -> str:
    values = [m.value for m in g.measurements if m.value is not None]
    return f"{min(values):g} … {max(values):g}" if values else "—"


BASELINE_HEAD = ["wave", "gate", "#", "value", "baseline", "n", "n_baseline", "outcome"]


def baseline_rows(rep: Report) -> list[list[object]]:
    """One row per measurement of a cohort gate, in wave order."""
    rows: list[list[object]] = []
    for w in rep.waves:
        for g in w.gates:
            if not g.cohort:
                continue
            for m in g.measurements:
                outcome = m.outcome or ("passed" if m.passed else "failed")
                of = f" ({m.baseline_of})" if m.baseline_of else ""
                rows.append(
                    [
                        f"{w.phase}.{w.wave}",
                        g.step,
                        f"{m.index + 1}" + (f" (attempt {m.attempt})" if m.attempt > 1 else ""),
                        number(m.value),
                        number(m.baseline) + of,
                        number(m.n),
                        number(m.n_baseline),
                        outcome + (f": {m.reason}" if m.reason else ""),
                    ]
                )
    return rows


WAITING_HEAD = ["gate", "waits on", "measurements", "decided"]


def waiting_rows(rep: Report) -> list[list[object]]:
    """Each gate that waits for a person, with its measurements and any decision made."""
    rows: list[list[object]] = []
    for g in every_gate(rep):
        if g.status != "waiting":
            continue
        last = g.decisions[-1] if g.decisions else None
        series = [m for m in g.measurements if m.series == max(x.series for x in g.measurements)]
        shown = measurements_text(_as_record(m, g.cohort) for m in series)
        rows.append(
            [
                g.step,
                (g.waiting or "").split(": #", 1)[0],
                shown or "—",
                f"{last.decision} by {last.by} at {last.at}: the next apply goes on"
                if last
                else "not yet: `runbook approve` passes it, `runbook resolve --as failed` fails it",
            ]
        )
    return rows


def _as_record(m: Measurement, cohort: bool) -> dict[str, object]:
    """A measurement as the check action recorded it (``format/gates.py``)."""
    out: dict[str, object] = {
        "index": m.index,
        "value": m.value,
        "outcome": m.outcome,
        "reason": m.reason,
    }
    if cohort:
        out.update(n=m.n, n_baseline=m.n_baseline, baseline=m.baseline, baseline_of=m.baseline_of)
    return out


DECISION_HEAD = ["gate", "decision", "by", "on behalf of", "comment", "at", "on measurements"]


def decision_rows(rep: Report) -> list[list[object]]:
    return [
        [d.step, d.decision, d.by, d.on_behalf_of or "—", d.comment or "—", d.at, d.measurements]
        for g in every_gate(rep)
        for d in g.decisions
    ]
