"""``check``: a metric gate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import BuiltinAction


class CheckAction(BuiltinAction):
    name = "check"
    summary = "measure a metric and gate on a condition"
    idempotent = True
    changes = False
    late_keys = frozenset({"condition"})
    late_names = frozenset({"value", "values"})

    def describe(self, params: Mapping[str, Any]) -> str:
        count = params.get("count", 1)
        every = f" every {params.get('interval', '10s')}" if count != 1 else ""
        return f"gate: {params.get('condition')} ({count}×{every})"
