"""The top of the report in plain sentences: what happened, where it hurt, what customers got.

Every renderer prints these three lists first; they are built from the report's own figures
only, so that the headline and the tables below it can never disagree.
"""

from __future__ import annotations

from collections import Counter

from ..format.durations import format_duration
from ..state.outcome import run_words
from .model import Report

_RUN_WORDS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "rolled_back": "was rolled back",
    "paused": "is paused, waiting for an approval or an operator's decision",
    "interrupted": "was interrupted (resumable)",
    "running": "is still running (or its process died: `status` tells)",
}
_ORDER = (
    "succeeded",
    "failed",
    "skipped",
    "waiting",
    "unknown",
    "running",
    "rolling_back",
    "rolled_back",
    "rollback_failed",
    "pending",
)
SHOWN = 3


def counts_text(counts: dict[str, int]) -> str:
    parts = [f"{counts[s]:,} {s.replace('_', ' ')}" for s in _ORDER if counts.get(s)]
    return ", ".join(parts) or "none"


def _more(items: list[str], total: int) -> list[str]:
    return items + ([f"… and {total - len(items)} more (below)"] if total > len(items) else [])


def _happened(rep: Report) -> list[str]:
    run = rep.run
    word = (
        run_words(run.status, run.compensated)
        if run.status == "succeeded"
        else _RUN_WORDS.get(run.status, run.status)
    )
    by = f" by {run.user}" if run.user else ""
    resumed = f", resumed {run.resumes} time(s)" if run.resumes else ""
    out = [
        f"Run {run.id} {word}: {format_duration(run.elapsed)} from start to last record "
        f"({format_duration(run.busy)} of it running steps), started {run.started}{by}{resumed}.",
        f"{sum(rep.counts.values()):,} steps: {counts_text(rep.counts)}.",
    ]
    if len(rep.waves) > 6:
        outcomes = Counter(w.outcome for w in rep.waves)
        odd = [f"{w.phase}.{w.wave} {w.outcome}" for w in rep.waves if w.outcome != "completed"]
        shown = ", ".join(odd[:6]) + (" …" if len(odd) > 6 else "")
        out.append(
            f"Waves: {len(rep.waves)}: "
            + ", ".join(f"{n} {what}" for what, n in outcomes.most_common())
            + (f" ({shown})" if odd else "")
            + "."
        )
    elif rep.waves:
        waves = [f"{w.phase}.{w.wave} {w.outcome}" for w in rep.waves]
        out.append("Waves: " + ", ".join(waves) + ".")
    return out


def _hurt(rep: Report) -> list[str]:
    out: list[str] = []
    failures = [f for f in rep.failures]
    if failures:
        shown = [
            f"{f.step} {'failed to roll back' if f.phase == 'rollback' else 'failed'}"
            f" (attempt {f.attempt}): {_first_line(f.error)}"
            for f in failures[:SHOWN]
        ]
        out.extend(_more(shown, len(failures)))
    if rep.retries:
        per = Counter(r.step for r in rep.retries)
        top, n = per.most_common(1)[0]
        out.append(
            f"{len(rep.retries)} retr{'y' if len(rep.retries) == 1 else 'ies'} on "
            f"{len(per)} step(s); most on {top} ({n})."
        )
    for w in rep.phases:
        for g in w.gates:
            bad = [m for m in g.measurements if m.outcome in ("", "failed") and not m.passed]
            unsure = [m for m in g.measurements if m.outcome == "inconclusive"]
            if g.status == "waiting":
                out.append(
                    f"gate {g.step} waits for a person: {len(unsure)} of "
                    f"{len(g.measurements)} measurement(s) inconclusive."
                )
            elif g.decisions and g.status == "succeeded":
                d = g.decisions[-1]
                out.append(f"gate {g.step} passed by the decision of {d.by} (inconclusive).")
            elif bad and g.status != "failed":  # a failed gate is among the failures above
                worst = max(bad, key=lambda m: abs(m.value or 0.0))
                out.append(
                    f"gate {g.step} passed, but {len(bad)} of {len(g.measurements)} "
                    f"measurement(s) failed `{g.condition}` (worst {worst.value:g})."
                )
    for c in rep.contingencies:
        out.append(
            f"contingency {c.id} fired for risk {c.risk} after {c.step} failed: {c.status}"
            + (f" ({_first_line(c.error)})" if c.error else "")
            + "."
        )
    undone = [r for r in rep.rollbacks if r.status == "rolled_back"]
    broken = [r for r in rep.rollbacks if r.status != "rolled_back"]
    if undone or broken:
        out.append(
            f"{len(undone)} step(s) rolled back"
            + (f", {len(broken)} not ({', '.join(r.step for r in broken[:5])})" if broken else "")
            + "."
        )
    waits = [a for a in rep.approvals if a.waited]
    if waits:
        longest = max(waits, key=lambda a: a.waited or 0.0)
        out.append(
            f"longest wait for an approval: {longest.step}, {format_duration(longest.waited or 0)}."
        )
    if rep.slowest:
        sid, secs = rep.slowest[0]
        out.append(f"slowest step: {sid} ({format_duration(secs)}).")
    if not (failures or rep.retries or rep.contingencies or rep.rollbacks):
        out.insert(0, "No failure, no retry, no contingency, no rollback.")
    return out


