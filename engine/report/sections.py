"""The parts of a report computed from the walked journal: waves and phases (customers moved,
verify results, gates), notifications, the risk register, and the three-line summary."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..format.durations import format_duration
from ..format.model import Runbook, instance_id
from .model import (
    CohortReport,
    Copy,
    Funnel,
    Gate,
    Measurement,
    Notification,
    Report,
    RiskRow,
    RunInfo,
    StepRow,
    Verify,
    WaveReport,
)

if TYPE_CHECKING:
    from .walk import Walk

_NUM = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_OPS = r"(<=|>=|==|<|>)"
_VALUE_OP_NUM = re.compile(rf"^\s*value\s*{_OPS}\s*{_NUM}\s*$")
_NUM_OP_VALUE = re.compile(rf"^\s*{_NUM}\s*{_OPS}\s*value\s*$")
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "=="}
_DONE = ("succeeded", "skipped")


def threshold(condition: str) -> tuple[str, float] | None:
    """``value < 0.02`` -> ("<", 0.02); a condition of another shape has none."""
    m = _VALUE_OP_NUM.match(condition)
    if m:
        return m.group(1), float(m.group(2))
    m = _NUM_OP_VALUE.match(condition)
    if m:
        return _FLIP[m.group(2)], float(m.group(1))
    return None


def outcome(statuses: list[str]) -> str:
    s = set(statuses)
    if not statuses or s <= {"pending"}:
        return "not started"
    if s <= set(_DONE):
        return "completed" if "succeeded" in s else "skipped"
    for status, word in (
        ("rollback_failed", "rollback failed"),
        ("rolling_back", "rolling back"),
        ("rolled_back", "rolled back"),
        ("failed", "failed"),
        ("unknown", "unknown"),
        ("waiting", "waiting"),
        ("running", "running"),
    ):
        if status in s:
            return word
    return "partial"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class Sections:
    def __init__(
        self,
        rb: Runbook,
        walk: Walk,
        rows: list[StepRow],
        cohorts: list[CohortReport] | None = None,
    ) -> None:
        self.rb = rb
        self.cohorts = cohorts or []
        self.walk = walk
        self.rows = rows
        self.by_id = {r.id: r for r in rows}

    # -- waves, phases -------------------------------------------------------------------
    def group(self, phase: str, wave: str | None, ids: list[str]) -> WaveReport:
        rows = [self.by_id[i] for i in ids if i in self.by_id]
        spans = [s for r in rows for s in r.spans if s.kind != "waiting"]
        started = min(spans, key=lambda s: s.t0) if spans else None
        finished = max(spans, key=lambda s: s.t1) if spans else None
        copies, verifies, gates = [], [], []
        for r in rows:
            if r.action == "sql.copy":
                undo = self.walk.undo_outputs.get(r.id, {})
                undone = _int(undo.get("rowcount")) if r.status == "rolled_back" else None
                inst = self.rb.instances.get(r.id)
                table = inst.step.call.params.get("table") if inst else None
                copies.append(
                    Copy(
                        r.id,
                        r.status,
                        _int(r.outputs.get("rows_copied")),
                        undone,
                        str(table) if table is not None else None,
                    )
                )
            elif r.action == "sql.verify":
                o = r.outputs
                verifies.append(
                    Verify(
                        r.id,
                        r.status,
                        _int(o.get("rows_checked")),
                        _int(o.get("mismatches")),
                        _int(o.get("missing")),
                        _int(o.get("extra")),
                        _int(o.get("different")),
                        list(o.get("first_differences") or [])[:5],
                    )
                )
            elif r.action == "check":
                gates.append(self.gate(r))
        return WaveReport(
            phase=phase,
            wave=wave,
            steps=[r.id for r in rows],
            outcome=outcome([r.status for r in rows]),
            counts=dict(Counter(r.status for r in rows)),
            started=started.start if started else None,
            finished=finished.end if finished else None,
            duration=round(finished.t1 - started.t0, 3) if started and finished else None,
            customers_moved=sum(c.rows_copied or 0 for c in copies),
            customers_moved_back=sum(c.rows_undone or 0 for c in copies),
            copies=copies,
            verifies=verifies,
            gates=gates,
        )

    def gate(self, row: StepRow) -> Gate:
        got = self.walk.measured.get(row.id, [])
        condition = ""
        inst = self.rb.instances.get(row.id)
        if inst is not None:
            condition = str(inst.step.call.params.get("condition", ""))
        series, out = 0, list[Measurement]()
        for data, at in got:
            index = _int(data.get("index")) or 0
            if index == 0 or not out:
                series += 1
            value = _num(data.get("value"))
            outcome = str(data.get("outcome") or ("passed" if data.get("passed") else "failed"))
            if value is None and outcome != "inconclusive":
                continue
            condition = str(data.get("condition") or condition)
            out.append(
                Measurement(
                    index,
                    value,
                    bool(data.get("passed")),
                    at,
                    series,
                    outcome,
                    str(data.get("reason") or ""),
                    _num(data.get("baseline")),
                    _int(data.get("n")),
                    _int(data.get("n_baseline")),
                    str(data["baseline_of"]) if data.get("baseline_of") else None,
                    _int(data.get("attempt")) or 1,
                )
            )
        waiting = row.error if row.status == "waiting" else None
        return Gate(
            row.id,
            condition,
            threshold(condition),
            out,
            row.status,
            # a waiting gate's outputs are those of its last end, if any: not this evaluation's
            outcome="inconclusive"
            if waiting is not None
            else str(row.outputs.get("outcome") or ""),
            waiting=waiting,
            decisions=list(self.walk.decisions.get(row.id, [])),
            wave=row.wave,
            cohort=bool(inst is not None and inst.step.call.params.get("cohort")),
        )

    def waves(self) -> tuple[list[WaveReport], list[WaveReport]]:
        waves, phases = [], []
        for phase in self.rb.phases:
            every: list[str] = []
            for w in phase.waves:
                ids = [instance_id(s.id, w.id) for s in phase.steps]
                waves.append(self.group(phase.id, w.id, ids))
                every.extend(ids)
            if not phase.waves:
                every = [s.id for s in phase.steps]
            phases.append(self.group(phase.id, None, every))
        return waves, phases

    # -- notifications, risks --------------------------------------------------------------
    def notifications(self) -> list[Notification]:
        out = []

        def one(sid: str, kind: str, status: str, o: dict[str, Any]) -> None:
            if not o:
                return
            out.append(
                Notification(
                    sid,
                    kind,
                    status,
                    _int(o.get("sent")) or 0,
                    _int(o.get("skipped_already_sent")) or 0,
                    _int(o.get("uncertain")) or 0,
                    [str(x) for x in o.get("uncertain_recipients") or []][:20],
                )
            )

        for r in self.rows:
            if r.action == "notify":
                one(r.id, "step", r.status, r.outputs)
        for c in self.walk.contingencies:
            if c.action == "notify":
                one(c.id, "contingency", c.status, c.outputs)
        return out

    def risks(self) -> list[RiskRow]:
        naming: dict[str, list[str]] = {}
        for iid, inst in self.rb.instances.items():
            for rid in inst.step.risks:
                naming.setdefault(rid, []).append(iid)
        failed = {f.step for f in self.walk.failures if f.phase == "apply"}
        out = []
        for risk in self.rb.risks:
            steps = naming.get(risk.id, [])
            hit = [s for s in steps if s in failed]
            fired = [f"{c.id}: {c.status}" for c in self.walk.contingencies if c.risk == risk.id]
            out.append(
                RiskRow(
                    risk.id,
                    risk.description,
                    risk.likelihood,
                    risk.impact,
                    risk.mitigation,
                    risk.owner,
                    list(risk.contingencies),
                    steps,
                    bool(hit),
                    hit,
                    fired,
                )
            )
        return out

    # -- all of it -------------------------------------------------------------------------
    def report(self, run: RunInfo, runs: list[dict[str, str]], notices: list[str]) -> Report:
        waves, phases = self.waves()
        counts = dict(Counter(r.status for r in self.rows if r.phase is not None))
        applied = [(r.id, r.duration) for r in self.rows if r.duration is not None]
        slowest = sorted(applied, key=lambda x: -x[1])[:5]
        rep = Report(
            runbook=self.rb.name,
            description=self.rb.description,
            owner=self.rb.owner,
            file=self.rb.file,
            run=run,
            runs=runs,
            counts=counts,
            summary={},
            steps=self.rows,
            waves=waves,
            phases=phases,
            retries=self.walk.retries,
            failures=self.walk.failures,
            contingencies=self.walk.contingencies,
            approvals=self.walk.approvals,
            rollbacks=self.walk.rollbacks,
            notifications=self.notifications(),
            risks=self.risks(),
            slowest=[(sid, float(d)) for sid, d in slowest],
            # what the waves moved (backups and staging copies outside waves are not customers')
            customers_moved=sum(c.rows_copied or 0 for w in waves if w.wave for c in w.copies),
            notices=notices,
            cohorts=self.cohorts,
        )
        from .summary import summarise

        rep.summary = summarise(rep)
        return rep


def took(seconds: float | None) -> str:
    return "—" if seconds is None else format_duration(seconds)


RISK_HEAD = [
    "risk",
    "description",
    "likelihood",
    "impact",
    "owner",
    "materialised",
    "failed steps",
    "contingencies fired",
    "mitigation",
]


def risk_rows(rep: Report, materialised: object) -> list[list[object]]:
    """The risk register's rows (RISK_HEAD), ``materialised`` shown for a risk that was."""
    return [
        [
            r.id,
            r.description,
            r.likelihood,
            r.impact,
            r.owner,
            materialised if r.materialised else "no",
            ", ".join(r.failed_steps) or "—",
            ", ".join(r.fired) or "—",
            r.mitigation,
        ]
        for r in rep.risks
    ]


FUNNEL_HEAD = [
    "wave",
    "attempts",
    "members",
    "notified",
    "moved",
    "verified",
    "failed",
    "compensated",
    "pending",
    "vanished",
    "failed in run",
    "compensated in run",
]


def funnel_rows(funnel: Iterable[Funnel], number: Callable[[int], str]) -> list[list[object]]:
    """A cohort's per-wave funnel (FUNNEL_HEAD), each count written by ``number``."""
    return [
        [
            f.wave,
            f.attempts,
            *(
                number(x)
                for x in (
                    f.members,
                    f.notified,
                    f.moved,
                    f.verified,
                    f.failed,
                    f.compensated,
                    f.pending,
                    f.vanished,
                    f.failed_in_run,
                    f.compensated_in_run,
                )
            ),
        ]
        for f in funnel
    ]
