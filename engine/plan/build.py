"""What ``apply`` would do: the steps in order, grouped by what can run side by side, with their
risks and rollbacks, and the risk register.  Typed records; ``plan_render`` turns them into
text, markdown or JSON.

Each ``PlanStep`` has a ``status`` (and a ``changed`` flag) for the state-aware plan: ``None``
while the plan is built from the file alone.  Once run state exists, the caller passes each
step's status (``to run``, ``done``, ``skipped``, ``waiting``; ``changed`` marks a done step
whose definition changed since it was applied) through ``build_plan(..., statuses=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..actions import Action, registry
from ..errors import Problem
from ..format.loader import Loaded
from ..format.model import IMPACTS, LIKELIHOODS, Call, Instance, Runbook
from ..graph.dag import Dag
from .cohorts import PlanCohort
from .preview import Preview

# What a plan says of a step's rollback when it has no rollback action.
ROLLBACK_NONE = "none"  # `rollback: none`: nothing to undo, said on purpose
ROLLBACK_MISSING = "no rollback"  # no `rollback` key at all


@dataclass(frozen=True)
class StepStatus:
    """A step's standing against the run state (filled by the state-aware plan)."""

    status: str  # to run | done | skipped | waiting
    changed: bool = False  # done, but its definition changed since it was applied
    note: str | None = None  # a waiting approval: `1 of 2 approvals (...); approval void: ...`
    other_vars: bool = False  # done, with other vars than these (run again only by --replace)


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
            "other_vars": self.status.other_vars if self.status else None,
            "note": self.status.note if self.status else None,
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

    def __call__(self, call: Call, params: Mapping[str, Any] | None = None) -> str:
        """The call's description, of ``params`` when given (its params as the plan shows them)."""
        action = self.action(call.action)
        if action is None:  # pragma: no cover - the loader refuses unknown actions
            return call.action
        try:
            return str(action.describe(call.params if params is None else params))
        except Exception as exc:  # noqa: BLE001 - a plugin's describe must not sink the plan
            return f"{action.summary} (its description failed: {type(exc).__name__})"

    def idempotent(self, call: Call) -> bool:
        if call.idempotent is not None:
            return call.idempotent
        action = self.action(call.action)
        return bool(action.idempotent) if action is not None else False


def _rollback(inst: Instance, describe: _Describer, preview: Preview) -> tuple[str, str | None]:
    rb = inst.step.rollback
    if rb is not None:
        return describe(rb, preview.params(rb.params, inst, describe.action(rb.action))), rb.action
    return (ROLLBACK_NONE if inst.step.rollback_declared else ROLLBACK_MISSING), None


def build_plan(
    loaded: Loaded,
    statuses: Mapping[str, StepStatus] | None = None,
    values: Mapping[str, Any] | None = None,
    cohorts: tuple[PlanCohort, ...] = (),
) -> Plan:
    """The plan of a loaded runbook; ``statuses`` (instance id -> status) from the run state;
    ``cohorts`` as ``cohorts.plan_cohorts`` read or drew them.

    Templates are shown rendered with the variables' ``values`` (default: the runbook's
    defaults) and each wave's values; what only a run knows is named (see preview.py).
    """
    rb: Runbook = loaded.runbook
    dag = Dag(loaded.order)
    describe = _Describer()
    if values is None:
        values = {n: d.default for n, d in rb.vars.items() if d.has_default}
    preview = Preview(values)
    groups: list[tuple[PlanStep, ...]] = []
    for generation in dag.generations():
        group = []
        for node in generation:
            inst: Instance = dag.instances[node]
            step = inst.step
            rollback, rollback_action = _rollback(inst, describe, preview)
            group.append(
                PlanStep(
                    id=inst.id,
                    step=step.id,
                    phase=inst.phase.id,
                    wave=inst.wave.id if inst.wave else None,
                    action=step.action,
                    does=describe(
                        step.call,
                        preview.params(step.call.params, inst, describe.action(step.action)),
                    ),
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
                PlanContingency(
                    c.id,
                    c.call.action,
                    describe(
                        c.call, preview.params(c.call.params, None, describe.action(c.call.action))
                    ),
                )
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