def _customers(rep: Report) -> list[str]:
    out: list[str] = []
    for co in rep.cohorts:
        out.append(co.summary + ("." if co.clean else " — NOT CLEAN:"))
        out.extend(f"{line}." for line in co.short)
        again = sum(f.compensated_in_run for f in co.funnel)
        if again:
            waves = ", ".join(f.wave for f in co.funnel if f.compensated_in_run)
            out.append(
                f"{again:,} {co.name} compensated in this run (wave {waves}): their wave was "
                "rolled back and they were pending again for its next attempt."
            )
        if co.late.count or co.vanished.count:
            out.append(
                f"{co.late.count:,} late (appeared after the draw), {co.vanished.count:,} vanished "
                "from the source."
            )
    moved = [w for w in rep.waves if w.wave and w.copies]
    if moved:
        tables: dict[str, int] = {}
        for w in moved:
            for c in w.copies:
                key = c.table or c.step
                tables[key] = tables.get(key, 0) + (c.rows_copied or 0)
        per_table = " · ".join(f"{t} {n:,}" for t, n in list(tables.items())[:8])
        per_wave = " · ".join(f"{w.wave} {w.customers_moved:,}" for w in moved[:12])
        out.append(
            f"{rep.customers_moved:,} rows moved in waves ({per_table}; by wave: {per_wave})."
        )
        back = sum(w.customers_moved_back for w in moved)
        if back:
            gone = [w.wave for w in moved if w.customers_moved_back]
            out.append(
                f"{back:,} moved back by rollback"
                + (f" (wave {', '.join(str(g) for g in gone)})" if gone else "")
                + "."
            )
    verifies = [v for p in rep.phases for v in p.verifies]
    if verifies:
        checked = sum(v.rows_checked or 0 for v in verifies)
        bad = sum(v.mismatches or 0 for v in verifies)
        out.append(f"{checked:,} rows verified, {bad:,} mismatch(es).")
    if rep.notifications:
        sent = sum(n.sent for n in rep.notifications)
        again = sum(n.skipped_already_sent for n in rep.notifications)
        unsure = sum(n.uncertain for n in rep.notifications)
        out.append(
            f"{sent:,} notification(s) sent, {again:,} skipped (already sent), "
            f"{unsure:,} uncertain."
        )
    if not out:
        out.append("No copy, verify or notify step ran in this run.")
    return out


def _first_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= 200 else line[:199] + "…"


def summarise(rep: Report) -> dict[str, list[str]]:
    return {"happened": _happened(rep), "hurt": _hurt(rep), "customers": _customers(rep)}
