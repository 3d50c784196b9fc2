"""The checks of ``cohorts:`` that need no database (SPEC §7, §11): references to cohorts,
wave sizes that over-commit or leave members out, strata, and where ``marks`` may stand.

What depends on the data (a key column that is missing, ``min`` floors that add up to more
than the eligible members, a source query that fails) is checked when the cohort is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import Problem
from .model import HOLDOUT, Call, Cohort, Phase, Runbook, Step
from .templates import TemplateError, parse
from .yamlsource import Path

# actions that take `cohort:` in their `with` (their members: the wave's)
COHORT_ACTIONS = frozenset({"sql.copy", "sql.verify", "sql.exec", "check"})
# a cohort gate's condition sees these besides `value` and `values` (SPEC §7)
GATE_NAMES = frozenset({"baseline", "n", "n_baseline"})
MARKS = ("notified", "moved", "verified")


def _hint(name: str, options: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# actions that cannot run once per member
NOT_PER_MEMBER = frozenset(
    {"approval", "check", "wait", "notify", "sql.copy", "sql.verify", "sql.query"}
)


def step_cohort(step: Step) -> str | None:
    """The cohort a step works on per member: ``with.cohort``, notify's ``to.cohort``, or
    ``foreach.cohort``."""
    if step.foreach is not None:
        return step.foreach.cohort
    return call_cohort(step.call)


def call_cohort(call: Call) -> str | None:
    params: Mapping[str, Any] = call.params
    name = params.get("cohort")
    if isinstance(name, str):
        return name
    to = params.get("to")
    if call.action == "notify" and isinstance(to, dict) and isinstance(to.get("cohort"), str):
        return str(to["cohort"])
    return None


def check_cohorts(rb: Runbook) -> list[Problem]:
    out: list[Problem] = []
    src = rb.source
    names = sorted(rb.cohorts)
    for cohort in rb.cohorts.values():
        out.extend(_check_cohort(rb, cohort))
    for phase in rb.phases:
        if phase.cohort is not None and phase.cohort not in rb.cohorts:
            out.append(
                src.problem(
                    (*phase.path, "waves", "cohort"),
                    f"no cohort {phase.cohort!r} under `cohorts`{_hint(phase.cohort, names)}",
                )
            )
        for step in phase.steps:
            out.extend(_check_step(rb, phase, step, names))
    return out


def _check_step(rb: Runbook, phase: Phase, step: Step, names: list[str]) -> list[Problem]:
    out: list[Problem] = []
    src = rb.source
    name = step_cohort(step)
    where: Path = (
        (*step.path, "foreach", "cohort")
        if step.foreach is not None
        else (*step.path, "with", "cohort")
        if "cohort" in step.call.params
        else (*step.path, "with", "to", "cohort")
    )
    if step.foreach is not None and step.action in NOT_PER_MEMBER:
        out.append(
            src.problem(
                (*step.path, "foreach"),
                f"`foreach` runs an action once per member: {step.action} cannot (use it with "
                "http, shell, ssh, sql.exec or a third-party action)",
            )
        )
    if step.foreach is not None and "cohort" in step.call.params:
        out.append(
            src.problem(
                (*step.path, "with", "cohort"),
                "a `foreach` step works on one member at a time: drop `cohort:` from its `with`",
            )
        )
    if name is not None:
        if name not in rb.cohorts:
            out.append(
                src.problem(where, f"no cohort {name!r} under `cohorts`{_hint(name, names)}")
            )
        elif phase.cohort != name:
            out.append(
                src.problem(
                    where,
                    f"step {step.id!r} works on the members of cohort {name!r}, but its phase "
                    f"{phase.id!r} "
                    + (
                        f"runs the waves of cohort {phase.cohort!r}"
                        if phase.cohort
                        else "has no `waves: {cohort: " + name + "}`"
                    )
                    + ": a wave's members are known only in a phase of that cohort",
                )
            )
    if step.action == "check":
        out.extend(_check_gate(rb, step, name))
    if step.marks is not None and name is None:
        out.append(
            src.problem(
                (*step.path, "marks"),
                f"`marks` needs members: step {step.id!r} has no `cohort:` in its `with` "
                "(nor `to: {cohort: NAME}` for notify, nor `foreach`)",
            )
        )
    return out


def _check_gate(rb: Runbook, step: Step, cohort: str | None) -> list[Problem]:
    """A cohort gate reads (key, number) rows with `query`; a gate marks nothing; `baseline`,
    `n` and `n_baseline` exist only for a cohort gate."""
    src, params = rb.source, step.call.params
    out: list[Problem] = []
    if step.marks is not None:
        out.append(
            src.problem(
                (*step.path, "marks"),
                f"a gate marks no member: `marks` does not apply to step {step.id!r} (check)",
            )
        )
    if cohort is not None:
        for key in ("url", "command"):
            if key in params:
                out.append(
                    src.problem(
                        (*step.path, "with", key),
                        f"a cohort gate reads (key, number) rows with `query` and `dsn`, not "
                        f"`{key}`",
                    )
                )
        return out
    condition = params.get("condition")
    if isinstance(condition, str):
        try:
            names = parse("{{ " + condition + " }}").names
        except Exception:  # noqa: BLE001 - the template checks report a bad expression
            names = frozenset()
        used = sorted(names & GATE_NAMES)
        if used:
            out.append(
                src.problem(
                    (*step.path, "with", "condition"),
                    f"{', '.join(used)}: known only to a cohort gate (`cohort: NAME` in `with`, "
                    "in a phase of that cohort's waves)",
                )
            )
    return out


def _check_cohort(rb: Runbook, cohort: Cohort) -> list[Problem]:
    out: list[Problem] = []
    src = rb.source
    seen: dict[str, Path] = {}
    for wave in cohort.waves:
        if wave.id in seen:
            line = src.at(seen[wave.id]).line
            out.append(
                src.problem(
                    (*wave.path, "id"),
                    f"duplicate wave id {wave.id!r} in cohort {cohort.name!r} (first at line {line})",
                )
            )
        seen[wave.id] = wave.path
        if wave.id == HOLDOUT and cohort.holdout is not None:
            out.append(
                src.problem(
                    (*wave.path, "id"),
                    f"wave id {HOLDOUT!r} is the holdout's: rename this wave",
                )
            )
    rests = [w for w in cohort.waves if w.size.kind == "rest"]
    sized = [w for w in cohort.waves if w.size.kind == "rest" or w.size.value > 0]
    for w in rests:
        if sized and w is not sized[-1]:
            out.append(
                src.problem(
                    (*w.path, "size"),
                    "`rest` takes what the waves before it left: only the last wave may say it",
                )
            )
    shares = [w for w in cohort.waves if w.size.kind == "share"]
    total = sum(w.size.value for w in shares)
    if total > 1.0 + 1e-9:
        shown = " + ".join(w.size.text for w in shares)
        out.append(
            src.problem(
                (*cohort.path, "waves"),
                f"the wave sizes over-commit the eligible members: {shown} = {total * 100:g}%",
            )
        )
    counts = [w for w in cohort.waves if w.size.kind == "count"]
    if not rests and not counts and total < 1.0 - 1e-9 and cohort.waves:
        out.append(
            src.problem(
                (*cohort.path, "waves"),
                f"the waves cover {total * 100:g}% of the eligible members: every member must "
                "be in a wave (make the last one `size: rest`)",
            )
        )
    if cohort.holdout is not None and cohort.holdout.kind == "share" and cohort.waves:
        last = cohort.waves[-1].size
        if last.kind == "share" and cohort.holdout.value > last.value + 1e-9:
            out.append(
                src.problem(
                    (*cohort.path, "holdout", "size"),
                    f"the holdout ({cohort.holdout.text}) is drawn from the last wave's share "
                    f"({last.text}) and cannot be larger",
                )
            )
    attributes = set(cohort.attributes)
    for i, column in enumerate(cohort.stratify_by):
        if column not in attributes:
            out.append(
                src.problem(
                    (*cohort.path, "stratify_by", i),
                    f"stratify_by {column!r} must be one of the cohort's `attributes` (the "
                    "strata are kept in the ledger)",
                )
            )
    if cohort.key in attributes:
        out.append(
            src.problem(
                (*cohort.path, "attributes"),
                f"the key {cohort.key!r} is kept anyway: leave it out of `attributes`",
            )
        )
    out.extend(_check_dsn(rb, cohort))
    return out


def _check_dsn(rb: Runbook, cohort: Cohort) -> list[Problem]:
    path: Path = (*cohort.path, "source", "dsn")
    if "{" not in cohort.dsn:
        return []
    try:
        parsed = parse(cohort.dsn)
    except TemplateError as exc:
        return [rb.source.problem(path, f"template error: {exc}")]
    except Exception as exc:  # noqa: BLE001 - jinja2's syntax errors
        return [rb.source.problem(path, f"template syntax error: {exc}")]
    out = []
    for ref in parsed.refs:
        if ref.root == "vars" and ref.parts[0] not in rb.vars:
            out.append(rb.source.problem(path, f"undeclared variable vars.{ref.parts[0]}"))
        elif ref.root == "secrets" and ref.parts[0] not in rb.secrets:
            out.append(rb.source.problem(path, f"undeclared secret secrets.{ref.parts[0]}"))
    for name in parsed.names - {"vars", "secrets"}:
        out.append(
            rb.source.problem(path, f"a cohort's source sees only vars and secrets, not {name!r}")
        )
    return out


def lint_cohorts(rb: Runbook) -> list[Problem]:
    out: list[Problem] = []
    used = {p.cohort for p in rb.phases if p.cohort}
    for cohort in rb.cohorts.values():
        if cohort.name not in used:
            out.append(
                rb.source.problem(
                    cohort.path,
                    f"cohort {cohort.name!r} is used by no phase (`waves: {{cohort: "
                    f"{cohort.name}}}`)",
                    severity="warning",
                    code="cohort-unused",
                )
            )
    for phase in rb.phases:
        if phase.cohort is None:
            continue
        for step in phase.steps:
            if step.action == "sql.copy" and "cohort" not in step.call.params:
                out.append(
                    rb.source.problem(
                        (*step.path, "with"),
                        f"step {step.id!r} moves data in a wave of cohort {phase.cohort!r} "
                        f"without `cohort: {phase.cohort}`: it would copy by its `where`, not "
                        "by the wave's members",
                        severity="warning",
                        code="copy-without-cohort",
                    )
                )
    return out
