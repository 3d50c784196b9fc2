"""What ``apply`` would do: the steps in order, grouped by what can run side by side, with their
risks and rollbacks, and the risk register.  Typed records; ``plan_render`` turns them into
text, markdown or JSON.

Each ``PlanStep`` has a ``status`` (and a ``changed`` flag) for the state-aware plan: ``None``
while the plan is built from the file alone.  Once run state exists, the caller passes each
step's status (``to run``, ``done``, ``skipped``, ``waiting``; ``changed`` marks a done step
whose definition changed since it was applied) through ``build_plan(..., statuses=...)``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..actions import Action, registry, template_mode
from ..errors import Problem, RunbookError
from ..format.loader import Loaded
from ..format.model import IMPACTS, LIKELIHOODS, Call, Instance, Runbook
from ..format.names import SyntaxProblem, scan
from ..format.templates import iter_strings, render_string
from .cohorts import PlanCohort

# What a plan says of a step's rollback when it has no rollback action.
ROLLBACK_NONE = "none"  # `rollback: none`: nothing to undo, said on purpose
ROLLBACK_MISSING = "no rollback"  # no `rollback` key at all


@dataclass(frozen=True)
class StepStatus:
    """A step's standing against the run state (filled by the state-aware plan)."""

    status: str  # to run | done | skipped | waiting
    changed: bool = False  # done, but its definition changed since it was applied


@dataclass(frozen=True)
class PlanStep:
    id: str  # instance id: `copy[pilot]` in a wave, else the step id
    step: str  # the step's own id
    phase: str
    wave: str | None
    action: str
    does: str  # the action's one-line description of this step
    description: str  # the author's `description`, if any
    risks: tuple[str, ...]
    rollback: str  # the rollback's description, ROLLBACK_NONE or ROLLBACK_MISSING
    rollback_action: str | None  # the rollback's action, when there is one
    when: str | bool | None
    on_failure: str
    idempotent: bool
    status: StepStatus | None = None  # None: planned from the file alone

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "step": self.step,
            "phase": self.phase,
            "wave": self.wave,
            "action": self.action,
            "does": self.does,
            "description": self.description,
            "risks": list(self.risks),
            "rollback": self.rollback,
            "rollback_action": self.rollback_action,
            "when": self.when,
            "on_failure": self.on_failure,
            "idempotent": self.idempotent,
            "status": self.status.status if self.status else None,
            "changed": self.status.changed if self.status else None,
        }


@dataclass(frozen=True)
class PlanContingency:
    id: str
    action: str
    does: str


@dataclass(frozen=True)
class PlanRisk:
    id: str
    description: str
    likelihood: str
    impact: str
    mitigation: str
    owner: str
    contingencies: tuple[PlanContingency, ...]
    named_by: tuple[str, ...]  # step ids (not instances) that name this risk

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "likelihood": self.likelihood,
            "impact": self.impact,
            "mitigation": self.mitigation,
            "owner": self.owner,
            "contingencies": [
                {"id": c.id, "action": c.action, "does": c.does} for c in self.contingencies
            ],
            "named_by": list(self.named_by),
        }


@dataclass(frozen=True)
class Plan:
    name: str
    file: str
    description: str
    owner: str
    digest: str
    groups: tuple[tuple[PlanStep, ...], ...]  # group k: steps that can run side by side
    risks: tuple[PlanRisk, ...]
    warnings: tuple[Problem, ...] = field(default=())
    cohorts: tuple[PlanCohort, ...] = field(default=())  # each cohort's waves, sizes, strata

    @property
    def steps(self) -> list[PlanStep]:
        return [s for group in self.groups for s in group]

    def matrix(self) -> dict[str, dict[str, list[str]]]:
        """likelihood -> impact -> risk ids (every cell present, rows and columns in order)."""
        cells: dict[str, dict[str, list[str]]] = {
            lk: {im: [] for im in IMPACTS} for lk in LIKELIHOODS
        }
        for r in self.risks:
            if r.likelihood in cells and r.impact in cells[r.likelihood]:
                cells[r.likelihood][r.impact].append(r.id)
        return cells


