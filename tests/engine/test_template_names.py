"""The regular-expression reading of plain templates agrees with Jinja2's parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError

from runbook_engine.format.names import (
    FAST_FILTERS,
    GLOBALS_SUPERSET,
    SyntaxProblem,
    _fast,
    scan,
)
from runbook_engine.format.templates import environment, parse

SAMPLES = [
    "{{ vars.new_db }}",
    "plain text, no template",
    "echo {{ vars.region | quote }} and {{ secrets.token }}",
    "{{ steps['copy-all'].outputs.rows_copied }}",
    '{{ steps["x"].status }}',
    "{{ wave.previous.vars.percent if wave.previous else 0 }}",
    "id % 100 < {{ wave.vars.percent }}",
    "{{vars.a}}}",
    "x }} y {{ vars.a }}",
    "{{ vars.a.b.c }}",
    "{{ range }}",
    "{{ none }}",
    "{{ vars.a | nosuchfilter }}",
    "{{ vars.a | default }}",
    "{{ vars.0 }}",
    "{{- vars.a }}",
    "{{ vars.a -}}",
    "{{ vars .a }}",
    "{{ vars.a",
    "{{ }}",
    "{% if vars.a %}x{% endif %}",
    "{# a comment #}{{ vars.a }}",
    "{{ steps.copy-all.status }}",
    "{{{ vars.a }}",
    "{{ vars.a }}\n{{ secrets.b | lower | trim }}",
    "{{ loop.index }}",
    "{{ not vars.a }}",
    "{{ value < 0.02 }}",
    "{{ value.rate >= -1 }}",
    "{{ value | float != 3 }}",
    "{{ value < 1 < 2 }}",
    "{{ value < vars.limit }}",
]


def _same(fast: object, source: str) -> None:
    slow = parse(source)
    assert fast is not None
    assert fast.names == slow.names, source  # type: ignore[attr-defined]
    assert set(fast.refs) == set(slow.refs), source  # type: ignore[attr-defined]


@pytest.mark.parametrize("source", SAMPLES)
def test_fast_reading_matches_jinja(source: str) -> None:
    fast = _fast(source)
    if fast is None:
        return  # left to Jinja2: nothing to compare
    _same(fast, source)


def test_plain_references_take_the_fast_path() -> None:
    for source in [*SAMPLES[:5], "{{ value < 0.02 }}"]:
        assert _fast(source) is not None, source


def test_syntax_errors_are_returned_located() -> None:
    got = scan("line one\n{{ vars.a ")
    assert isinstance(got, SyntaxProblem)
    assert got.lineno == 2
    assert "unexpected end of template" in got.message
    unknown_filter = scan("{{ vars.a | nosuchfilter }}")
    assert isinstance(unknown_filter, SyntaxProblem)
    assert "nosuchfilter" in unknown_filter.message


def test_the_hard_coded_name_sets_hold_for_this_jinja() -> None:
    env = environment()
    assert set(env.globals) <= GLOBALS_SUPERSET
    assert set(env.filters) >= FAST_FILTERS


TOKENS = st.sampled_from(
    [
        *["{{", "}}", " ", "vars", "secrets", ".", "a", "b", "['k-1']", "|", "quote", "nosuch"],
        *["{%", "-", "0", "'", "\n", "none", "range", "[", "]", "x", "(", ")", "+"],
        *["<", "<=", ">", "==", "!=", "0.02", "=", "value", "1.5.2"],
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(TOKENS, max_size=14).map("".join))
def test_fast_reading_never_disagrees(source: str) -> None:
    fast = _fast(source)
    if fast is None:
        return
    try:
        parse(source)
    except TemplateSyntaxError:
        pytest.fail(f"fast path accepted a template Jinja2 refuses: {source!r}")
    _same(fast, source)
