"""``wait``: sleep for a duration (cut short by Ctrl-C)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed
from runbook_engine.format.durations import format_duration, parse_duration


class WaitAction(BuiltinAction):
    name = "wait"
    summary = "wait for a while"
    idempotent = True
    changes = False

    def describe(self, params: Mapping[str, Any]) -> str:
        try:
            return f"wait {format_duration(parse_duration(params.get('duration')))}"
        except ValueError:
            return f"wait {params.get('duration')}"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        seconds = parse_duration(params["duration"])
        if seconds and not ctx.sleep(seconds):
            if ctx.cancel.is_set():
                raise ActionFailed("interrupted")
            raise ActionFailed(f"timed out after {format_duration(ctx.timeout)}")
        return {}
