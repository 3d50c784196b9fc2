"""Ids and names end where the text ends: a trailing newline is refused (issue 10, item 16).

A schema ``pattern`` is ECMA-262, where ``$`` matches only at the end of the text; Python's
``re.search`` lets ``$`` match before a final newline, so jsonschema (and the fast path) took
``"x\\n"`` for a valid name: a state folder ``x\\n`` was created, steps ``a`` and ``a\\n``
coexisted. Each name of the format is tried here with ``\\n`` appended.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runbook_engine.errors import StateError
from runbook_engine.format.fastschema import proven_valid
from runbook_engine.format.patterns import ecma, searcher
from runbook_engine.format.schema import runtime_schema, validator_for
from runbook_engine.schemas import load_schema
from runbook_engine.state.store import state_path
from tests.conftest import RUNBOOK_BIN

BASE = """\
apiVersion: runbook/v1
kind: Runbook
metadata:
  name: NAME
vars:
  VAR: 1
secrets:
  SECRET: {env: HOME}
hosts:
  HOST: {address: 127.0.0.1}
risks:
  - {id: RISK, likelihood: low, impact: low, contingencies: [CONT]}
contingencies:
  - {id: CONT, action: wait, with: {duration: 0s}}
phases:
  - id: PHASE
    waves: [{id: WAVE}]
    steps:
      - {id: a, action: wait, with: {duration: 0s}, risks: [RISK]}
      - {id: STEP, action: wait, with: {duration: 0s}, needs: [a]}
"""
DEFAULTS = {
    "NAME": "nl",
    "VAR": "count",
    "SECRET": "token",
    "HOST": "app1",
    "RISK": "slow",
    "CONT": "page",
    "PHASE": "rollout",
    "WAVE": "pilot",
    "STEP": "b",
}


def text(**names: str) -> str:
    out = BASE
    for key, default in DEFAULTS.items():
        # a YAML double-quoted scalar: "x\n" is the name x followed by a newline
        out = out.replace(key, names.get(key, default))
    return out


# (placeholder, the name with a newline as written in YAML, line:col, path, message)
CASES = [
    ("NAME", '"x\\n"', "4:9", "metadata.name", "invalid name 'x\\n'"),
    ("STEP", '"a\\n"', "20:14", "phases[0].steps[1].id", "invalid id 'a\\n'"),
    ("PHASE", '"rollout\\n"', "16:9", "phases[0].id", "invalid id 'rollout\\n'"),
    ("WAVE", '"pilot\\n"', "17:18", "phases[0].waves[0].id", "invalid id 'pilot\\n'"),
    ("RISK", '"slow\\n"', "12:10", "risks[0].id", "invalid id 'slow\\n'"),
    ("CONT", '"page\\n"', "14:10", "contingencies[0].id", "invalid id 'page\\n'"),
    ("VAR", '"count\\n"', "6:3", "vars", "invalid name 'count\\n'"),
    ("SECRET", '"token\\n"', "8:3", "secrets", "invalid name 'token\\n'"),
    ("HOST", '"app1\\n"', "10:3", "hosts", "invalid host alias 'app1\\n'"),
]


def test_the_base_runbook_is_valid(runbook) -> None:
    Path("nl.yaml").write_text(text(), encoding="utf-8")
    r = runbook("validate", "nl.yaml")
    assert r.code == 0, r.output


@pytest.mark.parametrize("case", CASES, ids=[c[0].lower() for c in CASES])
def test_a_name_with_a_trailing_newline_is_a_located_error(case, runbook) -> None:
    key, value, where, path, message = case
    Path("nl.yaml").write_text(text(**{key: value}), encoding="utf-8")
    r = runbook("validate", "nl.yaml")
    assert r.code == 2, r.output
    assert f"nl.yaml:{where}: {path}: {message}" in r.err, r.err
    assert "Traceback" not in r.output


def test_steps_a_and_a_newline_can_no_longer_coexist(runbook) -> None:
    Path("nl.yaml").write_text(text(STEP='"a\\n"'), encoding="utf-8")
    r = runbook("validate", "nl.yaml")
    assert r.code == 2
    assert "nl.yaml:20:14: phases[0].steps[1].id: invalid id 'a\\n'" in r.err


def test_apply_of_a_runbook_named_x_newline_is_exit_2_and_creates_no_folder(tmp_path) -> None:
    Path("nl.yaml").write_text(text(NAME='"x\\n"'), encoding="utf-8")
    before = sorted(os.listdir(tmp_path))
    proc = subprocess.run(
        [RUNBOOK_BIN, "--state-dir", "st", "apply", "--yes", "nl.yaml"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "nl.yaml:4:9: metadata.name: invalid name 'x\\n'" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not Path("st").exists()
    assert sorted(os.listdir(tmp_path)) == before


def test_both_schema_paths_refuse_a_final_newline() -> None:
    schema = runtime_schema()
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "x\n"},
        "phases": [{"id": "p", "steps": [{"id": "a", "action": "wait", "with": {}}]}],
    }
    assert not proven_valid(schema, doc)  # the fast path
    assert not validator_for(schema).is_valid(doc)  # jsonschema
    doc["metadata"]["name"] = "x"
    assert proven_valid(schema, doc)
    assert validator_for(schema).is_valid(doc)
    copy = load_schema("sql.copy")  # action schemas too: a table name is never `t\n`
    params = {"source": "a", "target": "b", "table": "customers\n", "key": "id"}
    assert not proven_valid(copy, params)
    assert not validator_for(copy).is_valid(params)


def test_pattern_properties_are_read_as_ecma_too() -> None:
    schema = {"type": "object", "patternProperties": {"^a$": {"type": "integer"}}}
    assert not validator_for(schema).is_valid({"a": "x"})
    assert validator_for(schema).is_valid({"a\n": "x"})  # `a\n` is not `^a$` in ECMA-262
    closed = {**schema, "additionalProperties": False}
    assert not validator_for(closed).is_valid({"a\n": 1})
    assert validator_for(closed).is_valid({"a": 1})
    assert proven_valid(closed, {"a": 1}) and not proven_valid(closed, {"a\n": 1})


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("^a$", r"^a\Z"),
        (r"^a\$$", r"^a\$\Z"),
        ("^[$]$", r"^[$]\Z"),
        ("^[]$]x$", r"^[]$]x\Z"),
        ("^[^]$]x$", r"^[^]$]x\Z"),
        ("^(a$|b$)", r"^(a\Z|b\Z)"),
        (r"^\\$", r"^\\\Z"),
    ],
)
def test_ecma_rewrites_only_end_anchors(pattern: str, expected: str) -> None:
    assert ecma(pattern) == expected
    assert searcher("^[a-z0-9][a-z0-9-]*$")("a-1")
    assert not searcher("^[a-z0-9][a-z0-9-]*$")("a-1\n")


def test_the_store_never_makes_a_folder_for_a_bad_name() -> None:
    assert state_path("st", "ok-1") == Path("st", "ok-1")
    for bad in ("x\n", "../x", "", "X", "a" * 64):
        with pytest.raises(StateError, match="invalid runbook name"):
            state_path("st", bad)
    assert not Path("st").exists()
