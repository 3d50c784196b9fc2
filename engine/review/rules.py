"""Changes that make a migration riskier, each found by a rule with a stable id.

``diff`` lists these first and loudly.  The rules look at both sides, through renames (a
renamed step is the same step), never at the text.  ``RULES`` documents them; the ids are
part of the output contract (JSON ``flags[].rule``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..format.durations import parse_duration
from .canonical import ON_FAILURE_STRENGTH, Side
from .compare import Diff, Flag

GATES = ("check", "approval")
SEVERE = ("high", "critical")
_LIKELIHOOD = {"low": 0, "medium": 1, "high": 2}
_IMPACT = {"low": 0, "medium": 1, "high": 2, "critical": 3}

Rule = Callable[[Diff], Iterator[Flag]]


def _pairs(d: Diff) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(new id, old record, new record) for every step on both sides, renames included."""
    targets = set(d.renamed.values())
    for sid, rec in d.new.steps.items():
        if sid in d.old.steps and sid not in targets:
            yield sid, d.old.steps[sid], rec
    for before, after in d.renamed.items():
        yield after, d.old.steps[before], d.new.steps[after]


def _step_flag(rule: str, sid: str, rec: dict[str, Any], message: str) -> Flag:
    return Flag(rule, "step", sid, f"step `{sid}`: {message}", rec["phase"])


def rollback_removed(d: Diff) -> Iterator[Flag]:
    for sid, a, b in _pairs(d):
        was = a.get("rollback")
        if isinstance(was, dict) and not isinstance(b.get("rollback"), dict):
            how = "set to `none`" if b.get("rollback") == "none" else "removed"
            yield _step_flag(
                "rollback-removed",
                sid,
                b,
                f"rollback {how} (was {was['action']}): this step can no longer be undone",
            )


def on_failure_weakened(d: Diff) -> Iterator[Flag]:
    for sid, a, b in _pairs(d):
        x, y = a["on_failure"], b["on_failure"]
        if ON_FAILURE_STRENGTH[y] < ON_FAILURE_STRENGTH[x]:
            yield _step_flag("on-failure-weakened", sid, b, f"on_failure weakened: {x} -> {y}")


def contingency_removed(d: Diff) -> Iterator[Flag]:
    for cid, rec in d.old.contingencies.items():
        if cid not in d.new.contingencies:
            yield Flag(
                "contingency-removed",
                "contingency",
                cid,
                f"contingency `{cid}` ({rec['action']}) removed: nothing runs in its place "
                "when its risk materialises",
            )


def risk_removed(d: Diff) -> Iterator[Flag]:
    for rid, rec in d.old.risks.items():
        if rid not in d.new.risks:
            yield Flag(
                "risk-removed",
                "risk",
                rid,
                f"risk `{rid}` ({rec['likelihood']} likelihood, {rec['impact']} impact) "
                "removed from the register",
            )


def risk_downgraded(d: Diff) -> Iterator[Flag]:
    for rid, a in d.old.risks.items():
        b = d.new.risks.get(rid)
        if b is None:
            continue
        for key, scale in (("likelihood", _LIKELIHOOD), ("impact", _IMPACT)):
            if scale[b[key]] < scale[a[key]]:
                yield Flag(
                    "risk-downgraded",
                    "risk",
                    rid,
                    f"risk `{rid}`: {key} downgraded {a[key]} -> {b[key]}",
                )


def risk_contingencies_reduced(d: Diff) -> Iterator[Flag]:
    for rid, a in d.old.risks.items():
        b = d.new.risks.get(rid)
        if b is None:
            continue
        dropped = [c for c in a["contingencies"] if c not in b["contingencies"]]
        if dropped:
            yield Flag(
                "risk-contingencies-reduced",
                "risk",
                rid,
                f"risk `{rid}`: contingencies shortened, no longer run: {', '.join(dropped)}",
            )


def gate_removed(d: Diff) -> Iterator[Flag]:
    kept = set(d.new.steps) | set(d.renamed)
    for sid, rec in d.old.steps.items():
        if rec["action"] in GATES and sid not in kept:
            yield Flag(
                "gate-removed",
                "step",
                sid,
                f"gate `{sid}` ({rec['action']}) removed from phase `{rec['phase']}`",
                rec["phase"],
            )
    for sid, a, b in _pairs(d):
        if a["action"] in GATES and b["action"] != a["action"]:
            yield _step_flag(
                "gate-removed", sid, b, f"no longer a gate: action {a['action']} -> {b['action']}"
            )


