"""The compiled schema predicate never calls an invalid document valid (it only saves time).

``proven_valid`` may say False for a valid document (jsonschema then decides), but True must
mean jsonschema finds nothing to report.  Checked on real runbooks and on many mutations of
them, for the format's schema and for every built-in action's schema.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_engine.format import schema as schema_mod
from runbook_engine.format.fastschema import proven_valid
from runbook_engine.format.schema import runtime_schema, validator_for
from runbook_engine.format.yamlsource import SourceMap, parse
from runbook_engine.schemas import load_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from gen_runbook import generate

ACTIONS = [
    "approval",
    "check",
    "http",
    "notify",
    "shell",
    "sql.copy",
    "sql.exec",
    "sql.query",
    "sql.verify",
    "ssh",
    "wait",
]

STRINGS = [
    "",
    "a",
    "only",
    "Bad_Id",
    "30s",
    "1h30m",
    "soon",
    "runbook/v1",
    "Runbook",
    "abort",
    "rollback-wave",
    "low",
    "critical",
    "none",
    "GET",
    "http://x",
    "ftp://x",
    "{{ vars.x }}",
    "{% if x %}y{% endif %}",
    "webhook",
    "t.customers",
    "no such",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 70000),
    st.sampled_from([0.0, 1.0, 2.5, -1.5]),
    st.sampled_from(STRINGS),
)


def _keys(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                out.update(v)
            _keys(v, out)
    elif isinstance(node, list):
        for v in node:
            _keys(v, out)
    return out


KEYS = sorted(
    _keys(load_schema("runbook"), set())
    | {k for a in ACTIONS for k in _keys(load_schema(a), set())}
    | {"bogus"}
)
VALUES = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(KEYS), kids, max_size=4)
    ),
    max_leaves=12,
)


def _explained(schema: Any, instance: Any, lenient: bool) -> list[Any]:
    """What ``schema.check`` reports, computed by jsonschema alone (no fast path)."""
    smap = SourceMap("x.yaml")
    out = []
    for error in validator_for(schema).iter_errors(instance):
        out.extend(schema_mod._explain(error, smap, (), lenient))
    return out


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*path, i)))
    return out


def _mutate(doc: Any, data: st.DataObject, rounds: int) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rounds):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths[1:] or paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        how = data.draw(st.sampled_from(["replace", "delete", "add"]))
        last = path[-1] if path else None
        if how == "replace" and path:
            parent[last] = data.draw(VALUES)
        elif how == "delete" and isinstance(parent, dict) and last in parent:
            del parent[last]
        elif how == "delete" and isinstance(parent, list) and parent:
            parent.pop(last)
        else:
            target = parent[last] if path else parent
            if isinstance(target, dict):
                target[data.draw(st.sampled_from(KEYS))] = data.draw(VALUES)
            elif isinstance(target, list):
                target.append(data.draw(VALUES))
    return doc


RUNBOOK, _ = parse(generate(24), "gen.yaml")
SAMPLES: dict[str, Any] = {  # valid `with` of the actions the generator does not use
    "approval": {"message": "go?", "approvers": ["ana", "bo"]},
    "ssh": {"command": "uptime", "hosts": ["app1"], "forks": 2, "connect_timeout": "5s"},
    "notify": {"channel": "outbox", "to": ["a@example.org"], "subject": "hi", "message": "m"},
}


def test_real_documents_take_the_fast_path() -> None:
    assert proven_valid(runtime_schema(), RUNBOOK)
    for phase in RUNBOOK["phases"]:
        for step in phase["steps"]:
            schema = load_schema(step["action"])
            assert proven_valid(schema, step["with"], lenient=True), step
    assert not proven_valid(runtime_schema(), {**RUNBOOK, "kind": "Other"})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_runbooks_are_never_proven_wrongly(data: st.DataObject) -> None:
    doc = _mutate(RUNBOOK, data, data.draw(st.integers(1, 3)))
    if proven_valid(runtime_schema(), doc):
        assert validator_for(runtime_schema()).is_valid(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ACTIONS), st.data())
def test_action_params_are_never_proven_wrongly(action: str, data: st.DataObject) -> None:
    schema = load_schema(action)
    start = next(
        (s["with"] for p in RUNBOOK["phases"] for s in p["steps"] if s["action"] == action),
        {},
    )
    start = SAMPLES.get(action, start)
    params = _mutate({"with": start}, data, data.draw(st.integers(1, 3))).get("with")
    if not isinstance(params, dict):
        return
    if proven_valid(schema, params):
        assert validator_for(schema).is_valid(params)
    if proven_valid(schema, params, lenient=True):
        assert _explained(schema, params, lenient=True) == []


def test_unknown_keywords_are_left_to_jsonschema() -> None:
    schema = {"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}}
    assert not proven_valid(schema, {"a": 1})
    assert not proven_valid(schema, {"a": 1, "b": 2})  # valid, but not provable here
    assert validator_for(schema).is_valid({"a": 1, "b": 2})


def test_every_builtin_schema_compiles() -> None:
    from runbook_engine.format.fastschema import _Compiler

    for name in [*ACTIONS, "runbook"]:
        schema = runtime_schema() if name == "runbook" else load_schema(name)
        pred, _ = _Compiler(schema).compile(schema, name != "runbook")
        assert pred.__name__ != "_never", f"{name}: a keyword the compiler does not know"


def test_combinators_are_exact_where_they_must_be() -> None:
    schema = {"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}
    assert proven_valid(schema, {"a": 1})
    assert not proven_valid(schema, {"a": 1, "b": 1})
    assert proven_valid({"not": {"type": "string"}}, 3)
    assert not proven_valid({"not": {"type": "string"}}, "x")
    # a template is only excused where its own errors would be dropped, not inside a branch
    assert proven_valid({"type": "integer"}, "{{ vars.n }}", lenient=True)
    branchy = {"type": "object", "oneOf": [{"properties": {"n": {"type": "integer"}}}]}
    assert not proven_valid(branchy, {"n": "{{ vars.n }}"}, lenient=True)
