"""One pass over a run's journal records: spans, marks, failures, retries, approvals,
contingencies and measurements, folded for ``build`` and ``sections``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..format import approvals
from ..format.loader import Loaded
from ..format.model import Instance
from ..state.status import State, Status
from .model import (
    Approval,
    ContingencyRun,
    Decision,
    Failure,
    Mark,
    Retry,
    RollbackEntry,
    RunInfo,
    Span,
    StepRow,
)


def seconds(at: str) -> float:
    try:
        return datetime.fromisoformat(at).timestamp()
    except (TypeError, ValueError):
        return 0.0


class _Open:
    __slots__ = ("attempt", "kind", "start", "t0")

    def __init__(self, kind: str, start: str, t0: float, attempt: int) -> None:
        self.kind, self.start, self.t0, self.attempt = kind, start, t0, attempt


class Walk:
    """One pass over the run's records: spans, marks, failures, retries, approvals, ..."""

    def __init__(self, loaded: Loaded, records: list[dict[str, Any]], start: int, end: int):
        self.rb = loaded.runbook
        self.recs = records[start:end]
        self.base = seconds(self.recs[0].get("at", ""))
        self.state = State(self.rb.name)
        for rec in records[:end]:
            self.state.apply(rec)
        self.spans: dict[str, list[Span]] = {}
        self.marks: dict[str, list[Mark]] = {}
        self.open: dict[str, _Open] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.undo_outputs: dict[str, dict[str, Any]] = {}
        self.touched: set[str] = set()
        self.order: list[str] = []  # journal ids in order of appearance
        self.failures: list[Failure] = []
        self.retries: list[Retry] = []
        self.rollbacks: list[RollbackEntry] = []
        self.approvals: list[Approval] = []
        self.contingencies: list[ContingencyRun] = []
        self.cont_open: dict[str, tuple[dict[str, Any], float]] = {}
        self.measured: dict[str, list[tuple[dict[str, Any], str]]] = {}
        self.decisions: dict[str, list[Decision]] = {}  # gate decisions, by step
        self.run_recs: list[dict[str, Any]] = []
        self.last_at = self.recs[0].get("at", "")
        for rec in self.recs:
            self._one(rec)
        self._close_all(self.last_at, None)

    def t(self, at: str) -> float:
        return round(seconds(at) - self.base, 3)

    # -- spans ---------------------------------------------------------------------------
    def _begin(self, sid: str, kind: str, at: str, attempt: int) -> None:
        self.open[sid] = _Open(kind, at, self.t(at), attempt)

    def _end(self, sid: str, at: str, status: str, still_open: bool = False) -> Span | None:
        o = self.open.pop(sid, None)
        if o is None:
            return None
        span = Span(o.kind, o.start, at, o.t0, max(o.t0, self.t(at)), status, o.attempt)
        span.open = still_open
        self.spans.setdefault(sid, []).append(span)
        return span

    def _close_all(self, at: str, status: str | None) -> None:
        """Close the open spans: at a resume (the process died: ``interrupted``), or at the
        end of the journal (still going: each keeps its kind as status, marked open)."""
        for sid in list(self.open):
            kind = self.open[sid].kind
            if status is None:
                shown = {"apply": "running", "rollback": "rolling_back"}.get(kind, kind)
                self._end(sid, at, shown, still_open=True)
            elif kind != "waiting":
                self._end(sid, at, status)

    def mark(self, sid: str, kind: str, at: str, text: str) -> None:
        self.marks.setdefault(sid, []).append(Mark(kind, at, self.t(at), text))

    # -- records -------------------------------------------------------------------------
    def _one(self, rec: dict[str, Any]) -> None:
        at = rec.get("at") if isinstance(rec.get("at"), str) else self.last_at
        assert isinstance(at, str)
        kind = rec.get("t")
        if kind == "run":
            if rec.get("resumed"):
                self._close_all(self.last_at, "interrupted")
            self.run_recs.append(rec)
        elif kind == "step" and isinstance(rec.get("id"), str):
            self._step(rec, at)
        elif kind == "retry" and isinstance(rec.get("id"), str):
            self._retry(rec, at)
        elif kind == "contingency" and isinstance(rec.get("id"), str):
            self._contingency(rec, at)
        elif kind == "approval" and isinstance(rec.get("step"), str):
            self._approval(rec, at)
        elif kind == "gate" and isinstance(rec.get("step"), str):
            self._decision(rec, at)
        elif kind == "record" and isinstance(rec.get("items"), dict):
            self._voided(rec)
        elif kind == "event" and rec.get("kind") == "check.measured":
            data = rec.get("data")
            if isinstance(data, dict) and isinstance(rec.get("id"), str):
                self.measured.setdefault(rec["id"], []).append((data, at))
        self.last_at = at

    def _step(self, rec: dict[str, Any], at: str) -> None:
        sid: str = rec["id"]
        status = str(rec.get("status"))
        if sid not in self.touched:
            self.touched.add(sid)
            self.order.append(sid)
        attempt = rec.get("attempt") if isinstance(rec.get("attempt"), int) else 0
        assert isinstance(attempt, int)
        if status in ("running", "rolling_back"):
            self._end(sid, at, "interrupted")
            self._begin(sid, "apply" if status == "running" else "rollback", at, attempt)
            return
        o = self.open.get(sid)
        if o is not None:
            shown = status
            if o.kind == "waiting":
                shown = "waiting"  # waited until this record (a resume, an approval, ...)
            elif o.kind == "apply" and status == "pending":
                shown = "interrupted"
            elif o.kind == "rollback" and status == "succeeded":
                shown = "interrupted"  # an interrupted idempotent rollback: runs again
            self._end(sid, at, shown)
        if status == "waiting":
            self._begin(sid, "waiting", at, attempt)
        if "outputs" in rec and isinstance(rec["outputs"], dict):
            self.outputs[sid] = rec["outputs"]
        if isinstance(rec.get("rollback_outputs"), dict):
            self.undo_outputs[sid] = rec["rollback_outputs"]
        error = str(rec.get("error") or "")
        if status == "failed":
            self.failures.append(
                Failure(sid, attempt, error, str(rec.get("details") or ""), at, "apply")
            )
        elif status == "skipped":
            why = str(rec.get("reason") or "")
            self.mark(sid, "skipped", at, f"skipped ({why})" + (f": {error}" if error else ""))
        if status in ("rolled_back", "rollback_failed") or (
            status == "unknown" and rec.get("reason") == "rollback"
        ):
            dur = rec.get("duration")
            self.rollbacks.append(
                RollbackEntry(
                    sid,
                    status,
                    rec.get("note"),
                    error or None,
                    at,
                    float(dur) if isinstance(dur, (int, float)) else None,
                    self.undo_outputs.get(sid, {}),
                )
            )
            if status == "rollback_failed":
                details = str(rec.get("details") or "")
                self.failures.append(Failure(sid, attempt, error, details, at, "rollback"))

    def _retry(self, rec: dict[str, Any], at: str) -> None:
        delay = rec.get("delay")
        attempt = rec.get("attempt") if isinstance(rec.get("attempt"), int) else 0
        assert isinstance(attempt, int)
        r = Retry(
            rec["id"],
            attempt,
            str(rec.get("error") or ""),
            float(delay) if isinstance(delay, (int, float)) else 0.0,
            at,
        )
        self.retries.append(r)
        self.mark(rec["id"], "retry", at, f"attempt {attempt - 1} failed: {r.error}")

    def _contingency(self, rec: dict[str, Any], at: str) -> None:
        cid: str = rec["id"]
        if rec.get("status") == "running":
            self.cont_open[cid] = (rec, self.t(at))
            return
        first, t0 = self.cont_open.pop(cid, (rec, self.t(at)))
        c = self.rb.contingency_by_id.get(cid)
        dur = rec.get("duration")
        start = str(first.get("at") or at)
        span = Span("apply", start, at, t0, max(t0, self.t(at)), str(rec.get("status")))
        self.contingencies.append(
            ContingencyRun(
                cid,
                str(rec.get("risk") or first.get("risk") or ""),
                str(rec.get("step") or first.get("step") or ""),
                str(rec.get("status")),
                rec.get("error") or None,
                c.call.action if c else "?",
                start,
                float(dur) if isinstance(dur, (int, float)) else None,
                _dict(rec.get("outputs")),
                span,
            )
        )

    def _approval(self, rec: dict[str, Any], at: str) -> None:
        sid: str = rec["step"]
        waited = None
        o = self.open.get(sid)
        if o is not None and o.kind == "waiting":
            waited = max(0.0, self.t(at) - o.t0)
        by, comment = str(rec.get("by") or "?"), str(rec.get("comment") or "")
        behalf = str(rec["on_behalf_of"]) if rec.get("on_behalf_of") else None
        run = str(rec["run"]) if rec.get("run") else None
        self.approvals.append(Approval(sid, by, comment, at, waited, behalf, run=run))
        who = by + (f" on behalf of {behalf}" if behalf else "")
        self.mark(sid, "approval", at, f"approved by {who}" + (f": {comment}" if comment else ""))

    def _voided(self, rec: dict[str, Any]) -> None:
        """An approval voided by a change (``{void, voided_at, was}`` under its key
        ``approval:RUN:WHO``): the last approval by WHO of that step in RUN is shown void."""
        for key, text in rec["items"].items():
            doc = approvals.load(text) if isinstance(text, str) else None
            if doc is None or not doc.get("void") or not str(key).startswith(approvals.PREFIX):
                continue
            run, _sep, who = str(key).removeprefix(approvals.PREFIX).partition(":")
            for a in reversed(self.approvals):
                if a.step == rec.get("step") and a.run in (run, None) and (a.by == who or not who):
                    if a.void is None:
                        a.void = str(doc["void"])
                    break

    def _decision(self, rec: dict[str, Any], at: str) -> None:
        sid: str = rec["step"]
        by, comment = str(rec.get("by") or "?"), str(rec.get("comment") or "")
        behalf = rec.get("on_behalf_of")
        measured = rec.get("measurements")
        got = Decision(
            sid,
            str(rec.get("decision") or "?"),
            by,
            str(behalf) if behalf else None,
            comment,
            at,
            len(measured) if isinstance(measured, list) else 0,
        )
        self.decisions.setdefault(sid, []).append(got)
        text = f"gate {got.decision} by {by}" + (f": {comment}" if comment else "")
        self.mark(sid, "approval", at, text)

    # -- the rows ------------------------------------------------------------------------
    def row(self, sid: str, inst: Instance | None) -> StepRow:
        st = self.state.steps.get(sid)
        spans = self.spans.get(sid, [])
        applied = [s for s in spans if s.kind == "apply"]
        return StepRow(
            id=sid,
            phase=inst.phase.id if inst else None,
            wave=inst.wave.id if inst and inst.wave else None,
            action=inst.step.action if inst else "?",
            status=(st.status if st else Status.PENDING).value,
            attempts=st.attempts if st else 0,
            this_run=sid in self.touched,
            duration=round(applied[-1].t1 - applied[-1].t0, 3) if applied else None,
            error=(st.rollback_error or st.error) if st else None,
            reason=st.reason if st else None,
            outputs=self.outputs.get(sid, {}),
            spans=spans,
            marks=self.marks.get(sid, []),
        )

    def run_info(self) -> RunInfo:
        first = self.run_recs[0]
        last = self.run_recs[-1]
        every = [s for spans in self.spans.values() for s in spans if s.kind != "waiting"]
        return RunInfo(
            id=str(first.get("run")),
            status=str(last.get("status")),
            started=str(first.get("at")),
            finished=self.last_at,
            elapsed=self.t(self.last_at),
            busy=_union(every),
            user=first.get("user"),
            file=first.get("file"),
            resumes=sum(1 for r in self.run_recs if r.get("resumed")),
            vars=_dict(first.get("vars")),
            compensated=bool(self.contingencies or self.rollbacks),
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _union(spans: list[Span]) -> float:
    total, end = 0.0, float("-inf")
    for s in sorted(spans, key=lambda s: s.t0):
        if s.t1 > end:
            total += s.t1 - max(s.t0, end)
            end = s.t1
    return round(total, 3)
