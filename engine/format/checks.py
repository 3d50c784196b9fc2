"""Semantic checks after the schema: ids, references, actions, templates, waves.

Each check returns located ``Problem``s; the loader runs all of them and reports everything at
once.  Lint warnings (made errors by ``validate --strict``) live in ``lint.py``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

from ..actions import (
    command_keys,
    expression_keys,
    late_keys,
    late_names,
    registry,
    url_keys,
)
from ..errors import Problem
from .contexts import misplaced_values, values_before_path
from .model import Call, Phase, Runbook
from .names import SyntaxProblem, scan
from .schema import check as schema_check
from .shellsyntax import MESSAGES
from .templates import CONTEXT_NAMES, Reference
from .yamlsource import Path

_STEP_FIELDS = ("outputs", "status", "id")
_WAVE_FIELDS = ("id", "index", "vars", "previous", "cohort", "attempt")
_RUN_FIELDS = ("id", "started_at")
_FAILED_FIELDS = ("id", "error", "phase", "wave", "action", "outputs")
_VAR_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "list": (list,),
    "mapping": (dict,),
}


def hint(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_ids(rb: Runbook) -> list[Problem]:
    out: list[Problem] = []
    seen: dict[str, Path] = {}

    def claim(ident: str, path: Path, what: str) -> None:
        if ident in seen:
            line = rb.source.at(seen[ident]).line
            out.append(
                rb.source.problem(
                    (*path, "id"), f"duplicate id {ident!r} ({what}; first used at line {line})"
                )
            )
        else:
            seen[ident] = path

    for phase in rb.phases:
        claim(phase.id, phase.path, "phase")
        for step in phase.steps:
            claim(step.id, step.path, "step")
        waves: dict[str, Path] = {}
        for wave in phase.waves:
            if wave.id in waves:
                line = rb.source.at(waves[wave.id]).line
                out.append(
                    rb.source.problem(
                        (*wave.path, "id"),
                        f"duplicate wave id {wave.id!r} in phase {phase.id!r} (first at line {line})",
                    )
                )
            waves[wave.id] = wave.path
        if phase.waves and not phase.steps:
            out.append(rb.source.problem(phase.path, f"phase {phase.id!r} has waves but no steps"))
    for c in rb.contingencies:
        claim(c.id, c.path, "contingency")
    risks: dict[str, Path] = {}
    for risk in rb.risks:
        if risk.id in risks:
            line = rb.source.at(risks[risk.id]).line
            out.append(
                rb.source.problem(
                    (*risk.path, "id"), f"duplicate risk id {risk.id!r} (first at line {line})"
                )
            )
        risks[risk.id] = risk.path
    return out


def check_inventory(rb: Runbook) -> list[Problem]:
    """``ssh`` steps name inventory hosts and groups that exist (literal names only)."""
    out: list[Problem] = []
    groups = {g for h in rb.hosts.values() for g in h.groups}
    for call, _phase, _kind in calls(rb):
        if call.action != "ssh":
            continue
        for key, known, what in (("hosts", rb.hosts, "host"), ("groups", groups, "group")):
            names = call.params.get(key)
            if not isinstance(names, list):
                continue
            for i, name in enumerate(names):
                if isinstance(name, str) and "{" not in name and name not in known:
                    out.append(
                        rb.source.problem(
                            (*call.path, "with", key, i),
                            f"no {what} {name!r} in the runbook's `hosts` inventory"
                            f"{hint(name, sorted(known))}",
                        )
                    )
    return out


def check_references(rb: Runbook) -> list[Problem]:
    out: list[Problem] = []
    risk_ids = list(rb.risk_by_id)
    for phase in rb.phases:
        for step in phase.steps:
            for i, name in enumerate(step.needs):
                if name == step.id:
                    out.append(
                        rb.source.problem(
                            (*step.path, "needs", i), f"step {step.id!r} needs itself"
                        )
                    )
            for i, rid in enumerate(step.risks):
                if rid not in rb.risk_by_id:
                    out.append(
                        rb.source.problem(
                            (*step.path, "risks", i),
                            f"risk {rid!r} is not declared under `risks`{hint(rid, risk_ids)}",
                        )
                    )
            if step.on_failure.value == "rollback-wave" and not phase.waves:
                out.append(
                    rb.source.problem(
                        (*step.path, "on_failure"),
                        "`rollback-wave` needs a phase with `waves`; use `rollback` here",
                    )
                )
    contingency_ids = list(rb.contingency_by_id)
    for risk in rb.risks:
        for i, cid in enumerate(risk.contingencies):
            if cid not in rb.contingency_by_id:
                out.append(
                    rb.source.problem(
                        (*risk.path, "contingencies", i),
                        f"unknown contingency {cid!r}{hint(cid, contingency_ids)}",
                    )
                )
    for name, decl in rb.vars.items():
        if decl.has_default and decl.default is not None and decl.type in _VAR_TYPES:
            ok = isinstance(decl.default, _VAR_TYPES[decl.type]) and not (
                decl.type in ("integer", "number") and isinstance(decl.default, bool)
            )
            if not ok:
                out.append(
                    rb.source.problem(
                        (*decl.path, "default"),
                        f"default of {name!r} is not a {decl.type}: {decl.default!r}",
                    )
                )
    return out


def calls(rb: Runbook) -> Iterator[tuple[Call, Phase | None, str]]:
    """Every runnable call with its phase and its kind: step, rollback or contingency."""
    for phase in rb.phases:
        for step in phase.steps:
            yield step.call, phase, "step"
            if step.rollback is not None:
                yield step.rollback, phase, "rollback"
    for c in rb.contingencies:
        yield c.call, None, "contingency"


def check_actions(rb: Runbook) -> list[Problem]:
    out: list[Problem] = []
    reg = registry()
    schemas: dict[str, Mapping[str, Any]] = {}
    for call, _phase, _kind in calls(rb):
        if not call.action:
            continue  # the schema check reported it
        if call.action not in reg:
            names = reg.names()
            out.append(
                rb.source.problem(
                    (*call.path, "action"),
                    f"unknown action {call.action!r}{hint(call.action, names)} "
                    f"(known: {', '.join(names)})",
                    code="unknown-action",
                )
            )
            continue
        if not isinstance(_raw(rb.data, call.path).get("with", {}), dict):
            continue  # the schema check said `with` must be a mapping; nothing more to say
        schema = schemas.get(call.action)
        if schema is None:
            schema = schemas[call.action] = reg.get(call.action).schema
        out.extend(
            schema_check(call.params, schema, rb.source, (*call.path, "with"), templates_ok=True)
        )
        if call.action == "approval":
            out.extend(_approval_count(rb, call.params, call.path))
    return out


def _approval_count(rb: Runbook, params: Mapping[str, Any], path: Path) -> list[Problem]:
    """``required`` larger than the names ``approvers`` lists: the step could never go on."""
    required, approvers = params.get("required", 1), params.get("approvers")
    if isinstance(required, bool) or not isinstance(required, int):
        return []
    if not isinstance(approvers, list) or len(set(map(str, approvers))) >= required:
        return []
    return [
        rb.source.problem(
            (*path, "with", "required"),
            f"{required} approvals are required but approvers names only "
            f"{len(set(map(str, approvers)))}: the step could never go on",
        )
    ]


def _raw(data: Any, path: Path) -> dict[str, Any]:
    """The mapping at ``path`` in the document as read (``{}`` if there is none)."""
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return {}
    return node if isinstance(node, dict) else {}


class _Scope:
    """What a template at one place may refer to."""

    def __init__(
        self, rb: Runbook, phase: Phase | None, kind: str, extra: frozenset[str] = frozenset()
    ) -> None:
        self.rb = rb
        self.phase = phase if phase is not None and phase.waves else None
        self.roots = {"vars", "secrets", "steps", "run", *extra}
        if self.phase is not None:
            self.roots.add("wave")
        if kind == "contingency":
            self.roots.add("failed_step")

    def check(self, ref: Reference) -> str | None:
        rb = self.rb
        root, parts = ref.root, ref.parts
        if root == "vars":
            if parts[0] not in rb.vars:
                return f"undeclared variable vars.{parts[0]}{hint(parts[0], list(rb.vars))}"
        elif root == "secrets":
            if parts[0] not in rb.secrets:
                return f"undeclared secret secrets.{parts[0]}{hint(parts[0], list(rb.secrets))}"
        elif root == "steps":
            name = parts[0]
            if (
                name not in rb.steps
                and name.replace("_", "-") not in rb.steps
                and (name not in rb.instances)
            ):
                return f"unknown step steps.{name}{hint(name.replace('_', '-'), list(rb.steps))}"
            if len(parts) > 1 and parts[1] not in _STEP_FIELDS:
                return f"steps.{name}.{parts[1]}: a step has {', '.join(_STEP_FIELDS)}"
        elif root == "wave":
            return self._wave(parts)
        elif root == "run":
            if parts[0] not in _RUN_FIELDS:
                return f"run.{parts[0]}: the run has {', '.join(_RUN_FIELDS)}"
        elif root == "failed_step" and parts[0] not in _FAILED_FIELDS:
            return f"failed_step.{parts[0]}: it has {', '.join(_FAILED_FIELDS)}"
        return None

    def _wave(self, parts: tuple[str, ...]) -> str | None:
        assert self.phase is not None
        if parts[0] == "previous":
            parts = parts[1:]
            if not parts:
                return None
        if parts[0] not in _WAVE_FIELDS:
            return f"wave.{parts[0]}: a wave has {', '.join(_WAVE_FIELDS)}"
        if parts[0] == "vars" and len(parts) > 1:
            missing = [w.id for w in self.phase.waves if parts[1] not in w.vars]
            if missing:
                return f"wave.vars.{parts[1]} is not set in wave(s) {', '.join(missing)}"
        return None


def _template_problems(rb: Runbook, source: str, path: Path, scope: _Scope) -> list[Problem]:
    parsed = scan(source)
    if isinstance(parsed, SyntaxProblem):
        where = f" (template line {parsed.lineno})" if parsed.lineno > 1 else ""
        return [
            rb.source.problem(path, f"template syntax: {parsed.message}{where}", code="template")
        ]
    out: list[Problem] = []
    for name in sorted(parsed.names - scope.roots):
        if name == "wave" and "wave" not in scope.roots:
            msg = "`wave` is only defined in the steps of a phase with `waves`"
        elif name == "failed_step":
            msg = "`failed_step` is only defined in contingencies"
        else:
            allowed = ", ".join(n for n in CONTEXT_NAMES if n in scope.roots)
            msg = f"unknown name {name!r} in template (available: {allowed})"
        out.append(rb.source.problem(path, msg, code="template"))
    for ref in parsed.refs:
        if ref.root in scope.roots:
            msg2 = scope.check(ref)
            if msg2:
                out.append(rb.source.problem(path, msg2, code="template"))
    if "secrets" in parsed.names:
        out.extend(_secret_problems(rb, source, path))
    return out


def _expression_problems(
    rb: Runbook, expr: str, path: Path, key: str, scope: _Scope
) -> list[Problem]:
    """A `with` value that is a bare Jinja2 expression (check's `condition`)."""
    if "{{" in expr or "{%" in expr:
        return [
            rb.source.problem(
                path,
                f"`{key}` is a Jinja2 expression, written without {{{{ }}}}: "
                "e.g. `value < vars.limit`",
                code="template",
            )
        ]
    return _template_problems(rb, "{{ " + expr + " }}", path, scope)


def check_templates(rb: Runbook) -> list[Problem]:
    out: list[Problem] = []
    reg = registry()
    late_by_action: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    expressions: dict[str, frozenset[str]] = {}
    scopes: dict[tuple[str | None, str, frozenset[str]], _Scope] = {}
    clean: set[tuple[str, int]] = set()  # (template, scope) pairs known to have no problem

    def scope_for(phase: Phase | None, kind: str, names: frozenset[str]) -> _Scope:
        key = (phase.id if phase is not None and phase.waves else None, kind, names)
        scope = scopes.get(key)
        if scope is None:
            scope = scopes[key] = _Scope(rb, phase, kind, names)
        return scope

    def check(text: str, path: Path, scope: _Scope) -> None:
        key = (text, id(scope))
        if key in clean:
            return
        found = _template_problems(rb, text, path, scope)
        if found:
            out.extend(found)
        else:
            clean.add(key)

    commands_by_action: dict[str, frozenset[str]] = {}
    urls_by_action: dict[str, frozenset[str]] = {}
    per_member = {
        id(c)
        for p in rb.phases
        for st in p.steps
        if st.foreach is not None
        for c in (st.call, st.rollback)
        if c is not None
    }
    for call, phase, kind in calls(rb):
        late = late_by_action.get(call.action)
        if late is None:
            action = reg.get(call.action) if call.action in reg else None
            late = (late_keys(action), late_names(action)) if action else (frozenset(), frozenset())
            late_by_action[call.action] = late
            commands_by_action[call.action] = command_keys(action) if action else frozenset()
            urls_by_action[call.action] = url_keys(action) if action else frozenset()
        for key in commands_by_action[call.action]:
            out.extend(_quoted_in_command(rb, call, key))
        for key in urls_by_action[call.action]:
            out.extend(_outside_in_url_host(rb, call, key))
        member = frozenset({"member"}) if id(call) in per_member else frozenset()
        scope = scope_for(phase, kind, member)
        exprs = expressions.get(call.action)
        if exprs is None:
            exprs = expressions[call.action] = (
                expression_keys(reg.get(call.action)) if call.action in reg else frozenset()
            )
        for rel, text in _template_strings(call.params):
            if rel and rel[0] in exprs:
                continue  # a bare expression: checked below
            if late[0] and rel and rel[0] in late[0]:
                check(text, (*call.path, "with", *rel), scope_for(phase, kind, late[1] | member))
            else:
                check(text, (*call.path, "with", *rel), scope)
        for key in sorted(exprs):
            expr = call.params.get(key)
            if isinstance(expr, str):
                where = scope_for(phase, kind, late[1] if key in late[0] else frozenset())
                out.extend(_expression_problems(rb, expr, (*call.path, "with", key), key, where))
    for phase in rb.phases:
        for step in phase.steps:
            if isinstance(step.when, str):
                expr = step.when.strip()
                source = expr if expr.startswith("{{") else "{{ " + expr + " }}"
                check(source, (*step.path, "when"), scope_for(phase, "step", frozenset()))
    return out


def _quoted_in_command(rb: Runbook, call: Call, key: str) -> list[Problem]:
    """A ``{{ }}`` where a quoted word does not protect its value (inside quotes, a comment,
    a here-document, backquotes, after ``eval``, in ``sh -c``'s script: ``shellsyntax``), so
    it is an error at the ``{{`` (SPEC §9, §11)."""
    out: list[Problem] = []
    for rel, text in _template_strings(call.params.get(key)):
        for offset, kind in misplaced_values(text):
            out.append(
                rb.source.problem_in(
                    (*call.path, "with", key, *rel),
                    text,
                    offset,
                    f"`{{{{ }}}}` {MESSAGES[kind]}; `| raw` only for a value the runbook "
                    "itself vouches for",
                    code="template",
                )
            )
    return out


def _outside_in_url_host(rb: Runbook, call: Call, key: str) -> list[Problem]:
    """Outside data at the start of a URL or in its scheme, userinfo, host or port: it could
    send the request, and its credentials, to another host (SPEC §9)."""
    from jinja2 import TemplateSyntaxError

    from .taint import outside, outside_locals
    from .templates import environment

    out: list[Problem] = []
    for rel, text in _template_strings(call.params.get(key)):
        if not any(root in text for root in ("steps", "member", "recipient", "failed_step")):
            continue
        try:
            tainted = outside_locals(environment().parse(text))
            blocks = [(o, environment().parse(b)) for o, b in values_before_path(text)]
        except TemplateSyntaxError:
            continue  # reported as a syntax error
        for offset, ast in blocks:
            names = list(outside(ast, tainted))
            if names:
                out.append(
                    rb.source.problem_in(
                        (*call.path, "with", key, *rel),
                        text,
                        offset,
                        f"`{names[0]}` is outside data in the scheme, host or port of a URL: "
                        "it could send the request (and its credentials) to another host; "
                        "name the host in the runbook and put the value in the path or "
                        "query (encoded), or write `| raw` if the runbook vouches for it",
                        code="template",
                    )
                )
    return out


def _secret_problems(rb: Runbook, text: str, path: Path) -> list[Problem]:
    """Uses of a secret the sandbox refuses (``taint.secret_problems``), at their ``{{``."""
    from jinja2 import TemplateSyntaxError

    from .taint import secret_problems
    from .templates import environment

    try:
        ast = environment().parse(text)
    except TemplateSyntaxError:
        return []
    out: list[Problem] = []
    for lineno, message in secret_problems(ast):
        out.append(
            rb.source.problem_in(path, text, _block_on_line(text, lineno), message, code="template")
        )
    return out


def _block_on_line(text: str, lineno: int) -> int:
    """The offset of the first ``{{`` mentioning a secret on the template's line ``lineno``
    (else the first ``{{`` from that line on)."""
    start = 0
    for _ in range(lineno - 1):
        nl = text.find("\n", start)
        if nl < 0:
            break
        start = nl + 1
    end = text.find("\n", start)
    line = text[start : end if end >= 0 else len(text)]
    pos = 0
    while True:
        found = line.find("{{", pos)
        if found < 0:
            break
        close = line.find("}}", found)
        if "secrets" in line[found : close if close >= 0 else len(line)]:
            return start + found
        pos = found + 2
    found = text.find("{{", start)
    return found if found >= 0 else max(0, text.find("{{"))


def _template_strings(value: Any) -> list[tuple[Path, str]]:
    """``templates.iter_strings`` without generators (it runs over every `with` of a file)."""
    out: list[tuple[Path, str]] = []
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, v = stack.pop()
        if type(v) is str:
            if "{{" in v or "{%" in v or "{#" in v:
                out.append((path, v))
        elif isinstance(v, dict):
            stack.extend(((*path, k), x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend(((*path, i), x) for i, x in enumerate(v))
    return out


def all_checks(rb: Runbook) -> list[Problem]:
    from .cohorts import check_cohorts

    out: list[Problem] = []
    for check in (
        check_ids,
        check_references,
        check_inventory,
        check_actions,
        check_templates,
        check_cohorts,
    ):
        out.extend(check(rb))
    return out
