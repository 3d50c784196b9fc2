"""Pinned runs (SPEC §8, §11): a run applies the runbook and the variables it started with.

The run's first record carries the runbook's digest, its variables (masked, and as keyed
digests: ``state/pinned.py``) and ``pins``: each step instance's digest of its effective
definition and its place (``effective.py``). When a later ``apply`` (or ``rollback``) of the
same run finds another runbook or other variables, ``compare`` says what changed and which
steps not yet succeeded it affects (for ``rollback``: which steps it would undo): a step whose
effective definition or place changed (or that was added or removed), or that references a
variable whose value changed. Any affected step: ``apply`` exits 2 with the
summary and writes nothing, until ``apply --accept-changes``. Accepting (explicitly, or by
itself when nothing not yet succeeded is affected) is an ``accept`` record: who (the OS user),
both digests, the variables' names that changed, the affected steps, the new pins; the
approvals and gate decisions given under the old digest and not yet acted on are voided in
the same commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..format import approvals, gates
from ..format.model import Instance, Runbook, digest_of
from ..format.order import Order
from ..masking import MASK, Masker
from ..state import pinned
from ..state.identity import os_user
from ..state.status import DONE, RunState, RunStatus, State, Status
from ..state.store import now
from .effective import PIN_LEN, effective, pin_change, pins_of, refs_in
from .runner import Session

__all__ = [
    "Changes",
    "accept_record",
    "compare",
    "context_pins",
    "identity",
    "pins_of",
    "refuse_early",
    "repin",
    "summary",
    "surroundings",
    "var_refs",
    "voided_approvals",
]


def surroundings(rb: Runbook, inst: Instance) -> dict[str, Any]:
    """What a step does not say itself but depends on: the contingencies its failure fires
    (through its risks, in order, with their definitions), and, for a step in a wave of a
    cohort, that cohort's source query."""
    out: dict[str, Any] = {}
    risks = {r.id: r for r in rb.risks}
    by_id = rb.contingency_by_id
    fired = [cid for rid in inst.step.risks if rid in risks for cid in risks[rid].contingencies]
    if fired:
        out["contingencies"] = [
            [cid, by_id[cid].call.as_json() if cid in by_id else None] for cid in fired
        ]
    cohort = rb.cohorts.get(inst.phase.cohort) if inst.phase.cohort else None
    if cohort is not None:
        out["source"] = {
            "cohort": cohort.name,
            "dsn": cohort.dsn,
            "query": cohort.query,
            "attributes": list(cohort.attributes),
        }
    return out


def context_pins(rb: Runbook) -> dict[str, str]:
    """Each step instance that fires contingencies or works on a cohort -> the pin of those
    (``surroundings``): an edit to a contingency, to what fires it, or to a cohort's source
    affects the steps it reaches."""
    out = {}
    for iid, inst in rb.instances.items():
        around = surroundings(rb, inst)
        if around:
            out[iid] = digest_of(around).removeprefix("sha256:")[:PIN_LEN]
    return out


def _around_why(rb: Runbook, inst: Instance, before: dict[str, Any] | None) -> str:
    around = surroundings(rb, inst)
    if before is None:
        return "its contingencies or its cohort's source changed"
    parts = []
    if "source" in around:
        parts.append(f"the source of cohort {around['source']['cohort']} changed")
    if around.get("contingencies"):
        parts.append(
            "a contingency it fires changed ("
            + ", ".join(str(c[0]) for c in around["contingencies"])
            + ")"
        )
    return " or ".join(parts) or "the contingencies it fired changed"


def identity() -> str:
    """The OS user of this process (``state/identity.py``): the identity ``approve`` records."""
    return os_user()


def var_refs(inst: Instance, names: set[str], rb: Runbook | None = None) -> set[str]:
    """The variables among ``names`` the step refers to: in its definition, and, given ``rb``,
    in its effective definition (its hosts: ``effective.py``), the contingencies it fires and
    its cohort's source (``surroundings``); all of them when it uses ``vars`` other than by
    name or cannot be parsed (a change it might see counts)."""
    if rb is None:
        return refs_in(inst.step.definition(), names)
    return refs_in([effective(rb, inst), surroundings(rb, inst)], names)


