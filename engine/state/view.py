"""The document ``status --format json`` prints (SPEC §4), built from the runbook and the
journal; also used by ``plan`` and ``graph --state``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..format import gates
from ..format.loader import Loaded
from .journeys import reader
from .members import unknown_calls, unknown_text
from .outcome import cohort_outcomes
from .status import RunStatus, State, Status
from .store import read_state


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def load_state(loaded: Loaded, state_dir: str) -> tuple[State | None, str | None]:
    got = read_state(state_dir, loaded.runbook.name)
    return (got[0], got[1]) if got else (None, None)


def _holder(state_dir: str, name: str, state: State | None) -> dict[str, Any] | None:
    from .location import is_postgres
    from .lock import Holder, probe
    from .store import state_path

    if is_postgres(state_dir):
        from . import pglease

        got, alive = pglease.probe(state_dir, name)
        holder = Holder(got.host, got.pid, got.user, got.started, got.command) if got else None
    else:
        holder, alive = probe(state_path(state_dir, name))
    run = state.run if state else None
    running = run is not None and run.status is RunStatus.RUNNING
    if holder is None:
        if not running:
            return None
        assert state is not None
        # the run says running and nobody holds or held the lock: its writer is gone
        return {
            "host": None,
            "pid": None,
            "user": None,
            "started": None,
            "lost_since": state.last_at,
        }
    # a lock left by a process that is gone: it died mid-command, whatever the run's status
    # says (a rollback killed in flight leaves the run `paused` and a step `rolling_back`)
    lost = alive is False
    return {
        "host": holder.host,
        "pid": holder.pid,
        "user": holder.user,
        "started": holder.started_at,
        "alive": alive,
        "lost_since": ((state.last_at if state else None) or holder.started_at) if lost else None,
    }


def _waiting_gate(state: State, node: str, run: str) -> dict[str, Any] | None:
    """A waiting gate's inconclusive evaluation: its measurements, and the decision made on it
    (None until someone decides)."""
    records = state.records.get(node)
    waiting = gates.waiting_of(records, run)
    if waiting is None:
        return None
    decision = gates.decision_of(records, waiting)
    keys = (
        "token",
        "attempt",
        "head",
        "outcome",
        "passed",
        "failed",
        "inconclusive",
        "measurements",
    )
    out = {k: waiting.get(k) for k in keys}
    out["decision"] = (
        {k: decision.get(k) for k in ("decision", "by", "on_behalf_of", "comment", "at")}
        if decision
        else None
    )
    return out


def build_status(loaded: Loaded, state_dir: str) -> dict[str, Any]:
    rb = loaded.runbook
    state, notice = load_state(loaded, state_dir)
    run = state.run if state else None
    steps: list[dict[str, Any]] = []
    for node, inst in rb.instances.items():
        st = state.steps.get(node) if state else None
        status = st.status if st else Status.PENDING
        changed = bool(
            st and st.status is Status.SUCCEEDED and st.digest and st.digest != inst.digest
        )
        steps.append(
            {
                "id": node,
                "phase": inst.phase.id,
                "wave": inst.wave.id if inst.wave else None,
                "status": status.value,
                "attempts": st.attempts if st else 0,
                "started_at": st.started_at if st else None,
                "finished_at": st.finished_at if st else None,
                "duration": _seconds(st.started_at, st.finished_at) if st else None,
                "error": (st.rollback_error or st.error) if st else None,
                "outputs": st.outputs if st else {},
                "changed": changed,
                "reason": st.reason if st else None,
                "action": inst.step.action,
            }
        )
        if state is not None and inst.step.foreach is not None:
            _, unknown = unknown_calls(state, rb, node)
            if unknown and status in (Status.WAITING, Status.UNKNOWN):
                # the members still undecided now, not the list of when it stopped
                steps[-1]["unknown_members"] = unknown
                steps[-1]["error"] = unknown_text(state, rb, node)
        if status is Status.WAITING and inst.step.action == "check" and state and run:
            steps[-1]["gate"] = _waiting_gate(state, node, run.id)
    extra = sorted(set(state.steps) - set(rb.instances)) if state else []
    cohorts = []
    if state is not None and rb.cohorts:
        with reader(state_dir, rb.name) as db:
            cohorts = cohort_outcomes(rb, state, db)
    compensated = bool(run and (run.fired or run.rollbacks))
    holder = _holder(state_dir, rb.name, state) if run is not None else None
    if holder is not None and holder.get("lost_since"):
        rolling = any(s["status"] == Status.ROLLING_BACK.value for s in steps)
        holder["resume_with"] = "rollback" if rolling else "apply"
    return {
        "runbook": rb.name,
        "digest": rb.digest,
        "run": {
            "id": run.id,
            "status": run.status.value,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "contingencies_fired": sorted(run.fired),
            # SPEC §11 "Run outcome": a contingency fired or a rollback ran in this run
            "compensated": compensated,
            # exit 0 would be given: succeeded, nothing compensated, no wave short of its target
            "clean": run.status is RunStatus.SUCCEEDED
            and not compensated
            and not any(c.short for c in cohorts),
            "cohorts": {c.cohort: c.as_json() for c in cohorts},
            # who runs it now (SPEC §8/§11): a holder that is gone is `lost_since` its last
            # record, never shown as plainly running
            "holder": holder,
        }
        if run
        else None,
        "steps": steps,
        "not_in_runbook": extra,
        "notice": notice,
    }
