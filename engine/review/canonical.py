"""The canonical form of a runbook, shared by ``show`` (the git textconv) and ``diff``.

A ``Side`` is plain, picklable data built from a loaded runbook: defaults applied, effective
idempotency, effective phase ``needs``, waves expanded into instances, and each instance's
nearest predecessor steps.  User mappings (``with``, vars, wave vars, labels) have their keys
sorted; comments, key order and formatting are gone.  Secrets are kept by name only (plus a
digest of where the value comes from, so that ``diff`` can say the source changed without
printing it).

``needs`` of an instance lists the nearest steps that must be done before it, looking through
phase and wave barriers; a step that is implied because one of its direct successors is also
listed is left out (``a1 -> a2 -> a3`` then phase ``b``: the first step of ``b`` needs
``[a3]``, not every step of ``a``).  The order it describes is exactly the DAG's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..actions import registry
from ..format.loader import Loaded
from ..format.model import Call, Instance, Retry, Runbook, digest_of
from ..format.order import Order

DEFINITION = ("action", "with", "when", "idempotent", "rollback")

ON_FAILURE_STRENGTH = {"continue": 0, "abort": 1, "rollback-wave": 2, "rollback": 3}


@lru_cache(maxsize=4096)
def format_duration(seconds: float) -> str:
    """Exact and short: ``1h30m``, ``10m``, ``2s``, ``250ms``, ``0s``."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    parts = [f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s"), (ms, "ms")) if v]
    return "".join(parts)