@dataclass
class Changes:
    old_digest: str | None
    new_digest: str
    vars: list[tuple[str, Any, Any]] = field(default_factory=list)  # name, before, after
    affected: list[tuple[str, str]] = field(default_factory=list)  # step, why
    done_changed: list[str] = field(default_factory=list)  # succeeded and changed: --replace
    done_other_vars: list[str] = field(default_factory=list)  # succeeded with other vars
    why: dict[str, str] = field(default_factory=dict)  # every changed step, done or not
    secret_vars: list[str] = field(default_factory=list)  # held a secret: not compared

    @property
    def any(self) -> bool:
        return self.old_digest != self.new_digest or bool(self.vars)


_UNSET = object()


def compare(
    run: RunState,
    state: State,
    rb: Runbook,
    variables: dict[str, Any],
    masker: Masker,
    key: bytes | None = None,
    order: Order | None = None,
) -> Changes:
    """What differs between the run's pin and this runbook with these variables; ``key``,
    the state's var key, compares the vars by their keyed digests (a value stored masked
    still shows a change)."""
    out = Changes(run.digest, rb.digest)
    now = masker.mask_value(variables)
    before = run.vars if run.vars is not None else now  # none recorded: nothing to compare
    hmacs_then = run.var_hmacs if key is not None else None
    hmacs_now = pinned.var_hmacs(key, variables) if key is not None else {}
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name, _UNSET), now.get(name, _UNSET)
        then = (hmacs_then or {}).get(name)
        if (run.var_hmacs or {}).get(name) == pinned.SECRET:
            # it held a secret's value: nothing was kept to compare it by (state/pinned.py)
            out.vars.append((name, old, new))
            out.secret_vars.append(name)
        elif then is not None and MASK not in then and name in hmacs_now:
            # (a digest the store masked by chance, holding a secret's text, is not compared)
            if then != hmacs_now[name]:
                out.vars.append((name, old, new))
        elif old != new:
            out.vars.append((name, old, new))
    if not out.any or (run.digest is None and run.pins is None and not out.vars):
        return out  # no digest was recorded (a run of an earlier version): nothing to compare
    changed_vars = {n for n, _o, _n in out.vars}
    pins = run.pins
    now_pins = pins_of(rb, order) if pins is not None else {}
    now_context = context_pins(rb) if run.context is not None else {}
    for iid, inst in rb.instances.items():
        status = state.status_of(iid)
        why = []
        moved: str | None = None
        if pins is None:
            st = state.steps.get(iid)
            if rb.digest != run.digest and not (st and st.digest == inst.digest):
                why.append("the run has no pins (started by an earlier version)")
        elif iid not in pins:
            why.append("added")
        elif (moved := pin_change(str(pins[iid]), now_pins[iid])) is not None:
            why.append(moved)
        context = run.context
        if context is not None and context.get(iid) != now_context.get(iid):
            why.append(_around_why(rb, inst, context))
        used = var_refs(inst, changed_vars, rb) if changed_vars else set()
        if used:
            why.append("uses changed vars: " + ", ".join(sorted(used)))
        if not why:
            continue
        out.why[iid] = "; ".join(why)
        if status in DONE:
            if status is Status.SUCCEEDED and moved is not None and "definition" in moved:
                out.done_changed.append(iid)
            elif status is Status.SUCCEEDED and used:
                out.done_other_vars.append(iid)
            continue
        out.affected.append((iid, "; ".join(why)))
    for iid in pins or {}:
        if iid not in rb.instances and state.status_of(iid) not in DONE:
            out.affected.append((iid, "removed"))
    return out


def _short(digest: str | None) -> str:
    return (digest or "none").removeprefix("sha256:")[:12]


