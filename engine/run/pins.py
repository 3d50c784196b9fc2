"""Pinned runs (SPEC §8, §11): a run applies the runbook and the variables it started with.

The run's first record carries the runbook's digest, its variables (masked) and ``pins``:
each step instance's definition digest. When a later ``apply`` of the same run finds another
runbook or other variables, ``compare`` says what changed and which steps not yet succeeded
it affects: a step whose definition changed (or that was added or removed), or that
references a variable whose value changed. Any affected step: ``apply`` exits 2 with the
summary and writes nothing, until ``apply --accept-changes``. Accepting (explicitly, or by
itself when nothing not yet succeeded is affected) is an ``accept`` record: who (the OS user),
both digests, the variables' names that changed, the affected steps, the new pins; the
approvals given under the old digest and not yet acted on are voided in the same commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..format.model import Instance, Runbook
from ..format.templates import parse
from ..masking import Masker
from ..state.status import DONE, RunState, State, Status
from ..state.store import now
from .runner import Session

PIN_LEN = 16  # hex digits of a step's definition digest kept in a pin: 64 bits, a change check


def pin(inst: Instance) -> str:
    return inst.digest.removeprefix("sha256:")[:PIN_LEN]


def pins_of(rb: Runbook) -> dict[str, str]:
    """Each step instance -> its pinned definition digest."""
    return {iid: pin(inst) for iid, inst in rb.instances.items()}


def identity() -> str:
    """The OS user of this process, from the user database (never ``$USER``, never --by): the
    identity ``approve`` records (``commands/decide.py``)."""
    import os
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def var_refs(inst: Instance, names: set[str]) -> set[str]:
    """The variables among ``names`` the step's definition refers to; all of them when it
    uses ``vars`` whole or cannot be parsed (a change it might see counts)."""
    found: set[str] = set()
    definition = inst.step.definition()
    for text in _strings(definition):
        if "vars" not in text:
            continue
        source = text if "{{" in text or "{%" in text else "{{ " + text + " }}"
        try:
            parsed = parse(source)
        except Exception:  # noqa: BLE001 - unparsable: assume it may use any var
            return set(names)
        used = [r.parts[0] for r in parsed.refs if r.root == "vars" and r.parts]
        if "vars" in parsed.names and not used:
            return set(names)
        found.update(used)
    return found & names


@dataclass
class Changes:
    old_digest: str | None
    new_digest: str
    vars: list[tuple[str, Any, Any]] = field(default_factory=list)  # name, before, after
    affected: list[tuple[str, str]] = field(default_factory=list)  # step, why
    done_changed: list[str] = field(default_factory=list)  # succeeded and changed: --replace

    @property
    def any(self) -> bool:
        return self.old_digest != self.new_digest or bool(self.vars)


_UNSET = object()


def compare(
    run: RunState, state: State, rb: Runbook, variables: dict[str, Any], masker: Masker
) -> Changes:
    """What differs between the run's pin and this runbook with these variables."""
    out = Changes(run.digest, rb.digest)
    now = masker.mask_value(variables)
    before = run.vars if run.vars is not None else now  # none recorded: nothing to compare
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name, _UNSET), now.get(name, _UNSET)
        if old != new:
            out.vars.append((name, old, new))
    if not out.any or (run.digest is None and run.pins is None and not out.vars):
        return out  # no digest was recorded (a run of an earlier version): nothing to compare
    changed_vars = {n for n, _o, _n in out.vars}
    pins = run.pins
    for iid, inst in rb.instances.items():
        status = state.status_of(iid)
        why = []
        if pins is None:
            st = state.steps.get(iid)
            if rb.digest != run.digest and not (st and st.digest == inst.digest):
                why.append("the run has no pins (started by an earlier version)")
        elif iid not in pins:
            why.append("added")
        elif pins[iid] != pin(inst):
            why.append("definition changed")
        used = var_refs(inst, changed_vars) if changed_vars else set()
        if used:
            why.append("uses changed vars: " + ", ".join(sorted(used)))
        if not why:
            continue
        if status in DONE:
            if status is Status.SUCCEEDED and "definition changed" in why:
                out.done_changed.append(iid)
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


def summary(changes: Changes, run_id: str, file: str) -> str:
    """What ``apply`` says when it refuses (exit 2): what changed, which steps it affects."""
    lines = [f"{file} is not what run {run_id} started with, and steps not yet done are affected:"]
    if changes.old_digest != changes.new_digest:
        lines.append(f"  runbook: {changes.old_digest} -> {changes.new_digest}")
    for name, old, new in changes.vars:
        lines.append(f"  var {name}: {_shown(old)} -> {_shown(new)}")
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
    lines.append(
        f"Nothing was written. Review the changes (`runbook diff`, `runbook plan {file}`), then "
        f"run `runbook apply {file} --accept-changes` to go on with them (approvals given "
        "under the old runbook or vars are voided), or restore the runbook and vars the run "
        "started with"
    )
    return "\n".join(lines)


def approval_key(run_id: str) -> str:
    """The record key of an approval decision: the same as ``plugins/approval.py``'s."""
    return f"approval:{run_id}"


def voided_approvals(
    state: State, rb: Runbook, run_id: str, reason: str, at: str
) -> list[dict[str, Any]]:
    """``record`` records that void the approvals of this run not yet acted on (their step
    still waits): the approval action then waits again for a new one."""
    out = []
    key = approval_key(run_id)
    for iid, inst in rb.instances.items():
        if inst.step.action != "approval" or state.status_of(iid) is not Status.WAITING:
            continue
        raw = state.records.get(iid, {}).get(key)
        if raw is None:
            continue
        try:
            decision = json.loads(raw)
        except ValueError:
            decision = {}
        if not isinstance(decision, dict) or decision.get("void"):
            continue
        void = {"void": reason, "voided_at": at, "was": decision}
        out.append({"t": "record", "step": iid, "items": {key: json.dumps(void)}})
    return out


def accept_record(
    changes: Changes,
    run_id: str,
    rb: Runbook,
    variables: dict[str, Any],
    explicit: bool,
    voided: list[str],
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
        "pins": pins_of(rb),
        "voided": voided,
        "explicit": explicit,
    }


def repin(session: Session, run: RunState, accept: bool) -> list[dict[str, Any]]:
    """The records that re-pin ``run`` to this runbook and these vars (none when nothing
    changed); raises InvalidInput (exit 2, nothing written) with the changes when steps not
    yet done are affected and --accept-changes was not given."""
    rb = session.runbook
    changes = compare(run, session.store.state, rb, session.variables, session.masker)
    if not changes.any:
        return []
    if changes.affected and not accept:
        raise InvalidInput(summary(changes, run.id, session.file))
    who = session.store.identity()  # session_user on PostgreSQL
    what = []
    if changes.old_digest != changes.new_digest:
        what.append(f"runbook {_short(changes.old_digest)} -> {_short(changes.new_digest)}")
    if changes.vars:
        what.append("vars " + ", ".join(n for n, _o, _n in changes.vars))
    said = "; ".join(what)
    voids = voided_approvals(
        session.store.state, rb, run.id, f"changed since given ({said}), accepted by {who}", now()
    )
    voided = [str(v["step"]) for v in voids]
    rec = accept_record(changes, run.id, rb, session.variables, accept, voided, who)
    how = f"accepted by {who}" if changes.affected else "no step not yet done is affected"
    session.reporter.notice(
        f"run {run.id} goes on with the changes ({said}): {how}"
        + (f"; approvals voided: {', '.join(voided)}" if voided else "")
    )
    return [rec, *voids]
