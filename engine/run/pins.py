"""Pinned runs (SPEC §8, §11): a run applies the runbook and the variables it started with.

The run's first record carries the runbook's digest, its variables (masked, and as keyed
digests: ``state/pinned.py``) and ``pins``: each step instance's digest of its *effective
definition* (``effective``): what it does (action, ``with``, ``when``, ``idempotent``,
``rollback``, ``marks``, ``foreach``, its wave), how it is run (``timeout``, ``retries``,
``on_failure``, after the runbook's ``defaults``), where it runs (the inventory hosts its
``hosts``/``groups`` resolve to: address, port, user, key file, groups) and where it stands
(the nodes it directly waits for, which encode ``needs``, ``parallel``, its phase and its
position, and the approval and gate steps before it). Its ``description`` is not pinned: it
runs nothing. When a later ``apply`` of the same run finds another runbook or other
variables, ``compare`` says what changed and which steps not yet succeeded it affects: a step
whose effective definition changed (or that was added or removed), or that references a
variable whose value changed. Any affected step: ``apply`` exits 2 with the
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
from ..format.model import Call, Host, Instance, Runbook, digest_of
from ..format.order import Order
from ..format.templates import parse
from ..masking import MASK, Masker
from ..state import pinned
from ..state.status import DONE, RunState, State, Status
from ..state.store import now
from .runner import Session

PIN_LEN = 16  # hex digits of a step's definition digest kept in a pin: 64 bits, a change check
GATES = frozenset({"approval", "check"})  # steps that hold back what comes after them


def _host(h: Host) -> dict[str, Any]:
    return {
        "address": h.address,
        "port": h.port,
        "user": h.user,
        "key_file": h.key_file,
        "groups": list(h.groups),
    }


def hosts_of(rb: Runbook, inst: Instance) -> dict[str, Any]:
    """The inventory hosts the step's calls (its action and its rollback) name through
    ``hosts``/``groups``; every host when a name is templated (decided at run time)."""
    out: dict[str, Any] = {}
    calls: list[Call] = [inst.step.call, *([inst.step.rollback] if inst.step.rollback else [])]
    for call in calls:
        aliases, groups = call.params.get("hosts"), call.params.get("groups")
        if aliases is None and groups is None:
            continue
        names = [*(aliases or []), *(groups or [])]
        literal = all(isinstance(x, list) for x in (aliases or [], groups or [])) and all(
            isinstance(n, str) and "{" not in n for n in names
        )
        for alias, h in rb.hosts.items():
            if not literal or alias in (aliases or []) or set(h.groups) & set(groups or []):
                out[alias] = _host(h)
    return out


def _gates_before(rb: Runbook, order: Order) -> dict[str, frozenset[str]]:
    """Each node -> the approval and gate steps it comes after (shared sets: linear in the
    runbook for the usual handful of gates)."""
    out: dict[str, frozenset[str]] = {}
    empty: frozenset[str] = frozenset()
    for node in order.topological():
        acc = empty
        for p in order.preds.get(node, ()):
            got = out.get(p, empty)
            inst = rb.instances.get(p)
            if inst is not None and inst.step.action in GATES:
                got = got | {p}
            acc = got if not acc else (acc if got <= acc else acc | got)
        out[node] = acc
    return out


def effective(rb: Runbook, inst: Instance) -> dict[str, Any]:
    """What a step does and how and where it runs, without its place in the order (the
    texts ``var_refs`` reads for the variables it uses)."""
    call = inst.step.call
    body: dict[str, Any] = {
        **inst.step.definition(),
        "timeout": call.timeout,
        "retries": call.retries.as_json(),
        "on_failure": inst.step.on_failure.value,
    }
    if inst.wave is not None:
        body["wave"], body["wave_vars"] = inst.wave.id, inst.wave.vars
    hosts = hosts_of(rb, inst)
    if hosts:
        body["hosts"] = hosts
    return body


def pins_of(rb: Runbook, order: Order | None = None) -> dict[str, str]:
    """Each step instance -> the digest of its effective definition and its place: the nodes
    it directly comes after and the approval and gate steps before it."""
    order = order if order is not None else Order(rb)
    gates = _gates_before(rb, order)
    out = {}
    for iid, inst in rb.instances.items():
        place = {"after": sorted(order.preds.get(iid, ())), "gates": sorted(gates.get(iid, ()))}
        out[iid] = f"{_short_digest(effective(rb, inst))}:{_short_digest(place)}"
    return out


def _short_digest(value: Any) -> str:
    return digest_of(value).removeprefix("sha256:")[:PIN_LEN]


def _pin_change(then: str, now: str) -> str | None:
    """Why a step's pin differs: its definition, or only its place in the order."""
    if then == now:
        return None
    if then.partition(":")[0] != now.partition(":")[0]:
        return "definition changed"
    return "place changed (its needs, its position or the approvals and gates before it)"


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


