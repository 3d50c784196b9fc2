"""Lint warnings of SPEC §6 and §9 (errors under ``validate --strict``)."""

from __future__ import annotations

from ..actions import command_keys, registry, sql_keys, url_keys
from ..errors import Problem
from .model import Runbook
from .templates import iter_strings

# names whose values come from outside the runbook: customers, databases, servers (SPEC §9);
# `failed_step.id`, `.phase`, `.wave` and `.action` are the runbook's own names
_OUTSIDE_ROOTS = ("recipient", "member", "failed_step", "steps")


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
    out.extend(_outside_data(rb))
    return out


def _outside_data(rb: Runbook) -> list[Problem]:
    """`| raw` on outside data in a command or a URL; outside data in SQL text."""
    from .checks import calls

    reg = registry()
    out: list[Problem] = []
    for call, _phase, _kind in calls(rb):
        if call.action not in reg:
            continue
        action = reg.get(call.action)
        raw_keys = command_keys(action) | url_keys(action)
        for key in sorted(raw_keys | sql_keys(action)):
            for rel, text in iter_strings(call.params.get(key)):
                if not any(root in text for root in _OUTSIDE_ROOTS):
                    continue
                path = (*call.path, "with", key, *rel)
                if key in raw_keys and "raw" in text:
                    for name in _outside(text, raw_only=True):
                        shell = key in command_keys(action)
                        what, done = ("command", "quoted") if shell else ("URL", "encoded")
                        out.append(
                            _warn(
                                rb,
                                path,
                                f"`{name} | raw` writes outside data into a {what} as it is: "
                                f"drop `| raw` (values are {done} for you)",
                                "raw-outside-data",
                            )
                        )
                if key in sql_keys(action):
                    for name in _outside(text, raw_only=False):
                        out.append(
                            _warn(
                                rb,
                                path,
                                f"`{name}` is outside data templated into SQL text: pass it "
                                "as a bound parameter (`params:`) instead",
                                "sql-outside-data",
                            )
                        )
    return out


def _outside(source: str, raw_only: bool) -> list[str]:
    """The outside-data names ``source`` uses (only under ``| raw`` when ``raw_only``); a name
    set from outside data, or a loop variable over it, counts as that data."""
    from jinja2 import TemplateSyntaxError

    from .taint import outside_in, outside_under_raw
    from .templates import environment

    try:
        ast = environment().parse(source)
    except TemplateSyntaxError:
        return []  # the checks report it
    return outside_under_raw(ast) if raw_only else outside_in(ast)
