"""A step's effective definition and its place, digested into a run's pins (SPEC §8
"Pinned runs", §11: "a step is affected by a change when its definition or a var it references
changed"), and the vars a step's definition references. ``pins.py`` compares them.

The *effective definition* is what the step does (``Step.definition()``: action, ``with``,
``when``, ``idempotent``, ``rollback``, ``marks``, ``foreach``; its wave and the wave's vars),
how it is run (``timeout``, ``retries``, ``on_failure``, after the runbook's ``defaults``) and
where (the inventory hosts its ``hosts``/``groups`` resolve to). Its ``description`` runs
nothing and is not pinned. Its *place* is the nodes it directly waits for (they encode
``needs``, ``parallel``, the phase and the position in it) and the approval and ``check``
steps before it. A pin is ``DEF:PLACE``, 16 hex digits of each one's sha256, so that a
refusal says which of the two changed.

Imports: format only.
"""

from __future__ import annotations

from typing import Any

from ..format.model import Call, Host, Instance, Runbook, digest_of
from ..format.order import Order
from ..format.templates import parse

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


def pin_change(then: str, now: str) -> str | None:
    """Why a step's pin differs: its definition, or only its place in the order."""
    if then == now:
        return None
    if then.partition(":")[0] != now.partition(":")[0]:
        return "definition changed"
    return "place changed (its needs, its position or the approvals and gates before it)"


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


def refs_in(value: Any, names: set[str]) -> set[str]:
    """The variables among ``names`` the templates in ``value`` (a step's effective
    definition, say) refer to; all of them when one uses ``vars`` other than by name (a loop
    over it, a computed index) or cannot be parsed (a change it might see counts)."""
    found: set[str] = set()
    for text in _strings(value):
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


def var_refs(inst: Instance, names: set[str], rb: Runbook | None = None) -> set[str]:
    """The variables among ``names`` the step's effective definition (with ``rb``: its
    hosts too) refers to (``refs_in``)."""
    return refs_in(effective(rb, inst) if rb is not None else inst.step.definition(), names)
