"""What a template refers to, found fast: the names ``validate`` checks, once per distinct text.

Jinja2's parser costs about 0.13 ms a template; a 10,000-step runbook has ~18,000 template
strings, most of them repeats or plain references such as ``{{ vars.new_db }}``.  So results
are cached by text, and a template made only of literal text and ``{{ NAME.attr['key'] | filter
}}`` references (optionally compared with a number, as check conditions are) is read with one
regular expression, giving exactly what
``templates.parse`` would (tested side by side in ``tests/engine/test_template_names.py``).
Anything else (statements, comments, operators, calls, whitespace control, Jinja globals) goes
to Jinja2's real parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .templates import Parsed, Reference

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_EXPR = re.compile(
    rf"\s*(?P<root>{_NAME})(?P<chain>(?:\.{_NAME}|\['[A-Za-z0-9_-]+'\]|\[\"[A-Za-z0-9_-]+\"\])*)"
    rf"(?P<filters>(?:\s*\|\s*{_NAME})*)"
    r"(?:\s*(?:<|<=|>|>=|==|!=)\s*-?\d+(?:\.\d+)?)?\s*"  # a check condition: `value < 0.02`
)
_PART = re.compile(rf"\.({_NAME})|\['([A-Za-z0-9_-]+)'\]|\[\"([A-Za-z0-9_-]+)\"\]")
_FILTER = re.compile(_NAME)
_BLOCK = re.compile(r"\{\{(.*?)\}\}", re.S)
# names the parser does not read as a plain variable: constants, operators, tests
_RESERVED = frozenset(
    [
        "true",
        "false",
        "none",
        "True",
        "False",
        "None",
        "and",
        "or",
        "not",
        "in",
        "is",
        "if",
        "else",
        "elif",
        "for",
        "recursive",
    ]
)


@dataclass(frozen=True)
class SyntaxProblem:
    """A template that does not parse: Jinja2's message and the template's line."""

    message: str
    lineno: int


_CACHE: dict[str, Parsed | SyntaxProblem] = {}
# Jinja2 does not report its globals as names a template uses: a superset of them goes to the
# real parser.  Filters are checked when a template compiles: only these, all in Jinja2 3.x (and
# `quote`, `raw`, `b64encode`, ours), are read here.  Both are held against the installed
# Jinja2 by the tests.
GLOBALS_SUPERSET = frozenset(
    [
        "range",
        "dict",
        "lipsum",
        "cycler",
        "joiner",
        "namespace",
        "loop",
        "self",
        "caller",
        "varargs",
        "kwargs",
        "super",
    ]
)
FAST_FILTERS = frozenset(
    [
        "quote",
        "default",
        "d",
        "lower",
        "upper",
        "int",
        "float",
        "string",
        "trim",
        "length",
        "count",
        "tojson",
        "e",
        "escape",
        "join",
        "first",
        "last",
        "list",
        "title",
        "capitalize",
        "abs",
        "round",
        "urlencode",
        "unique",
        "sort",
        "safe",
        "raw",
        "b64encode",
    ]
)


def _fast(source: str) -> Parsed | None:
    """The names of a template of plain references, or None when Jinja2 must read it."""
    if "{%" in source or "{#" in source:
        return None
    names: set[str] = set()
    refs: dict[tuple[str, tuple[str, ...]], Reference] = {}
    rest = _BLOCK.sub("", source)
    if "{{" in rest:
        return None
    for block in _BLOCK.finditer(source):
        m = _EXPR.fullmatch(block.group(1))
        if m is None:
            return None
        root = m.group("root")
        if root in _RESERVED:
            return None
        filters = _FILTER.findall(m.group("filters"))
        if root in GLOBALS_SUPERSET or any(f not in FAST_FILTERS for f in filters):
            return None
        names.add(root)
        parts = [a or b or c for a, b, c in _PART.findall(m.group("chain"))]
        for i in range(len(parts), 0, -1):
            key = (root, tuple(parts[:i]))
            refs.setdefault(key, Reference(*key))
    return Parsed(frozenset(names), tuple(refs.values()))


def scan(source: str) -> Parsed | SyntaxProblem:
    """``templates.parse(source)``, cached, with a syntax error returned instead of raised."""
    hit = _CACHE.get(source)
    if hit is not None:
        return hit
    result: Parsed | SyntaxProblem | None = _fast(source)
    if result is None:
        from jinja2 import TemplateSyntaxError

        from .templates import parse

        try:
            result = parse(source)
        except TemplateSyntaxError as exc:
            result = SyntaxProblem(str(exc.message), exc.lineno or 1)
    if len(_CACHE) < 200_000:
        _CACHE[source] = result
    return result
