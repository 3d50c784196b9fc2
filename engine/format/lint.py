"""Lint warnings of SPEC §6 (errors under ``validate --strict``)."""

from __future__ import annotations

from ..actions import registry
from ..errors import Problem
from .model import Runbook


def _warn(rb: Runbook, path: tuple[str | int, ...], message: str, code: str) -> Problem:
    return rb.source.problem(path, message, severity="warning", code=code)


def lint(rb: Runbook) -> list[Problem]:
    out: list[Problem] = []
    reg = registry()
    named: set[str] = set()
    for phase in rb.phases:
        if not phase.waves and not phase.steps:
            out.append(_warn(rb, phase.path, f"phase {phase.id!r} has no steps", "empty-phase"))
        for step in phase.steps:
            named.update(step.risks)
            if step.rollback_declared or step.action not in reg:
                continue
            if reg.get(step.action).changes:
                out.append(
                    _warn(
                        rb,
                        step.path,
                        f"step {step.id!r} ({step.action}) changes something but has no "
                        "`rollback` (write `rollback: none` if there is nothing to undo)",
                        "no-rollback",
                    )
                )
    used: set[str] = set()
    for risk in rb.risks:
        used.update(risk.contingencies)
        if not risk.contingencies:
            out.append(
                _warn(rb, risk.path, f"risk {risk.id!r} has no contingency", "risk-no-contingency")
            )
        if risk.impact in ("high", "critical") and risk.id not in named:
            out.append(
                _warn(
                    rb,
                    risk.path,
                    f"{risk.impact} risk {risk.id!r} is named by no step: nothing would trigger "
                    "its contingencies",
                    "risk-unused",
                )
            )
    from .cohorts import lint_cohorts

    out.extend(lint_cohorts(rb))
    for c in rb.contingencies:
        if c.id not in used:
            out.append(
                _warn(rb, c.path, f"contingency {c.id!r} is named by no risk", "contingency-unused")
            )
    return out
