"""JSON Schemas of the format and of each built-in action, and located, readable errors.

``schemas/runbook.schema.json`` is written for people and editors: each step's ``with`` is tied
to its action's schema (``allOf``/``if``/``then``) so that the YAML language server completes
it.  The engine validates with a copy without those ties and checks every ``with`` against
its action's own schema (built-in or plugin), so that each problem is reported once.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any

from ..errors import Problem
from ..schemas import schema_text
from .fastschema import proven_valid
from .patterns import ecma, searcher
from .yamlsource import Path, SourceMap

ID_PATTERN = "^[a-z0-9][a-z0-9-]*$"
# action schemas let a typed `with` value be one `{{ expression }}` through this branch
TEMPLATE_BRANCH = {"$ref": "#/$defs/template"}
NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
_TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "list",
    dict: "mapping",
    type(None): "null",
}
_SCHEMA_TYPES = {"object": "mapping", "array": "list", "null": "null"}


@cache
def runtime_schema() -> Mapping[str, Any]:
    """The format's schema without the editor-only ties of ``with`` to action schemas."""
    schema = json.loads(schema_text("runbook"))
    for name in ("step", "rollback", "contingency"):
        node = schema["$defs"][name]
        node.pop("allOf", None)
        for branch in node.get("anyOf", []):
            branch.pop("allOf", None)
    result: Mapping[str, Any] = schema
    return result


_VALIDATORS: dict[int, Any] = {}


def validator_for(schema: Mapping[str, Any]) -> Any:
    """A cached Draft 2020-12 validator (jsonschema is imported on first use).

    Its regular expressions mean what JSON Schema says (ECMA-262: ``$`` is the end of the
    text, not "before a final newline"; see patterns.py).
    """
    key = id(schema)
    v = _VALIDATORS.get(key)
    if v is None:
        v = _ecma_validator_class()(schema)
        _VALIDATORS[key] = v
    return v


