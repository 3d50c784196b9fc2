"""``approval``: pause until ``runbook approve`` records a decision for this run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import Waiting


def approval_key(run_id: str) -> str:
    """The record key under which ``approve`` stores the decision for one run."""
    return f"approval:{run_id}"


class ApprovalAction(BuiltinAction):
    name = "approval"
    summary = "wait for a person's approval"
    idempotent = True
    changes = False

    def describe(self, params: Mapping[str, Any]) -> str:
        who = params.get("approvers")
        text = "approval"
        if who:
            text += " by one of " + ", ".join(str(w) for w in who)
        message = params.get("message")
        return f"{text}: {message}" if message else text

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        raw = ctx.records.get(approval_key(ctx.run_id))
        decision = json.loads(raw) if raw is not None else None
        if decision is None or decision.get("void"):
            # none yet, or one voided by a change of the runbook or vars (SPEC §8)
            message = str(params.get("message") or "approval required")
            if decision is not None:
                message += f" (approval void: {decision['void']})"
            raise Waiting(message)
        return {
            "approved_by": decision.get("by"),
            "on_behalf_of": decision.get("on_behalf_of"),
            "comment": decision.get("comment", ""),
            "approved_at": decision.get("at"),
        }
