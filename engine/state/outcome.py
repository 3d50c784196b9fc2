"""What a run's outcome says of its entities (SPEC §7 "Outcome", §11): per cohort, how many
are in each state ("20,000 customers: 19,980 verified, 20 excluded (no-contact), 0 failed,
0 pending"), and each finished wave whose members are not all at the highest state its
steps mark (the run is then not clean: exit 1), with the count and the first keys.

A wave is finished when every step of it in a phase of the cohort succeeded or was skipped;
its target is the highest ``marks`` among the steps that succeeded in it. Members counted
against it: every member below the target, ``failed`` or ``compensated``. Excluded, late and
vanished entities are reported, never counted against a wave. Set-wise: a few GROUP BYs and
one indexed count per finished wave, whatever the number of entities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..format.model import Runbook, instance_id
from . import ledger
from .db import Database
from .outbox import has_outbox, scope
from .status import DONE, State, Status

LISTED = 10  # first keys named
DONE_TARGET = "done"  # a finished wave whose steps mark nothing: no member may be failed


@dataclass
class Short:
    """A finished wave with members below the state its steps mark."""

    wave: str
    target: str
    count: int
    first: list[Any]

    def text(self, cohort: str) -> str:
        keys = ", ".join(str(k) for k in self.first)
        more = ", …" if self.count > len(self.first) else ""
        return (
            f"cohort {cohort}, wave {self.wave}: {self.count:,} member(s) not {self.target} "
            f"(first: {keys}{more})"
        )


@dataclass
class CohortOutcome:
    cohort: str
    total: int
    states: dict[str, int]
    excluded: dict[str, int]  # reason -> count
    short: list[Short] = field(default_factory=list)

    @property
    def line(self) -> str:
        return sentence(self.cohort, self.total, self.states, self.excluded)

    def as_json(self) -> dict[str, Any]:
        return {
            "entities": self.total,
            "states": self.states,
            "excluded": self.excluded,
            "short": [
                {"wave": s.wave, "target": s.target, "count": s.count, "first_keys": s.first}
                for s in self.short
            ],
            "clean": not self.short,
            "summary": self.line,
        }


def sentence(noun: str, total: int, states: dict[str, int], excluded: dict[str, int]) -> str:
    """``20,000 customers: 19,980 verified, 20 excluded (no-contact), 0 failed, 0 pending``:
    verified, failed and pending always; the other states when there are any."""
    parts: list[str] = []
    for s in ("verified", "moved", "notified"):
        if s == "verified" or states.get(s):
            parts.append(f"{states.get(s, 0):,} {s}")
    n = states.get("excluded", 0)
    if n:
        reasons = sorted(excluded.items(), key=lambda kv: (-kv[1], kv[0]))
        many = ", ".join(f"{c:,} {r}" for r, c in reasons)
        why = reasons[0][0] if len(reasons) == 1 else many
        parts.append(f"{n:,} excluded ({why})" if why else f"{n:,} excluded")
    for s in ("late", "vanished", "compensated", "unknown"):
        if states.get(s):
            parts.append(f"{states[s]:,} {s}")
    parts.append(f"{states.get('failed', 0):,} failed")
    parts.append(f"{states.get('pending', 0):,} pending")
    return f"{total:,} {noun}: " + ", ".join(parts)


def state_counts(db: Database, cohort: str) -> tuple[dict[str, int], dict[str, int]]:
    """(state -> count, excluded reason -> count) of one cohort."""
    states: dict[str, int] = {}
    # grouped in the index's own order (cohort, wave, state): no sort of the cohort's rows
    for _wave, s, n in ledger.counts(db, cohort):
        states[s] = states.get(s, 0) + n
    excluded = {
        str(r or ""): int(n)
        for r, n in db.query(
            "SELECT reason, count(*) FROM entity WHERE cohort = ? AND wave IS NULL"
            " AND state = 'excluded' GROUP BY reason",
            (cohort,),
        )
    }
    return states, excluded


def targets(rb: Runbook, state: State, cohort: str) -> dict[str, str]:
    """wave -> the highest state the succeeded steps of its finished phases mark; a finished
    wave whose steps mark nothing -> ``done`` (its members must not be failed: SPEC §7, a
    member failed within ``max_failed`` leaves the run not clean)."""
    out: dict[str, str] = {}
    for phase in rb.phases:
        if phase.cohort != cohort:
            continue
        for wave in phase.waves:
            marked: list[str] = []
            finished = True
            for step in phase.steps:
                status = state.status_of(instance_id(step.id, wave.id))
                if status not in DONE:
                    finished = False
                    break
                if status is Status.SUCCEEDED and step.marks in ledger.ORDER:
                    marked.append(step.marks)
            if not finished:
                continue
            if not marked:
                out.setdefault(wave.id, DONE_TARGET)
                continue
            best = max(marked, key=ledger.ORDER.index)
            if out.get(wave.id, DONE_TARGET) == DONE_TARGET or ledger.ORDER.index(
                best
            ) > ledger.ORDER.index(out[wave.id]):
                out[wave.id] = best
    return out


def short_of(db: Database, cohort: str, wave: str, target: str) -> Short | None:
    if target == DONE_TARGET:  # nothing marked: only members that failed or were cut count
        below: tuple[str, ...] = ("failed", "unknown")
    else:
        below = (*ledger.ORDER[: ledger.ORDER.index(target)], "failed", "compensated", "unknown")
    where = f"cohort = ? AND wave = ? AND state IN ({', '.join('?' * len(below))})"
    args = (cohort, wave, *below)
    n = int(db.query(f"SELECT count(*) FROM entity WHERE {where}", args)[0][0])
    if not n:
        return None
    first = [k for (k,) in db.query(f"SELECT key FROM entity WHERE {where} LIMIT {LISTED}", args)]
    return Short(wave, target, n, first)


def untold_of(db: Database, cohort: str, wave: str, attempt: int) -> Short | None:
    """Members whose message of this attempt is uncertain (a send cut by a crash, never resent
    on its own) and that no send of the same step reached: nobody is left uninformed unsaid."""
    sql = (
        "SELECT DISTINCT m.key FROM message m WHERE m.cohort = ? AND m.attempt = ?"
        " AND m.state = 'uncertain' AND m.key IN (SELECT key FROM entity WHERE cohort = ?"
        " AND wave = ?) AND NOT EXISTS (SELECT 1 FROM message s WHERE s.cohort = m.cohort"
        " AND s.key = m.key AND s.step = m.step AND s.attempt = m.attempt AND s.state = 'sent')"
    )
    keys = [k for (k,) in db.query(sql, (cohort, attempt, cohort, wave))]
    if has_outbox(db):
        # the outbox keeps each message's delivery state (a send cut by a crash: uncertain)
        seen = {(type(k).__name__, k) for k in keys}
        table, mine, args = scope(db)
        keys += [
            k
            for (k,) in db.query(
                f"SELECT DISTINCT o.entity FROM {table} o WHERE {mine}o.cohort = ?"
                " AND o.attempt = ? AND o.state = 'uncertain' AND o.entity IN (SELECT key"
                " FROM entity WHERE cohort = ? AND wave = ?)",
                (*args, cohort, str(attempt), cohort, wave),
            )
            if (type(k).__name__, k) not in seen
        ]
    if not keys:
        return None
    return Short(wave, "told (uncertain sends)", len(keys), keys[:LISTED])


def cohort_outcomes(rb: Runbook, state: State, db: Database | None) -> list[CohortOutcome]:
    """Every frozen cohort of the runbook, with its finished waves that fell short."""
    out: list[CohortOutcome] = []
    if db is None or not ledger.has_ledger(db):
        return out
    for name in rb.cohorts:
        got = ledger.frozen(db, name)
        if got is None:
            continue
        states, excluded = state_counts(db, name)
        result = CohortOutcome(name, sum(states.values()), states, excluded)
        order = [str(w["id"]) for w in got.summary.get("waves", [])]
        wanted = targets(rb, state, name)
        for wave in sorted(wanted, key=lambda w: order.index(w) if w in order else len(order)):
            short = short_of(db, name, wave, wanted[wave])
            if short is not None:
                result.short.append(short)
            current = state.attempts.get((name, wave))
            untold = untold_of(db, name, wave, current.attempt) if current else None
            if untold is not None:
                result.short.append(untold)
        out.append(result)
    return out


def run_words(status: str, compensated: bool, clean: bool = True) -> str:
    """A run's outcome in the words every command uses (SPEC §11 "Run outcome"): never a plain
    "succeeded" after a compensation or with a wave short of its target."""
    if status == "succeeded" and compensated:
        return "succeeded after compensation"
    if status == "succeeded" and not clean:
        return "succeeded, not clean"
    return status.replace("_", " ")
