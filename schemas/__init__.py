"""The JSON Schemas of the format: ``runbook.schema.json`` and one per built-in action under
``actions/``. Data only, with the three functions that read it; imports nothing of the engine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any


def schema_text(name: str = "runbook") -> str:
    """The text of ``schemas/NAME.schema.json`` or ``schemas/actions/NAME.schema.json``."""
    base = resources.files("runbook_engine.schemas")
    main = base / f"{name}.schema.json"
    if main.is_file():
        return main.read_text(encoding="utf-8")
    return (base / "actions" / f"{name}.schema.json").read_text(encoding="utf-8")


@cache
def load_schema(name: str = "runbook") -> Mapping[str, Any]:
    loaded: Mapping[str, Any] = json.loads(schema_text(name))
    return loaded


def builtin_action_schema_names() -> list[str]:
    base = resources.files("runbook_engine.schemas") / "actions"
    return sorted(
        p.name[: -len(".schema.json")] for p in base.iterdir() if p.name.endswith(".schema.json")
    )
