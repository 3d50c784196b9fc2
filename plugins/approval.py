"""``approval``: pause until enough people have approved this run with ``runbook approve``
(SPEC §8, §11: ``required``, ``approvers``, ``allow_self``, ``expires``; ``format/approvals.py``
says what counts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import ActionContext, BuiltinAction
from runbook_engine.errors import ActionFailed, Waiting
from runbook_engine.format import approvals


def approval_key(run_id: str) -> str:
    """The record key under which an earlier version stored the one approval of a run."""
    return approvals.legacy_key(run_id)


def _prior_outputs(ctx: ActionContext) -> Mapping[str, Any] | None:
    """The outputs this step stored when it last succeeded (kept through a rollback)."""
    steps = ctx.template_context.get("steps")
    try:
        prior = steps[ctx.step_id].outputs if steps is not None else None
    except (KeyError, TypeError):
        return None
    return prior if isinstance(prior, Mapping) else None


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
        # each approval counts only when it was given for the plan the run is pinned to now
        # (its runbook and vars, after any --accept-changes) and for this step's definition:
        # one given in the instant before an accept committed is not voided by it, but does
        # not count here (SPEC §8)
        pinned = ctx.pinned
        got = approvals.tally(
            ctx.records.items(),
            ctx.run_id,
            rules,
            digest=str(pinned.get("digest") or ctx.runbook.digest),
            vars_now=str(pinned["vars"]) if pinned.get("vars") else None,
            step_pin=inst.digest if inst is not None else None,
            now=ctx.clock(),
            used=approvals.used_of(_prior_outputs(ctx)),
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
