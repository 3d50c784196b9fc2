"""``approval``: pause until enough people have approved this run with ``runbook approve``
(SPEC §8, §11: ``required``, ``approvers``, ``allow_self``, ``expires``; ``format/approvals.py``
says what counts)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed, Waiting
from runbook_engine.format import approvals


def approval_key(run_id: str) -> str:
    """The record key under which an earlier version stored the one approval of a run."""
    return approvals.legacy_key(run_id)


class ApprovalAction(BuiltinAction):
    name = "approval"
    summary = "wait for people's approvals"
    idempotent = True
    changes = False

    def describe(self, params: Mapping[str, Any]) -> str:
        who = params.get("approvers")
        required = params.get("required", 1)
        text = "approval" if required == 1 else f"{required} approvals"
        if isinstance(who, list) and who:
            text += (
                " by "
                + ("one" if required == 1 else "any")
                + " of "
                + ", ".join(str(w) for w in who)
            )
        if params.get("expires") is not None:
            text += f" (each counts for {params['expires']})"
        message = params.get("message")
        return f"{text}: {message}" if message else text

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        try:
            # allow_self is approve's to check: the action only counts
            rules = approvals.rules(params, None, True, f"{ctx.step_id}: with")
        except ValueError as exc:
            raise ActionFailed(str(exc), retryable=False) from None
        inst = ctx.runbook.instances.get(ctx.step_id)
        got = approvals.tally(
            ctx.records.items(),
            ctx.run_id,
            rules,
            digest=ctx.runbook.digest,
            vars_now=None,  # another --var is voided when it is accepted (run/pins.py)
            step_pin=inst.digest if inst is not None else None,
            now=datetime.now(UTC),
        )
        if len(got.valid) < rules.required:
            message = str(params.get("message") or "approval required")
            raise Waiting(f"{message} ({got.text(rules)})")
        valid = got.valid[: rules.required]
        return {
            "approved_by": ", ".join(str(d.get("by")) for d in valid),
            "on_behalf_of": ", ".join(
                str(d["on_behalf_of"]) for d in valid if d.get("on_behalf_of")
            )
            or None,
            "comment": "; ".join(str(d["comment"]) for d in valid if d.get("comment")),
            "approved_at": valid[-1].get("at"),
            "approvals": [
                {k: d.get(k) for k in ("by", "on_behalf_of", "comment", "at")} for d in valid
            ],
        }