def sort_keys(value: Any) -> Any:
    """Mappings with sorted keys, recursively; lists keep their order."""
    if isinstance(value, dict):
        try:
            items = sorted(value.items(), key=_first)
        except TypeError:  # not all strings (the YAML reader only makes string keys)
            items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return {
            k if isinstance(k, str) else str(k): sort_keys(v) if isinstance(v, (dict, list)) else v
            for k, v in items
        }
    if isinstance(value, list):
        return [sort_keys(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


@lru_cache(maxsize=1024)
def _retries(r: Retry) -> dict[str, Any]:
    """Shared between records (never mutated): smaller to pickle, cheaper to build."""
    backoff: Any = int(r.backoff) if r.backoff == int(r.backoff) else r.backoff
    return {"attempts": r.attempts, "delay": format_duration(r.delay), "backoff": backoff}


def _idempotent(call: Call) -> bool:
    if call.idempotent is not None:
        return call.idempotent
    reg = registry()
    return bool(reg.get(call.action).idempotent) if call.action in reg else False


def call_record(call: Call) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if call.description:
        out["description"] = call.description
    out["action"] = call.action
    out["with"] = sort_keys(dict(call.params))
    out["timeout"] = format_duration(call.timeout)
    out["retries"] = _retries(call.retries)
    out["idempotent"] = _idempotent(call)
    return out


@dataclass
class Side:
    """One runbook in canonical form (see the module docstring)."""

    file: str  # as the user named it
    metadata: dict[str, Any]
    vars: dict[str, dict[str, Any]]
    secrets: dict[str, str]  # name -> digest of its source (never the source, never a value)
    hosts: dict[str, dict[str, Any]]
    defaults: dict[str, Any]
    risks: dict[str, dict[str, Any]]  # by id, sorted
    contingencies: dict[str, dict[str, Any]]  # by id, sorted
    phases: dict[str, dict[str, Any]]  # document order: id, description, needs, parallel, waves
    phase_steps: dict[str, list[str]]  # phase id -> its step ids, document order
    steps: dict[str, dict[str, Any]]  # step id -> what the step is (document order)
    changes: dict[str, bool]  # step id -> its action changes something
    instances: dict[str, tuple[str, str | None]]  # instance id -> (step id, wave id)
    preds: dict[str, list[str]]  # instance id -> nearest steps before it
    position: dict[str, int] = field(default_factory=dict)  # instance id -> topological index
    generation: dict[str, int] = field(default_factory=dict)  # longest chain of steps before it

    def wave_vars(self, phase: str, wave: str | None) -> dict[str, Any]:
        for w in self.phases[phase]["waves"]:
            if w["id"] == wave:
                result: dict[str, Any] = w["vars"]
                return result
        return {}


def definition(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a step does (not where it stands): equal definitions make a rename."""
    return tuple(digest_of(record.get(key)) for key in DEFINITION)


def _step_record(inst: Instance) -> dict[str, Any]:
    step = inst.step
    out: dict[str, Any] = {"phase": step.phase}
    out.update(call_record(step.call))
    if step.when is not None:
        out["when"] = step.when
    out["on_failure"] = step.on_failure.value
    if step.risks:
        out["risks"] = list(step.risks)
    if step.rollback is not None:
        out["rollback"] = call_record(step.rollback)
    elif step.rollback_declared:
        out["rollback"] = "none"
    return out


def nearest_preds(dag: Order) -> tuple[dict[str, list[str]], list[str]]:
    """Each instance's nearest step predecessors, and a topological order of the instances.

    One plain first-in-first-out walk of Kahn's algorithm (``diff`` must not pay for importing
    networkx): its order is property-tested against networkx in tests/engine/test_order.py."""
    preds = dag.preds
    indeg = {n: len(p) for n, p in preds.items()}
    queue = [n for n, d in indeg.items() if d == 0]
    memo: dict[str, set[str]] = {}
    out: dict[str, list[str]] = {}
    order: list[str] = []
    succs = dag.succs
    is_step = dag.instances.__contains__
    index = dag.order_index.__getitem__
    for node in queue:  # grows while it is walked: Kahn's algorithm, first in first out
        direct = preds[node]
        if len(direct) == 1 and is_step(direct[0]):
            found = {direct[0]}
        else:
            found = set()
            for p in direct:
                if is_step(p):
                    found.add(p)
                else:
                    found |= memo[p]
            if len(found) > 1:
                found = {x for x in found if not any(y in found for y in succs[x])}
        if is_step(node):
            out[node] = sorted(found, key=index) if len(found) > 1 else list(found)
            order.append(node)
        else:
            memo[node] = found
        for s in succs[node]:
            indeg[s] -= 1
            if indeg[s] == 0:
                queue.append(s)
    return out, order


def _phase_needs(rb: Runbook) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    previous: str | None = None
    for phase in rb.phases:
        if phase.needs is not None:
            out[phase.id] = list(phase.needs)
        else:
            out[phase.id] = [previous] if previous else []
        previous = phase.id
    return out


def build_side(loaded: Loaded, file: str | None = None) -> Side:
    rb, dag = loaded.runbook, loaded.order
    metadata: dict[str, Any] = {"name": rb.name}
    if rb.description:
        metadata["description"] = rb.description
    if rb.owner:
        metadata["owner"] = rb.owner
    if rb.labels:
        metadata["labels"] = sort_keys(dict(rb.labels))
    var_records: dict[str, dict[str, Any]] = {}
    for name in sorted(rb.vars):
        v = rb.vars[name]
        rec: dict[str, Any] = {"type": v.type}
        if v.has_default:
            rec["default"] = sort_keys(v.default)
        if v.description:
            rec["description"] = v.description
        var_records[name] = rec
    secrets = {
        name: digest_of({"env": s.env, "file": s.file}) for name, s in sorted(rb.secrets.items())
    }
    hosts = {
        alias: {
            "address": h.address,
            "port": h.port,
            **({"user": h.user} if h.user is not None else {}),
            **({"key_file": h.key_file} if h.key_file is not None else {}),
            "groups": list(h.groups),
        }
        for alias, h in sorted(rb.hosts.items())
    }
    defaults = {
        "timeout": format_duration(rb.defaults.timeout),
        "retries": _retries(rb.defaults.retries),
        "on_failure": rb.defaults.on_failure.value,
    }
    risks: dict[str, dict[str, Any]] = {}
    for r in sorted(rb.risks, key=lambda r: r.id):
        rec = {"likelihood": r.likelihood, "impact": r.impact}
        for key in ("description", "mitigation", "owner"):
            if getattr(r, key):
                rec[key] = getattr(r, key)
        rec["contingencies"] = list(r.contingencies)
        risks[r.id] = rec
    contingencies = {
        c.id: call_record(c.call) for c in sorted(rb.contingencies, key=lambda c: c.id)
    }
    needs = _phase_needs(rb)
    phases: dict[str, dict[str, Any]] = {}
    phase_steps: dict[str, list[str]] = {}
    for p in rb.phases:
        rec = {"description": p.description} if p.description else {}
        rec["needs"] = needs[p.id]
        rec["parallel"] = p.parallel
        rec["waves"] = [
            {
                "id": w.id,
                **({"description": w.description} if w.description else {}),
                "vars": sort_keys(dict(w.vars)),
            }
            for w in p.waves
        ]
        phases[p.id] = rec
        phase_steps[p.id] = [s.id for s in p.steps]
    steps: dict[str, dict[str, Any]] = {}
    changes: dict[str, bool] = {}
    reg = registry()
    instances: dict[str, tuple[str, str | None]] = {}
    for iid, inst in rb.instances.items():
        instances[iid] = (inst.step.id, inst.wave.id if inst.wave else None)
        sid = inst.step.id
        if sid not in steps:
            steps[sid] = _step_record(inst)
            action = inst.step.action
            changes[sid] = bool(reg.get(action).changes) if action in reg else True
    preds, order = nearest_preds(dag)
    generation: dict[str, int] = {}
    for iid in order:
        generation[iid] = max((generation[p] + 1 for p in preds[iid]), default=0)
    return Side(
        file=file or rb.file,
        metadata=metadata,
        vars=var_records,
        secrets=secrets,
        hosts=hosts,
        defaults=defaults,
        risks=risks,
        contingencies=contingencies,
        phases=phases,
        phase_steps=phase_steps,
        steps=steps,
        changes=changes,
        instances=instances,
        preds=preds,
        position={iid: i for i, iid in enumerate(order)},
        generation=generation,
    )


def document(side: Side) -> dict[str, Any]:
    """The text ``show`` prints, as one mapping in a fixed key order."""
    doc: dict[str, Any] = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": side.metadata,
        "vars": side.vars,
        "secrets": sorted(side.secrets),
        "hosts": side.hosts,
        "defaults": side.defaults,
        "risks": [{"id": rid, **rec} for rid, rec in side.risks.items()],
        "contingencies": [{"id": cid, **rec} for cid, rec in side.contingencies.items()],
    }
    by_phase: dict[str, list[str]] = {pid: [] for pid in side.phases}
    for iid, (sid, _) in side.instances.items():
        by_phase[side.steps[sid]["phase"]].append(iid)
    phases = []
    for pid, prec in side.phases.items():
        out: dict[str, Any] = {"id": pid, **prec, "steps": []}
        if not out["waves"]:
            del out["waves"]
        for iid in by_phase[pid]:
            sid, wave = side.instances[iid]
            rec = dict(side.steps[sid])
            del rec["phase"]
            head: dict[str, Any] = {"id": iid}
            if wave is not None:
                head.update(step=sid, wave=wave, wave_vars=side.wave_vars(pid, wave))
            out["steps"].append({**head, "needs": side.preds[iid], **rec})
        phases.append(out)
    doc["phases"] = phases
    return doc
