"""JSON Schema ``pattern`` with the meaning the standard gives it, in Python's ``re``.

A schema's ``pattern`` is an ECMA-262 regular expression: there ``$`` (without the ``m`` flag)
matches only at the very end of the text. In Python ``$`` also matches before a final newline,
so ``re.search("^[a-z0-9][a-z0-9-]*$", "x\\n")`` matches, and jsonschema, which uses
``re.search``, let a runbook named ``x\\n`` through (a state folder ``x\\n`` was created, steps
``a`` and ``a\\n`` coexisted: issue 10, item 16). ``ecma`` rewrites every ``$`` outside a
character class as ``\\Z``; the schemas keep their ``$`` (editors, which use ECMA-262, read them
right), and both the fast path (``fastschema``) and jsonschema (``schema.validator_for``)
search with the rewritten pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache


def ecma(pattern: str) -> str:
    """``pattern`` with each end-of-text ``$`` as ``\\Z`` (escapes and ``[...]`` untouched)."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]":
                # `[]...]` and `[^]...]`: Python reads the first `]` as a literal
                skip = 2 if pattern[i + 1] == "]" else 3
                out.append(pattern[i : i + skip])
                i += skip
                continue
        elif c == "$":
            c = r"\Z"
        out.append(c)
        i += 1
    return "".join(out)


@cache
def compiled(pattern: str) -> re.Pattern[str]:
    """The compiled ECMA reading of a schema pattern (one compile per distinct pattern)."""
    return re.compile(ecma(pattern))


def searcher(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """``search`` of the pattern as JSON Schema means it."""
    return compiled(pattern).search