def _loosened(a: dict[str, Any], b: dict[str, Any]) -> Iterator[str]:
    if a.get("when") != b.get("when") and b.get("when") is not None:
        yield f"may now be skipped: when {a.get('when')!r} -> {b.get('when')!r}"
    x, y = a["with"], b["with"]
    if a["action"] == "check":
        if y.get("failure_limit", 0) > x.get("failure_limit", 0):
            yield f"failure_limit raised {x.get('failure_limit', 0)} -> {y.get('failure_limit', 0)}"
        if y.get("count", 1) < x.get("count", 1):
            yield f"count lowered {x.get('count', 1)} -> {y.get('count', 1)}"
        if y.get("condition") != x.get("condition"):
            yield f"condition changed {x.get('condition')!r} -> {y.get('condition')!r}"
    else:
        before, after = x.get("approvers"), y.get("approvers")
        if before and not after:
            yield f"approvers removed (were {', '.join(before)}): anyone may approve"
        elif before and after and set(after) - set(before):
            yield f"approvers widened: + {', '.join(sorted(set(after) - set(before)))}"


def gate_loosened(d: Diff) -> Iterator[Flag]:
    for sid, a, b in _pairs(d):
        if a["action"] in GATES and a["action"] == b["action"]:
            for what in _loosened(a, b):
                yield _step_flag("gate-loosened", sid, b, f"{b['action']} gate loosened: {what}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def pilot_enlarged(d: Diff) -> Iterator[Flag]:
    for pid, b in d.new.phases.items():
        a = d.old.phases.get(pid)
        if a is None or not a["waves"] or not b["waves"]:
            continue
        first_a, first_b = a["waves"][0], b["waves"][0]
        grown = [
            f"{k} {first_a['vars'][k]} -> {v}"
            for k, v in first_b["vars"].items()
            if _number(v) and _number(first_a["vars"].get(k)) and v > first_a["vars"][k]
        ]
        if grown:
            name = (
                first_b["id"]
                if first_a["id"] == first_b["id"]
                else (f"{first_a['id']} -> {first_b['id']}")
            )
            yield Flag(
                "pilot-enlarged",
                "wave",
                f"{pid}.{first_b['id']}",
                f"phase `{pid}`: pilot wave `{name}` enlarged: {', '.join(grown)}",
                pid,
            )


def _vars(values: dict[str, Any]) -> str:
    return " (" + ", ".join(f"{k}: {v}" for k, v in values.items()) + ")" if values else ""


def wave_removed(d: Diff) -> Iterator[Flag]:
    for pid, a in d.old.phases.items():
        b = d.new.phases.get(pid)
        if b is None:
            continue
        now = {w["id"] for w in b["waves"]}
        for w in a["waves"]:
            if w["id"] not in now:
                yield Flag(
                    "wave-removed",
                    "wave",
                    f"{pid}.{w['id']}",
                    f"phase `{pid}`: wave `{w['id']}` removed{_vars(w['vars'])}: the rollout "
                    "has one stage fewer",
                    pid,
                )


def change_without_risk(d: Diff) -> Iterator[Flag]:
    targets = set(d.renamed.values())
    for sid, rec in d.new.steps.items():
        if not d.new.changes[sid] or rec.get("risks") or sid in targets:
            continue
        before = d.old.steps.get(sid)
        if before is None:
            what = f"new step ({rec['action']}) changes something but names no risk"
        elif not d.old.changes[sid]:
            what = (
                f"now changes something ({before['action']} -> {rec['action']}) but names no risk"
            )
        else:
            continue
        yield _step_flag("change-without-risk", sid, rec, what)


def _severe_risks(d: Diff, rec: dict[str, Any]) -> list[str]:
    out = []
    for rid in rec.get("risks", []):
        risk = d.new.risks.get(rid) or d.old.risks.get(rid)
        if risk is not None and risk["impact"] in SEVERE:
            out.append(f"{risk['impact']} risk `{rid}`")
    return out


def retries_reduced(d: Diff) -> Iterator[Flag]:
    for sid, a, b in _pairs(d):
        x, y = a["retries"]["attempts"], b["retries"]["attempts"]
        severe = _severe_risks(d, b) if y < x else []
        if severe:
            yield _step_flag(
                "retries-reduced",
                sid,
                b,
                f"retries reduced {x} -> {y} attempts on a step naming {', '.join(severe)}",
            )


def timeout_reduced(d: Diff) -> Iterator[Flag]:
    for sid, a, b in _pairs(d):
        x, y = a["timeout"], b["timeout"]
        shorter = x != y and parse_duration(y) < parse_duration(x)
        severe = _severe_risks(d, b) if shorter else []
        if severe:
            yield _step_flag(
                "timeout-reduced",
                sid,
                b,
                f"timeout reduced {x} -> {y} on a step naming {', '.join(severe)}",
            )


def _reaches(side: Side, a: str, b: str) -> bool:
    """Is ``a`` an ancestor of ``b``?  Walks back from ``b`` only through nodes that come
    after ``a`` in the topological order (any path from a to b does), so it stays local."""
    floor = side.position[a]
    stack, seen = [b], {b}
    while stack:
        for p in side.preds[stack.pop()]:
            if p == a:
                return True
            if p not in seen and side.position[p] > floor:
                seen.add(p)
                stack.append(p)
    return False


def _old_preds(d: Diff) -> Callable[[str], set[str]]:
    """Old predecessors in NEW's ids, looking through instances that NEW no longer has."""
    memo: dict[str, set[str]] = {}
    old = d.old

    def preds(oiid: str) -> set[str]:
        hit = memo.get(oiid)
        if hit is not None:
            return hit
        todo = [oiid]  # iterative: a removed phase can be a long chain
        while todo:
            node = todo[-1]
            missing = [p for p in old.preds[node] if p not in d.instance_map and p not in memo]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            found: set[str] = set()
            for p in old.preds[node]:
                mapped = d.instance_map.get(p)
                found |= {mapped} if mapped is not None else memo[p]
            memo[node] = found
        return memo[oiid]

    return preds


def order_loosened(d: Diff) -> Iterator[Flag]:
    old, new = d.old, d.new
    toggled = {
        pid
        for pid, b in new.phases.items()
        if pid in old.phases and b["parallel"] and not old.phases[pid]["parallel"]
    }
    for pid in sorted(toggled, key=list(new.phases).index):
        n = len(new.phase_steps[pid])
        if n > 1:
            yield Flag(
                "order-loosened",
                "phase",
                pid,
                f"phase `{pid}` is now parallel: its {n} steps, which ran one after another, "
                "may now run side by side",
                pid,
            )
    preds = _old_preds(d)
    phase_of = {iid: new.steps[sid]["phase"] for iid, (sid, _) in new.instances.items()}
    changed = {c.id for c in d.changes if c.subject == "needs"}  # the only candidates
    for oiid, b in d.instance_map.items():
        if b not in changed:
            continue
        lost = preds(oiid) - set(new.preds[b])
        for a in sorted(lost, key=new.position.__getitem__):
            if phase_of[a] == phase_of[b] and phase_of[b] in toggled:
                continue
            if _reaches(new, a, b) or _reaches(new, b, a):
                continue
            yield Flag(
                "order-loosened",
                "step",
                b,
                f"`{b}` no longer waits for `{a}`: they ran in order and may now run in parallel",
                phase_of[b],
            )


RULES: dict[str, tuple[str, Rule]] = {
    "rollback-removed": ("a step's rollback removed or set to `none`", rollback_removed),
    "on-failure-weakened": (
        "on_failure weakened (rollback > rollback-wave > abort > continue)",
        on_failure_weakened,
    ),
    "contingency-removed": ("a contingency removed", contingency_removed),
    "risk-removed": ("a risk removed from the register", risk_removed),
    "risk-downgraded": ("a risk's likelihood or impact lowered", risk_downgraded),
    "risk-contingencies-reduced": (
        "a risk's contingency list shortened",
        risk_contingencies_reduced,
    ),
    "gate-removed": ("a `check` or `approval` step removed, or no longer a gate", gate_removed),
    "gate-loosened": (
        "check: failure_limit raised, count lowered, condition changed; approval: approvers "
        "widened or removed; either: a `when` added that can skip it",
        gate_loosened,
    ),
    "pilot-enlarged": (
        "the first wave of a phase enlarged (a numeric wave var grew)",
        pilot_enlarged,
    ),
    "wave-removed": ("a wave removed from a phase", wave_removed),
    "change-without-risk": (
        "a new step whose action changes something names no risk",
        change_without_risk,
    ),
    "order-loosened": (
        "steps that ran in order may now run in parallel (a phase made parallel, needs dropped)",
        order_loosened,
    ),
    "retries-reduced": ("fewer attempts on a step naming a high or critical risk", retries_reduced),
    "timeout-reduced": (
        "a shorter timeout on a step naming a high or critical risk",
        timeout_reduced,
    ),
}


def flag(d: Diff) -> list[Flag]:
    """Every flag of every rule, in RULES order; also stored in ``d.flags``."""
    d.flags = [f for _, (_, rule) in RULES.items() for f in rule(d)]
    return d.flags