def _var_uses(source: str) -> set[str] | None:
    """The names a template reads as ``vars.NAME`` or ``vars['NAME']``; None when it uses
    ``vars`` in any other way (a loop over it, a computed index, passed whole)."""
    from jinja2 import nodes

    from ..format.templates import environment

    parsed = parse(source)  # the syntax check (raises on a bad template)
    if "vars" not in parsed.names:
        return set()
    ast = environment().parse(source)
    named: set[str] = set()
    covered: set[int] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if not (isinstance(base, nodes.Name) and base.name == "vars"):
            continue
        if isinstance(node, nodes.Getattr):
            named.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            named.add(node.arg.value)
        else:
            return None
        covered.add(id(base))
    for name in ast.find_all(nodes.Name):
        if name.name == "vars" and id(name) not in covered:
            return None
    return named


def var_refs(inst: Instance, names: set[str], rb: Runbook | None = None) -> set[str]:
    """The variables among ``names`` the step's effective definition (with ``rb``: its
    hosts too) refers to; all of them when it uses ``vars`` other than by name (a loop over
    it, a computed index) or cannot be parsed (a change it might see counts)."""
    found: set[str] = set()
    definition = effective(rb, inst) if rb is not None else inst.step.definition()
    for text in _strings(definition):
        if "vars" not in text:
            continue
        source = text if "{{" in text or "{%" in text else "{{ " + text + " }}"
        try:
            used = _var_uses(source)
        except Exception:  # noqa: BLE001 - unparsable: assume it may use any var
            return set(names)
        if used is None:
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
    done_other_vars: list[str] = field(default_factory=list)  # succeeded with other vars
    why: dict[str, str] = field(default_factory=dict)  # every changed step, done or not

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
        if then is not None and MASK not in then and name in hmacs_now:
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
        elif (moved := _pin_change(str(pins[iid]), now_pins[iid])) is not None:
            why.append(moved)
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
    hmacs: dict[str, str] | None = None,
    order: Order | None = None,
) -> dict[str, Any]:
    return {
        "t": "accept",
        "run": run_id,
        "by": identity(),
        "from": changes.old_digest,
        "to": changes.new_digest,
        "vars": variables,  # masked by the store like every record
        "changed_vars": [n for n, _o, _n in changes.vars],
        "steps": [iid for iid, _why in changes.affected],
        "pins": pins_of(rb, order),
        "voided": voided,
        "explicit": explicit,
        "var_hmacs": hmacs,
    }


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
        changes.affected = [(i, changes.why[i]) for i in sorted(undo) if i in changes.why]
    if changes.affected and not accept:
        verb = "apply" if undo is None else "rollback"
        raise InvalidInput(summary(changes, run.id, session.file, verb))
    hmacs = pinned.var_hmacs(pinned.ensure_key(session.store.db), session.variables)
    who = identity()
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
    rec = accept_record(changes, run.id, rb, session.variables, accept, voided, hmacs, order)
    how = f"accepted by {who}" if changes.affected else "no step not yet done is affected"
    session.reporter.notice(
        f"run {run.id} goes on with the changes ({said}): {how}"
        + (f"; approvals voided: {', '.join(voided)}" if voided else "")
    )
    return [rec, *voids]
