"""The document ``status --format json`` prints (SPEC §4), built from the runbook and the
journal; also used by ``plan`` and ``graph --state``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..format import approvals, gates
from ..format.loader import Loaded
from ..format.model import Runbook
from .identity import self_approval_default
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
    """Who runs the state now (SPEC §11 "Run outcome"): its lease's holder, ``lost_since``
    its last renewal when its process is gone or its lease expired (a directory or
    PostgreSQL: ``backend.probe``)."""
    from .backend import probe

    seen = probe(state_dir, name)
    run = state.run if state else None
    running = run is not None and run.status is RunStatus.RUNNING
    if seen.state == "none" or seen.holder is None:
        if not running:
            return None
        assert state is not None
        # the run says running and nobody holds the lease: its writer is gone
        return {
            "host": None,
            "pid": None,
            "user": None,
            "started": None,
            "alive": False,
            "lost_since": state.last_at,
        }
    # a lease whose holder is gone (or expired): lost mid-command, whatever the run's status
    # says (a rollback killed in flight leaves the run `paused` and a step `rolling_back`)
    holder = seen.holder
    return {
        "host": holder.host,
        "pid": holder.pid,
        "user": holder.user,
        "started": holder.started,
        "alive": seen.state == "held",
        "lease": seen.state,
        "renewed": seen.renewed,
        "lost_since": seen.lost_since,
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


def approval_standing(
    state: State,
    rb: Runbook,
    node: str,
    state_dir: str,
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """A waiting approval step's approvals against this runbook (and ``values``, the vars a
    command was given, masked; None: the run's own): how many count, and why the others do
    not (``approval void: REASON``: the step or the runbook edited, other vars, expired)."""
    run = state.run
    inst = rb.instances.get(node)
    if run is None or run.finished or inst is None or inst.step.action != "approval":
        return None
    if state.status_of(node) is not Status.WAITING:
        return None
    try:
        rules = approvals.rules(
            inst.step.call.params, run.vars or {}, self_approval_default(state_dir), f"{node}: with"
        )
    except ValueError as exc:
        return {"text": str(exc), "required": None, "approved_by": [], "void": []}
    before = run.vars or {}
    now_vars = dict(values) if values is not None else before
    changed = sorted(k for k in set(before) | set(now_vars) if before.get(k) != now_vars.get(k))
    got = approvals.tally(
        state.records.get(node),
        run.id,
        rules,
        digest=rb.digest,
        vars_now=approvals.vars_digest(now_vars),
        step_pin=inst.digest,
        now=datetime.now(UTC),
        changed_vars=changed,
        used=approvals.used_of(st.outputs if (st := state.steps.get(node)) else None),
    )
    message = str(inst.step.call.params.get("message") or "approval required")
    return {
        "required": rules.required,
        "approved": len(got.valid),
        "approved_by": got.names,
        "expires": approvals.expires_text(rules.expires),
        "void": [
            {"reason": why, "by": (d.get("was") or d).get("by") if isinstance(d, dict) else None}
            for d, why in got.void
        ],
        "text": f"{message} ({got.text(rules)})",
    }


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
        standing = approval_standing(state, rb, node, state_dir) if state else None
        if standing is not None:
            # counted now, not as it stood when the step last waited
            steps[-1]["approvals"] = standing
            steps[-1]["error"] = standing["text"]
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