class _Describer:
    """One-line descriptions from each action's ``describe``, never failing the plan."""

    def __init__(self) -> None:
        self.reg = registry()
        self.actions: dict[str, Action | None] = {}

    def action(self, name: str) -> Action | None:
        if name not in self.actions:
            self.actions[name] = self.reg.get(name) if name in self.reg else None
        return self.actions[name]

    def __call__(self, call: Call) -> str:
        action = self.action(call.action)
        if action is None:  # pragma: no cover - the loader refuses unknown actions
            return call.action
        try:
            return str(action.describe(call.params))
        except Exception as exc:  # noqa: BLE001 - a plugin's describe must not sink the plan
            return f"{action.summary} (its description failed: {type(exc).__name__})"

    def idempotent(self, call: Call) -> bool:
        if call.idempotent is not None:
            return call.idempotent
        action = self.action(call.action)
        return bool(action.idempotent) if action is not None else False


def _rollback(inst: Instance, describe: _Describer) -> tuple[str, str | None]:
    rb = inst.step.rollback
    if rb is not None:
        return describe(_for_wave(rb, inst)), rb.action
    return (ROLLBACK_NONE if inst.step.rollback_declared else ROLLBACK_MISSING), None


def _wave_context(inst: Instance) -> dict[str, Any]:
    """``wave`` as templates see it (SPEC §2): id, index, vars, previous (None for the first)."""
    assert inst.wave is not None
    waves = inst.phase.waves
    i = inst.wave.index

    def one(k: int) -> dict[str, Any]:
        w = waves[k]
        return {"id": w.id, "index": w.index, "vars": dict(w.vars)}

    return {"wave": {**one(i), "previous": one(i - 1) if i > 0 else None}}


def _for_wave(call: Call, inst: Instance) -> Call:
    """The call with each template that uses nothing but ``wave`` rendered for this wave.

    A wave's values are fixed by the file, so the plan can show them (`where id % 100 < 10`);
    templates that use vars, secrets or step outputs are left as written.
    """
    if inst.wave is None:
        return call
    found = [(path, text) for path, text in iter_strings(call.params) if _wave_only(text)]
    if not found:
        return call
    context = _wave_context(inst)
    params: Any = copy.deepcopy(dict(call.params))
    for path, text in found:
        try:
            mode = template_mode(registry().get(call.action), str(path[0])) if path else "plain"
            value = render_string(text, context, mode)
        except RunbookError:
            continue
        target = params
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return replace(call, params=params)


def _wave_only(text: str) -> bool:
    parsed = scan(text)
    return not isinstance(parsed, SyntaxProblem) and parsed.names == {"wave"}


def build_plan(
    loaded: Loaded,
    statuses: Mapping[str, StepStatus] | None = None,
    cohorts: tuple[PlanCohort, ...] = (),
) -> Plan:
    """The plan of a loaded runbook; ``statuses`` (instance id -> status) from the run state;
    ``cohorts`` as ``cohorts.plan_cohorts`` read or drew them."""
    rb: Runbook = loaded.runbook
    dag = loaded.dag
    describe = _Describer()
    groups: list[tuple[PlanStep, ...]] = []
    for generation in dag.generations():
        group = []
        for node in generation:
            inst: Instance = dag.instances[node]
            step = inst.step
            rollback, rollback_action = _rollback(inst, describe)
            group.append(
                PlanStep(
                    id=inst.id,
                    step=step.id,
                    phase=inst.phase.id,
                    wave=inst.wave.id if inst.wave else None,
                    action=step.action,
                    does=describe(_for_wave(step.call, inst)),
                    description=step.call.description,
                    risks=step.risks,
                    rollback=rollback,
                    rollback_action=rollback_action,
                    when=step.when,
                    on_failure=step.on_failure.value,
                    idempotent=describe.idempotent(step.call),
                    status=statuses.get(node) if statuses else None,
                )
            )
        groups.append(tuple(group))
    named: dict[str, list[str]] = {r.id: [] for r in rb.risks}
    for phase in rb.phases:
        for s in phase.steps:
            for rid in s.risks:
                if rid in named and s.id not in named[rid]:
                    named[rid].append(s.id)
    risks = tuple(
        PlanRisk(
            id=r.id,
            description=r.description,
            likelihood=r.likelihood,
            impact=r.impact,
            mitigation=r.mitigation,
            owner=r.owner,
            contingencies=tuple(
                PlanContingency(c.id, c.call.action, describe(c.call))
                for cid in r.contingencies
                if (c := rb.contingency_by_id.get(cid)) is not None
            ),
            named_by=tuple(named[r.id]),
        )
        for r in rb.risks
    )
    return Plan(
        name=rb.name,
        file=rb.file,
        description=rb.description,
        owner=rb.owner,
        digest=rb.digest,
        groups=tuple(groups),
        risks=risks,
        warnings=tuple(loaded.warnings),
        cohorts=cohorts,
    )