@cache
def _ecma_validator_class() -> Any:
    from jsonschema import Draft202012Validator, ValidationError, validators

    keywords = Draft202012Validator.VALIDATORS
    pattern_properties = keywords["patternProperties"]
    additional_properties = keywords["additionalProperties"]

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not searcher(patrn)(instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def ecma_keys(patterns: Mapping[str, Any]) -> dict[str, Any]:
        return {ecma(k): v for k, v in patterns.items()}

    def pattern_props(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        yield from pattern_properties(validator, ecma_keys(value), instance, schema)

    def additional(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(schema, dict) and "patternProperties" in schema:
            schema = {**schema, "patternProperties": ecma_keys(schema["patternProperties"])}
        yield from additional_properties(validator, value, instance, schema)

    return validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator,
        {
            "pattern": pattern,
            "patternProperties": pattern_props,
            "additionalProperties": additional,
        },
    )


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def check(
    instance: Any,
    schema: Mapping[str, Any],
    smap: SourceMap,
    base: Path = (),
    *,
    templates_ok: bool = False,
) -> list[Problem]:
    """Every problem of ``instance`` against ``schema``, located through ``smap``.

    With ``templates_ok``, a value that is a template string is not held to its schema here:
    it is checked again once rendered, at run time.
    """
    if proven_valid(schema, instance, lenient=templates_ok):
        return []  # the common case, without jsonschema (see fastschema.py)
    out: list[Problem] = []
    for error in validator_for(schema).iter_errors(instance):
        out.extend(_explain(error, smap, base, templates_ok))
    return _dedupe(out)


def _dedupe(problems: Iterable[Problem]) -> list[Problem]:
    seen: set[tuple[int, int, str, str]] = set()
    out = []
    for p in problems:
        key = (p.line, p.col, p.path, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _explain(error: Any, smap: SourceMap, base: Path, templates_ok: bool) -> list[Problem]:
    path: Path = (*base, *error.absolute_path)
    inst = error.instance
    kind = error.validator
    sch = error.schema if isinstance(error.schema, dict) else {}
    if templates_ok and is_template(inst):
        return []
    if kind == "additionalProperties" and isinstance(inst, dict):
        known = list(sch.get("properties", {}))
        extras = [k for k in inst if k not in sch.get("properties", {})]
        return [smap.problem((*path, k), _unknown_key(k, known), key=True) for k in extras]
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(inst, dict) and k not in inst]
        return [smap.problem(path, f"missing required key {k!r}") for k in missing]
    if kind in ("anyOf", "oneOf"):
        return _explain_branches(error, smap, base, path, templates_ok)
    if kind == "dependentRequired":
        m = re.match(r"^'(.+)' is a dependency of '(.+)'$", str(error.message))
        if m:
            return [smap.problem((*path, m.group(2)), f"`{m.group(2)}` needs `{m.group(1)}`")]
    if kind == "propertyNames":
        return [smap.problem((*path, inst), _bad_name(inst, error), key=True)]
    if kind == "minProperties" or kind == "maxProperties":
        names = " or ".join(repr(k) for k in sch.get("properties", {}))
        if sch.get("minProperties") == 1 and sch.get("maxProperties") == 1:
            return [smap.problem(path, f"give exactly one of {names}")]
    return [smap.problem(path, _message(error, inst, sch, path))]


def _message(error: Any, inst: Any, sch: Mapping[str, Any], path: Path = ()) -> str:
    kind = error.validator
    if kind == "type":
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        want = " or ".join(_SCHEMA_TYPES.get(n, n) for n in names)
        return f"expected {want}, got {type_name(inst)}"
    if kind == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        hint = _did_you_mean(inst, [str(o) for o in error.validator_value])
        return f"expected one of {options}, got {inst!r}{hint}"
    if kind == "const":
        return f"expected {error.validator_value!r}, got {inst!r}"
    if kind == "pattern":
        return _pattern_message(inst, error.validator_value, path[-1] if path else "")
    if kind == "minItems" and error.validator_value == 1:
        return "must not be empty"
    if kind == "minLength" and error.validator_value == 1:
        return "must not be empty"
    if kind == "uniqueItems":
        return "items must be unique"
    return str(error.message)


def _pattern_message(inst: Any, pattern: str, key: str | int = "") -> str:
    if pattern == ID_PATTERN:
        what = "name" if key == "name" else "id"
        return f"invalid {what} {inst!r}: use lower-case letters, digits and '-', starting with a letter or digit"
    if key in ("table", "target_table") and "[A-Za-z_][A-Za-z0-9_]*" in pattern:
        return (
            f"invalid table name {inst!r}: use letters, digits and '_', optionally as SCHEMA.TABLE"
        )
    if "(ms|s|m|h)" in pattern:
        return f"invalid duration {inst!r}: use a number with a unit (ms, s, m, h), e.g. 30s, 1h30m, 250ms"
    if pattern.startswith("^(https?://"):
        return f"expected an http:// or https:// URL, got {inst!r}"
    if "[A-Za-z0-9_.-]" in pattern:
        return f"invalid host alias {inst!r}: use letters, digits, '_', '.' and '-'"
    if "[A-Za-z_][A-Za-z0-9_]*" in pattern:
        return f"invalid name {inst!r}: use letters, digits and '_'"
    return f"{inst!r} does not match {pattern}"


def _bad_name(inst: Any, error: Any) -> str:
    for sub in error.context or []:
        if sub.validator == "pattern":
            return _pattern_message(inst, sub.validator_value)
    return f"invalid name {inst!r}"


def _unknown_key(key: str, known: list[str]) -> str:
    hint = _did_you_mean(key, known)
    if hint:
        return f"unknown key {key!r}{hint}"
    return f"unknown key {key!r} (expected one of: {', '.join(known)})"


def _did_you_mean(value: Any, options: list[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _explain_branches(
    error: Any, smap: SourceMap, base: Path, path: Path, templates_ok: bool
) -> list[Problem]:
    """anyOf/oneOf: report the branch the value was evidently meant for, else say what fits."""
    inst = error.instance
    branches = error.validator_value
    if all(set(b) == {"required"} for b in branches) and isinstance(inst, dict):
        needed = [" with ".join(repr(k) for k in b["required"]) for b in branches]
        met = [
            f
            for f, b in zip(needed, branches, strict=True)
            if all(k in inst for k in b["required"])
        ]
        if error.validator == "oneOf" and len(met) > 1:
            return [smap.problem(path, f"give only one of {' or '.join(met)}")]
        if all(len(b["required"]) == 1 for b in branches):
            return [smap.problem(path, f"missing {' or '.join(needed)}")]
        listed = (
            ", ".join(needed[:-1]) + f", or {needed[-1]}"
            if len(needed) > 2
            else " or ".join(needed)
        )
        return [smap.problem(path, f"give one of: {listed}")]
    by_branch: dict[int, list[Any]] = {}
    for sub in error.context or []:
        index = sub.relative_schema_path[0]
        if branches[index] == TEMPLATE_BRANCH:
            continue  # "or a {{ template }}": not what a literal value was meant to be
        by_branch.setdefault(index, []).append(sub)
    branches = [b for b in branches if b != TEMPLATE_BRANCH]
    plausible = [
        errs
        for errs in by_branch.values()
        if not any(not e.relative_path and e.validator in ("type", "const", "not") for e in errs)
    ]
    if error.validator == "oneOf" and not by_branch:
        return [smap.problem(path, "matches more than one allowed form")]
    if len(plausible) == 1:
        out: list[Problem] = []
        for sub in plausible[0]:
            out.extend(_explain(sub, smap, base, templates_ok))
        return out
    desc = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
    forms = _forms(branches)
    got = (
        f"got {type_name(inst)} {inst!r}"
        if not isinstance(inst, (dict, list))
        else (f"got {type_name(inst)}")
    )
    if forms:
        return [smap.problem(path, f"expected {forms}, {got}")]
    return [smap.problem(path, f"{desc or 'invalid value'} ({got})")]


def _forms(branches: list[Mapping[str, Any]]) -> str:
    names: list[str] = []
    for b in branches:
        if "const" in b:
            names.append(repr(b["const"]))
        elif isinstance(b.get("type"), str):
            names.append(_SCHEMA_TYPES.get(b["type"], b["type"]))
    return " or ".join(dict.fromkeys(names))
