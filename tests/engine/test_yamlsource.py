"""The two YAML readers agree: the plain one (no positions) and the located one.

``parse`` reads a plain file once without positions and locates problems by reading it again;
these tests hold that both readers give the same document, and that the lazy positions are
the located reader's, for real runbooks, every malformed row of the bad-input table, and
generated YAML.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_engine.errors import ValidationFailed
from runbook_engine.format.yamlsource import _parse_located, _plain, _Unusual, parse
from tests.engine.plan_fixtures import RUNBOOK
from tests.engine.test_bad_input import CASES
from tests.engine.test_fastschema import generate


def _same(text: str) -> None:
    try:
        fast = _plain(text)
    except (_Unusual, yaml.YAMLError):
        return  # left to the located reader
    located, _ = _parse_located(text, "x.yaml")
    assert _equal(fast, located), text[:200]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_real_runbooks_take_the_plain_path() -> None:
    for text in (RUNBOOK, generate(300)):
        value = _plain(text)
        located, smap = _parse_located(text, "x.yaml")
        assert _equal(value, located)
        lazy_value, lazy = parse(text, "x.yaml")
        assert _equal(lazy_value, located)
        assert lazy._text is not None  # nothing located yet
        assert lazy.values == smap.values and lazy.keys == smap.keys
        assert lazy.at(("phases", 0, "steps", 0, "id")) == smap.at(("phases", 0, "steps", 0, "id"))


@pytest.mark.parametrize(
    "case", [c for c in CASES if isinstance(c.content, str)], ids=lambda c: c.id
)
def test_malformed_rows_agree_or_are_left_to_the_located_reader(case: Any) -> None:
    _same(case.content)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n",
        "a: 1\na: 2\n",
        "? [a]\n: 1\n",
        "a: 1\n---\nb: 2\n",
        "'<<': 1\n",
    ],
)
def test_unusual_yaml_is_left_to_the_located_reader(text: str) -> None:
    with pytest.raises((_Unusual, yaml.YAMLError)):
        _plain(text)


def test_problems_found_on_the_plain_path_are_still_located() -> None:
    text = "phases:\n  - id: a\n    steps:\n      - id: s\n        with: {duration: soon}\n"
    _, smap = parse(text, "x.yaml")
    problem = smap.problem(("phases", 0, "steps", 0, "with", "duration"), "bad")
    assert str(problem) == "x.yaml:5:26: phases[0].steps[0].with.duration: bad"
    assert smap.key_at(("phases", 0, "steps", 0, "with")) == (5, 9)
    with pytest.raises(ValidationFailed):
        parse("a: 1\na: 2\n", "x.yaml")


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["yes", "no", "on", "0x1f", "1e3", "~", "2024-01-02", "12:30", ".inf", "<<"]),
)
DOCS = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(DOCS, st.booleans())
def test_generated_yaml(doc: Any, flow: bool) -> None:
    _same(yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True))