def _shown(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def summary(changes: Changes, run_id: str, file: str, verb: str = "apply") -> str:
    """What ``apply`` (or ``rollback``) says when it refuses (exit 2): what changed, which
    steps it affects."""
    which = "steps not yet done" if verb == "apply" else "steps it would undo"
    lines = [f"{file} is not what run {run_id} started with, and {which} are affected:"]
    if changes.old_digest != changes.new_digest:
        lines.append(f"  runbook: {changes.old_digest} -> {changes.new_digest}")
    for name, old, new in changes.vars:
        held = " (cannot be compared: it held a secret's value, not stored)"
        held = held if name in changes.secret_vars else ""
        lines.append(f"  var {name}: {_shown(old)} -> {_shown(new)}{held}")
    for iid, why in changes.affected[:20]:
        lines.append(f"  step {iid}: {why}")
    if len(changes.affected) > 20:
        lines.append(f"  ... and {len(changes.affected) - 20} more steps")
    if changes.done_changed:
        lines.append(
            "  succeeded and changed (not re-run; --replace ID runs one again): "
            + ", ".join(changes.done_changed[:10])
            + (" ..." if len(changes.done_changed) > 10 else "")
        )
    if changes.done_other_vars:
        lines.append(
            "  done with other vars (runs again only with --replace ID): "
            + ", ".join(changes.done_other_vars[:10])
            + (" ..." if len(changes.done_other_vars) > 10 else "")
        )
    lines.append(
        f"Nothing was written. Review the changes (`runbook diff`, `runbook plan {file}`), then "
        f"run `runbook {verb} {file} --accept-changes` to go on with them (approvals given "
        "under the old runbook or vars are voided), or restore the runbook and vars the run "
        "started with"
    )
    return "\n".join(lines)


def voided_approvals(
    state: State,
    rb: Runbook,
    run_id: str,
    reason: str,
    at: str,
    plan: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``record`` records that void the decisions of this run not yet acted on: each
    approval of an approval step, and a person's decision on a gate's waiting evaluation
    (``approve``, ``resolve --as failed``), whatever the step's status (a step left
    ``pending`` by a crash still has them). The step then waits again for new ones.

    ``plan`` (``{digest, vars}``: the plan accepted, its vars as stored) spares a decision
    bound to that very plan, which its binding cannot tell from it: the only change is then in
    a var that held a secret (stored masked both times, ``state/pinned.py``), which an
    approver never saw either."""
    out = []
    for iid, inst in rb.instances.items():
        if inst.step.action not in ("approval", "check"):
            continue
        if state.status_of(iid) in DONE:
            continue  # acted on: a change does not void it
        records = state.records.get(iid, {})
        found: dict[str, dict[str, Any]] = {}
        if inst.step.action == "approval":
            found = approvals.of_run(records, run_id)
        else:
            waiting = gates.waiting_of(records, run_id)
            decision = gates.decision_of(records, waiting) if waiting is not None else None
            st = state.steps.get(iid)
            used = st.outputs.get("decision") if st is not None else None
            if (
                isinstance(used, dict)
                and waiting is not None
                and used.get("token") == waiting.get("token")
            ):
                decision = None  # the gate ended with it: acted on
            if waiting is not None and decision is not None:
                found = {gates.decision_key(str(waiting["token"])): decision}
        items = {
            key: json.dumps({"void": reason, "voided_at": at, "was": doc})
            for key, doc in found.items()
            if not doc.get("void") and not _bound_to(doc, plan, inst.digest)
        }
        if items:
            out.append({"t": "record", "step": iid, "items": items})
    return out


def _bound_to(doc: dict[str, Any], plan: dict[str, Any] | None, pin: str) -> bool:
    if plan is None or not isinstance(doc.get("digest"), str):
        return False
    step = doc.get("step", doc.get("pin"))
    return bool(
        doc["digest"] == plan.get("digest") and doc.get("vars") == plan.get("vars") and step == pin
    )


def accept_record(
    changes: Changes,
    run_id: str,
    rb: Runbook,
    variables: dict[str, Any],
    explicit: bool,
    voided: list[str],
    hmacs: dict[str, str] | None = None,
    order: Order | None = None,
    who: str | None = None,
) -> dict[str, Any]:
    return {
        "t": "accept",
        "run": run_id,
        "by": who or identity(),
        "from": changes.old_digest,
        "to": changes.new_digest,
        "vars": variables,  # masked by the store like every record
        "changed_vars": [n for n, _o, _n in changes.vars],
        "steps": [iid for iid, _why in changes.affected],
        "pins": pins_of(rb, order),
        "context": context_pins(rb),
        "voided": voided,
        "explicit": explicit,
        "var_hmacs": hmacs,
    }


def refuse_early(
    file: str,
    rb: Runbook,
    variables: dict[str, Any],
    masker: Masker,
    state_dir: str,
    accept: bool,
    replace: tuple[str, ...],
    undo: set[str] | None = None,
) -> None:
    """``repin``'s refusal, before the lease is taken and the state is opened for writing:
    an apply (or, with ``undo``, the steps it would undo, a rollback) refused for changes
    leaves everything on disk as it was — no schema migrated, no journal imported, and the
    lease row untouched (taking the lease rewrites it, and would fence an expired holder).
    ``repin`` checks again under the lease (what changed in between is refused there)."""
    from ..state.store import opening_writes, read_state

    if accept:
        return
    migrating = opening_writes(state_dir, rb.name)
    got = read_state(state_dir, rb.name)
    run = got[0].run if got is not None else None
    if got is None or run is None:
        return
    reopen = (bool(replace) or undo is not None) and run.status is RunStatus.SUCCEEDED
    if run.finished and not reopen:
        return
    # compared as repin compares (by the vars' keyed digests when the state has a key)
    key = None if migrating else pinned.read_var_key(state_dir, rb.name)
    changes = compare(run, got[0], rb, variables, masker, key)
    if undo is not None:
        changes.affected = _undo_affected(changes, undo)
    if changes.any and changes.affected:
        verb = "apply" if undo is None else "rollback"
        raise InvalidInput(summary(changes, run.id, file, verb))


def _undo_affected(changes: Changes, undo: set[str]) -> list[tuple[str, str]]:
    """What a change affects for a rollback of ``undo``: the steps it would undo (their
    rollback, the vars it uses, their place), and, since accepting re-pins the whole run
    (its runbook and vars: SPEC §8), every step not yet done that the change affects."""
    out = [(i, changes.why[i]) for i in sorted(undo) if i in changes.why]
    return out + [
        (i, f"not yet done (accepting re-pins the whole run): {why}")
        for i, why in changes.affected
        if i not in undo
    ]


def repin(
    session: Session, run: RunState, accept: bool, undo: set[str] | None = None
) -> list[dict[str, Any]]:
    """The records that re-pin ``run`` to this runbook and these vars (none when nothing
    changed); raises InvalidInput (exit 2, nothing written) with the changes when steps not
    yet done are affected and --accept-changes was not given. For ``rollback``, ``undo`` is
    the steps it would undo: those are the ones a change affects (their rollback, the vars
    it uses, their place in the order)."""
    rb = session.runbook
    order = session.dag.order
    key = pinned.read_key(session.store.db)
    changes = compare(run, session.store.state, rb, session.variables, session.masker, key, order)
    if not changes.any:
        return []
    if undo is not None:
        changes.affected = _undo_affected(changes, undo)
    if changes.affected and not accept:
        verb = "apply" if undo is None else "rollback"
        raise InvalidInput(summary(changes, run.id, session.file, verb))
    hmacs = pinned.var_hmacs(pinned.ensure_key(session.store.db), session.variables, session.masker)
    who = session.store.identity()  # session_user on PostgreSQL
    what = []
    if changes.old_digest != changes.new_digest:
        what.append(f"runbook {_short(changes.old_digest)} -> {_short(changes.new_digest)}")
    if changes.vars:
        what.append("vars " + ", ".join(n for n, _o, _n in changes.vars))
    said = "; ".join(what)
    plan = {
        "digest": rb.digest,
        "vars": approvals.vars_digest(session.masker.mask_value(session.variables)),
    }
    voids = voided_approvals(
        session.store.state,
        rb,
        run.id,
        f"changed since given ({said}), accepted by {who}",
        now(),
        plan,
    )
    voided = [str(v["step"]) for v in voids]
    rec = accept_record(changes, run.id, rb, session.variables, accept, voided, hmacs, order, who)
    how = f"accepted by {who}" if changes.affected else "no step not yet done is affected"
    session.reporter.notice(
        f"run {run.id} goes on with the changes ({said}): {how}"
        + (f"; approvals voided: {', '.join(voided)}" if voided else "")
    )
    return [rec, *voids]
