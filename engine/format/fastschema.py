"""A fast yes-or-don't-know check of a JSON Schema, before jsonschema explains the errors.

``jsonschema`` walks a 10,000-step runbook in about a second, and imports in a tenth of one.
Nearly every document it sees is valid, so the loader first asks a predicate compiled from the
same schema: ``True`` proves the instance valid (jsonschema would find no error), ``False``
means "not proven": the loader then runs jsonschema, which stays the only source of messages.

The compiler knows the keywords our schemas use (Draft 2020-12).  A keyword it does not know
makes that part of the schema "not proven" for every instance: slower, never wrong.  Each
predicate is *exact* (it returns the true validity) or merely *sound* (``True`` is certain,
``False`` is not); ``not``, ``oneOf`` and ``if`` need exact sub-predicates, or give up.

``lenient`` mirrors ``schema.check(templates_ok=True)``: a template string is accepted where
jsonschema's errors about it would all be dropped, i.e. anywhere except inside the branches of
``anyOf``/``oneOf``/``not``/``if`` (whose outcome is decided on the raw text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .patterns import searcher

Pred = Callable[[Any], bool]
Compiled = tuple[Pred, bool]  # (predicate, exact)

_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",  # an annotation only: our validators have no format checker
        "$defs",
        "definitions",
    }
)


_REJECTS_STRINGS = frozenset(
    {"enum", "const", "pattern", "minLength", "maxLength", "anyOf", "oneOf", "not", "if"}
    | {"allOf", "$ref", "type"}
)


def _may_reject_a_string(schema: Mapping[str, Any]) -> bool:
    """False when no keyword of ``schema`` can refuse a string (then templates pass anyway)."""
    keys = _REJECTS_STRINGS.intersection(schema)
    if keys == {"type"}:
        t = schema["type"]
        return not (t == "string" or (isinstance(t, list) and "string" in t))
    return bool(keys)


def _never(_: Any) -> bool:
    return False


def _always(_: Any) -> bool:
    return True


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_integer(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


_TYPES: dict[str, Pred] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": _is_integer,
}


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[tuple[str, bool], list[Compiled]] = {}

    # -- entry ----------------------------------------------------------------------------
    def compile(self, schema: Any, lenient: bool) -> Compiled:
        if schema is True:
            return _always, True
        if schema is False:
            return _never, True
        if not isinstance(schema, dict):
            return _never, False
        checks: list[Pred] = []
        exact = True
        for key, value in schema.items():
            if key in _ANNOTATIONS or (key == "$id" and schema is self.root):
                continue
            got = self._keyword(key, value, schema, lenient)
            if got is None:
                return _never, False
            pred, ok = got
            checks.append(pred)
            exact = exact and ok
        pred = _all(checks)
        if lenient and _may_reject_a_string(schema):
            inner = pred

            def pred(v: Any) -> bool:
                return _is_template(v) or inner(v)

        return pred, exact

    # -- keywords -------------------------------------------------------------------------
    def _keyword(
        self, key: str, value: Any, schema: Mapping[str, Any], lenient: bool
    ) -> Compiled | None:
        handler = getattr(self, "_k_" + key.lstrip("$"), None)
        if handler is None:
            return None
        result: Compiled | None = handler(value, schema, lenient)
        return result

    def _k_type(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or any(n not in _TYPES for n in names):
            return None
        preds = [_TYPES[n] for n in names]
        if len(preds) == 1:
            return preds[0], True
        return (lambda v: any(p(v) for p in preds)), True

    def _k_enum(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
            return None  # JSON equality of other values is jsonschema's to judge
        options = frozenset(value)
        return (lambda v: isinstance(v, str) and v in options), True

    def _k_const(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        if value is None:
            return (lambda v: v is None), True
        if isinstance(value, str):
            return (lambda v: isinstance(v, str) and v == value), True
        return None

    def _k_pattern(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        search = searcher(value)
        return (lambda v: not isinstance(v, str) or search(v) is not None), True

    def _k_minLength(self, value: int, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not isinstance(v, str) or len(v) >= value), True

    def _k_maxLength(self, value: int, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not isinstance(v, str) or len(v) <= value), True

    def _k_minimum(self, value: float, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not _is_number(v) or v >= value), True

    def _k_maximum(self, value: float, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not _is_number(v) or v <= value), True

    def _k_exclusiveMinimum(self, value: float, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not _is_number(v) or v > value), True

    def _k_exclusiveMaximum(self, value: float, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not _is_number(v) or v < value), True

    def _k_minItems(self, value: int, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not isinstance(v, list) or len(v) >= value), True

    def _k_maxItems(self, value: int, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not isinstance(v, list) or len(v) <= value), True

    def _k_minProperties(self, value: int, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not isinstance(v, dict) or len(v) >= value), True

    def _k_maxProperties(self, value: int, schema: Any, lenient: bool) -> Compiled | None:
        return (lambda v: not isinstance(v, dict) or len(v) <= value), True

    def _k_uniqueItems(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        if value is not True:
            return _always, True

        def unique(v: Any) -> bool:
            if not isinstance(v, list):
                return True
            if all(isinstance(x, str) for x in v):
                return len(set(v)) == len(v)
            return False  # mixed types: JSON equality is jsonschema's to judge

        return unique, False

    def _k_required(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        names = tuple(value)
        return (lambda v: not isinstance(v, dict) or all(n in v for n in names)), True

    def _k_dependentRequired(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        deps = tuple((k, tuple(names)) for k, names in value.items())

        def dependent(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            return all(all(n in v for n in names) for k, names in deps if k in v)

        return dependent, True

    def _k_properties(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        compiled = {k: self.compile(s, lenient) for k, s in value.items()}
        preds = {k: p for k, (p, _) in compiled.items()}
        exact = all(ok for _, ok in compiled.values())

        def properties(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, item in v.items():
                p = preds.get(k)
                if p is not None and not p(item):
                    return False
            return True

        return properties, exact

    def _k_patternProperties(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        compiled = [(searcher(k), self.compile(s, lenient)) for k, s in value.items()]
        exact = all(ok for _, (_, ok) in compiled)

        def pattern_properties(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, item in v.items():
                for search, (p, _) in compiled:
                    if search(k) and not p(item):
                        return False
            return True

        return pattern_properties, exact

    def _k_additionalProperties(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        known = frozenset(schema.get("properties", {}))
        patterns = "|".join(schema.get("patternProperties", {}))
        search = searcher(patterns) if patterns else None
        pred, exact = self.compile(value, lenient)

        def additional(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, item in v.items():
                if k in known or (search is not None and search(k)):
                    continue
                if not pred(item):
                    return False
            return True

        return additional, exact

    def _k_propertyNames(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        pred, exact = self.compile(value, False)
        return (lambda v: not isinstance(v, dict) or all(pred(k) for k in v)), exact

    def _k_items(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        if "prefixItems" in schema:
            return None
        pred, exact = self.compile(value, lenient)
        return (lambda v: not isinstance(v, list) or all(pred(x) for x in v)), exact

    def _k_ref(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        if not isinstance(value, str) or not value.startswith("#"):
            return None
        key = (value, lenient)
        slot = self.refs.get(key)
        if slot is None:
            target = self._resolve(value)
            if target is None:
                return None
            slot = []
            self.refs[key] = slot  # set before compiling: a recursive schema finds the slot
            slot.append(self.compile(target, lenient))
        cell = slot

        def ref(v: Any) -> bool:
            return cell[0][0](v)

        # exactness of a recursive reference is not known while it compiles: claim only soundness
        return ref, bool(cell) and cell[0][1]

    def _resolve(self, pointer: str) -> Any:
        node: Any = self.root
        for raw in pointer[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def _k_allOf(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        compiled = [self.compile(s, lenient) for s in value]
        return _all([p for p, _ in compiled]), all(ok for _, ok in compiled)

    def _k_anyOf(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        compiled = [self.compile(s, False) for s in value]
        preds = [p for p, _ in compiled]
        return (lambda v: any(p(v) for p in preds)), all(ok for _, ok in compiled)

    def _k_oneOf(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        compiled = [self.compile(s, False) for s in value]
        if not all(ok for _, ok in compiled):
            return _never, False
        preds = [p for p, _ in compiled]
        return (lambda v: sum(1 for p in preds if p(v)) == 1), True

    def _k_not(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        pred, exact = self.compile(value, False)
        if not exact:
            return _never, False
        return (lambda v: not pred(v)), True

    def _k_if(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        cond, exact = self.compile(value, False)
        if not exact:
            return _never, False
        then, then_ok = self.compile(schema.get("then", True), False)
        other, other_ok = self.compile(schema.get("else", True), False)
        return (lambda v: then(v) if cond(v) else other(v)), then_ok and other_ok

    def _k_then(self, value: Any, schema: Any, lenient: bool) -> Compiled | None:
        return _always, True  # applied by `if`

    _k_else = _k_then


def _all(preds: list[Pred]) -> Pred:
    if not preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    items = tuple(preds)

    def all_of(v: Any) -> bool:
        for p in items:  # noqa: SIM110 - a plain loop: this runs once per node
            if not p(v):
                return False
        return True

    return all_of


_CACHE: dict[tuple[int, bool], tuple[Mapping[str, Any], Pred]] = {}


def proven_valid(schema: Mapping[str, Any], instance: Any, *, lenient: bool = False) -> bool:
    """True only when ``instance`` certainly satisfies ``schema`` (see the module's doc)."""
    key = (id(schema), lenient)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not schema:
        try:
            pred, _ = _Compiler(schema).compile(schema, lenient)
        except (re.error, TypeError, AttributeError, ValueError):
            pred = _never  # a schema we cannot read: jsonschema decides
        hit = (schema, pred)
        _CACHE[key] = hit
    try:
        return hit[1](instance)
    except RecursionError:
        return False
