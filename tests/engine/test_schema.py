"""The JSON Schemas as an editor sees them: descriptions everywhere, `with` tied to actions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.conftest import EXAMPLES, ROOT

SCHEMAS = ROOT / "schemas"


def _properties(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{path}.{name}", sub
        for key, sub in node.items():
            if key != "properties":
                yield from _properties(sub, f"{path}/{key}")
        for name, sub in node.get("properties", {}).items():
            yield from _properties(sub, f"{path}.{name}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _properties(sub, f"{path}[{i}]")


@pytest.mark.parametrize(
    "file",
    sorted(SCHEMAS.glob("*.json")) + sorted(SCHEMAS.glob("actions/*.json")),
    ids=lambda p: p.name,
)
def test_every_property_has_a_description(file: Path) -> None:
    doc = json.loads(file.read_text())
    Draft202012Validator.check_schema(doc)
    missing = []
    for where, prop in _properties(doc):
        if "/if" in where:
            continue  # the condition of an if/then, not a property a user writes
        ref = prop.get("$ref", "")
        described = (
            "description" in prop
            or (ref.startswith("#/") and "description" in _resolve(doc, ref))
            or (
                ref.startswith("actions/")
                and "description" in json.loads((SCHEMAS / ref).read_text())
            )
        )
        if not described:
            missing.append(where)
    assert not missing, f"{file.name}: properties without a description: {missing}"


def _resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = doc
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return dict(node)


def _editor_validator() -> Draft202012Validator:
    """The schema as the YAML language server reads it: relative refs to actions/*.json."""
    main = json.loads((SCHEMAS / "runbook.schema.json").read_text())
    resources = [
        (f"actions/{p.name}", Resource.from_contents(json.loads(p.read_text())))
        for p in SCHEMAS.glob("actions/*.json")
    ]
    return Draft202012Validator(main, registry=Registry().with_resources(resources))


def test_the_examples_are_valid_for_an_editor() -> None:
    validator = _editor_validator()
    for file in sorted(EXAMPLES.glob("*.yaml")) + sorted((ROOT / "runbooks/tour").glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(file.read_text())))
        assert not errors, f"{file.name}: {errors[0].message} at {list(errors[0].path)}"


def test_an_editor_sees_a_bad_with_through_the_action_schema() -> None:
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "x"},
        "phases": [
            {
                "id": "p",
                "steps": [
                    {
                        "id": "c",
                        "action": "sql.copy",
                        "with": {
                            "source": "a",
                            "target": "b",
                            "table": "t",
                            "key": "id",
                            "batch_size": "lots",
                        },
                    },
                ],
            }
        ],
    }
    errors = list(_editor_validator().iter_errors(doc))
    assert errors and any("batch_size" in list(e.absolute_path) for e in _leaves(errors))


def _leaves(errors: list[Any]) -> Iterator[Any]:
    for e in errors:
        yield e
        yield from _leaves(list(e.context or []))


def test_schema_command_prints_the_schema_and_an_action_schema(runbook) -> None:
    r = runbook("schema")
    assert r.code == 0 and json.loads(r.out)["title"] == "runbook/v1"
    r = runbook("schema", "--action", "sql.copy")
    assert r.code == 0 and "batch_size" in json.loads(r.out)["properties"]
    r = runbook("schema", "--action", "nope")
    assert r.code == 2 and "unknown action 'nope'" in r.err
