"""The customers' part of a report (SPEC §7 "Report"): per cohort, the per-wave funnel from the
ledger's current states and the reported run's transitions, the excluded entities by reason,
the late and vanished ones with their first keys, and what each apply of the run found when it
compared the cohort with its source (the journal's ``reconciled`` records).

Read-only and set-wise: a handful of GROUP BYs per cohort, whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..format.model import Runbook
from ..state import dialect, journeys, ledger
from ..state.db import Database
from ..state.outcome import cohort_outcomes
from ..state.status import State
from .model import CohortReport, Funnel, KeyedCount, Reconciliation

LISTED = 10


def _first(
    db: Database, cohort: str, waves: Sequence[str | None], state: str, count: int
) -> list[Any]:
    keys: list[Any] = []
    if not count:
        return keys
    for w in waves:  # one index seek per wave: (cohort, wave, state); `+key`: not the PK's order
        where = "wave IS NULL" if w is None else "wave = ?"
        args = (cohort, state) if w is None else (cohort, w, state)
        sql = f"SELECT key FROM entity WHERE cohort = ? AND {where} AND state = ?"
        order = dialect.exact(db, "key")
        keys.extend(k for (k,) in db.query(f"{sql} ORDER BY {order} LIMIT {LISTED}", args))
    return sorted(keys, key=lambda k: (type(k).__name__, k))[:LISTED]


def _excluded(db: Database, cohort: str) -> list[KeyedCount]:
    rows = db.query(
        "SELECT reason, n, key FROM (SELECT reason, count(*) OVER (PARTITION BY reason) AS n,"
        " key, row_number() OVER (PARTITION BY reason ORDER BY key) AS i FROM entity"
        " WHERE cohort = ? AND wave IS NULL AND state = 'excluded') AS x WHERE i <= ?"
        " ORDER BY n DESC, reason, i",
        (cohort, LISTED),
    )
    out: dict[str, KeyedCount] = {}
    for reason, n, key in rows:
        what = str(reason or "")
        out.setdefault(what, KeyedCount(what, int(n), [])).first.append(key)
    return list(out.values())


def _in_run(db: Database, cohort: str, run: str) -> dict[tuple[str | None, str], int]:
    rows = db.query(
        "SELECT e.wave, t.state, count(DISTINCT t.key) FROM transition t JOIN entity e"
        " ON e.cohort = t.cohort AND e.key = t.key WHERE t.cohort = ? AND t.run = ?"
        " AND t.state IN ('failed', 'compensated') GROUP BY e.wave, t.state",
        (cohort, run),
    )
    return {(w, str(s)): int(n) for w, s, n in rows}


def _told(db: Database, cohort: str, wave: str, attempt: int) -> int:
    rows = db.query(
        "SELECT count(DISTINCT m.key) FROM message m JOIN entity e ON e.cohort = m.cohort"
        " AND e.key = m.key WHERE m.cohort = ? AND e.wave = ? AND m.attempt = ?"
        " AND m.state = 'sent' AND m.step NOT LIKE '%#rollback'",
        (cohort, wave, attempt),
    )
    return int(rows[0][0]) if rows else 0


def funnel(
    db: Database, cohort: str, waves: list[str], state: State, run: str
) -> tuple[list[Funnel], dict[str, int]]:
    """Per wave, in draw order; and the cohort's counts by state."""
    table: dict[str | None, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for w, s, n in ledger.counts(db, cohort):
        table.setdefault(w, {})[s] = n
        totals[s] = totals.get(s, 0) + n
    order = list(waves) + sorted(str(w) for w in table if w is not None and w not in waves)
    in_run = _in_run(db, cohort, run)
    out = []
    for w in order:
        c = table.get(w, {})
        at = state.attempts.get((cohort, w))

        def reached(s: str, c: dict[str, int] = c) -> int:
            return sum(c.get(x, 0) for x in ledger.ORDER[ledger.ORDER.index(s) :])

        out.append(
            Funnel(
                wave=w,
                attempts=at.attempt if at is not None else 0,
                members=sum(c.values()),
                # told for real: a message sent in the wave's current attempt (a member moved
                # without a message, unreachable, is not counted as told)
                notified=_told(db, cohort, w, at.attempt) if at is not None else 0,
                moved=reached("moved"),
                verified=c.get("verified", 0),
                failed=c.get("failed", 0),
                compensated=c.get("compensated", 0),
                pending=c.get("pending", 0),
                vanished=c.get("vanished", 0),
                failed_in_run=in_run.get((w, "failed"), 0),
                compensated_in_run=in_run.get((w, "compensated"), 0),
            )
        )
    return out, totals


def reconciled(run_recs: list[dict[str, Any]], cohort: str) -> list[Reconciliation]:
    return [
        Reconciliation(
            str(r.get("at", "")),
            int(r.get("late") or 0),
            int(r.get("vanished") or 0),
            [str(k) for k in r.get("late_keys") or []],
            [str(k) for k in r.get("vanished_keys") or []],
        )
        for r in run_recs
        if r.get("t") == "cohort" and r.get("event") == "reconciled" and r.get("cohort") == cohort
    ]


def cohort_reports(
    rb: Runbook, state: State, db: Database | None, run: str, run_recs: list[dict[str, Any]]
) -> list[CohortReport]:
    """Every frozen cohort of the runbook (none when the ledger has none)."""
    out: list[CohortReport] = []
    if db is None:
        return out
    outcomes = {o.cohort: o for o in cohort_outcomes(rb, state, db)}
    for name in rb.cohorts:
        got = ledger.frozen(db, name)
        o = outcomes.get(name)
        if got is None or o is None:
            continue
        waves = journeys.wave_order(got)
        rows, totals = funnel(db, name, waves, state, run)
        every: list[str | None] = [*(r.wave for r in rows), None]
        late, gone = totals.get("late", 0), totals.get("vanished", 0)
        out.append(
            CohortReport(
                name=name,
                frozen_at=got.frozen_at,
                summary=o.line,
                total=o.total,
                clean=not o.short,
                short=[s.text(name) for s in o.short],
                funnel=rows,
                excluded=_excluded(db, name),
                late=KeyedCount("late", late, _first(db, name, [None], "late", late)),
                vanished=KeyedCount("vanished", gone, _first(db, name, every, "vanished", gone)),
                reconciled=reconciled(run_recs, name),
            )
        )
    return out
