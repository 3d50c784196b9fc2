"""``runbook approve FILE STEP``"""

from __future__ import annotations

import json
from typing import Any

import click

from ..console.terminal import Console
from ..errors import InvalidInput
from .options import state_dir, var_options


@click.command(name="approve")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("step")
@click.option(
    "--by",
    "by",
    metavar="NAME",
    help="On whose behalf (recorded beside the real identity, the OS user or, on a "
    "PostgreSQL state, session_user; never instead).",
)
@click.option("--comment", default="", help="Why, or what was checked.")
@var_options
@click.pass_context
def command(
    ctx: click.Context,
    file: str,
    step: str,
    by: str | None,
    comment: str,
    assignments: tuple[str, ...],
    var_files: tuple[str, ...],
) -> int:
    """Record an approval for a waiting `approval` step, or pass a waiting gate.

    Records who, when and why in the journal; once the step has its `required`
    approvals (default 1), the next apply goes on (a running apply picks them up at its
    next transition). The identity recorded is the real one: the OS user who runs the
    command on a state directory, the database's session_user (the role it connects as)
    on a PostgreSQL state; --by NAME is recorded beside it as on_behalf_of, never instead.

    An approval is bound to the runbook and vars of the run (the plan digest): an edit
    or other vars accepted with `apply --accept-changes` void it, and so does age past
    the step's `expires`; `plan` and `status` then print `approval void: REASON`.

    Refused with exit 2, nothing recorded: a step that is not waiting; the run's starter
    when the step does not say `allow_self: true` (the default is the state backend's:
    true on a state directory, false on PostgreSQL); an identity not among the step's `approvers`; a second
    approval by the same identity; a copy of the runbook that differs from the one the
    run is pinned to (compared on the runbook only; without --var, the run's own vars are
    used, and `approvers` is always rendered with them). No --var is needed, even for a
    var whose value held a secret (the run recorded it masked): the approval is bound to
    the run's vars as recorded.

    On a gate (`check`) that waits after an inconclusive evaluation, approving passes it:
    the decision is bound to the measurements it was made on; the gate's `approvers` and
    `allow_self` say who may decide.

    Never asks for confirmation, and never takes the run's lease (on either backend): it
    may be given while an apply runs. Beside a holder stalled inside a write (PostgreSQL)
    it waits 5s at a time, with a notice, and after 15s exits 4 naming it.

    \b
    Examples:
      runbook approve migrate.yaml training-ack --by maria --comment "team trained on 11/20"
      runbook approve migrate.yaml 'churn-gate[pilot]' --comment "low volume week: churn ok"
    """
    from ..run.session import prepare
    from ..state.pinned import run_vars

    # without --var, the vars of the run in progress (SPEC §11). An approval is checked and
    # bound with the run's vars as recorded (`approvers` rendered with them, their digest),
    # and an approver's copy is compared on the runbook digest only: no value is needed
    # here, so a var that held a secret (recorded masked, not reusable) is never asked for
    prepared = prepare(
        file,
        assignments,
        var_files,
        resolve_secrets=False,
        pinned=lambda rb: run_vars(state_dir(ctx), rb.name),
        require_all=False,
    )
    rb = prepared.runbook
    inst = rb.instances.get(step)
    if inst is not None and inst.step.foreach is not None:
        from ..run.members import member_advice

        raise InvalidInput(
            f"{step} is a foreach step: approve does not decide it; a member call cut by a "
            f"crash is decided by resolve: {member_advice(file, step)}"
        )
    if inst is None or inst.step.action not in ("approval", "check"):
        approvals = [n for n, i in rb.instances.items() if i.step.action == "approval"]
        checks = [n for n, i in rb.instances.items() if i.step.action == "check"]
        raise InvalidInput(
            f"{step!r} is not an approval step or a gate of {rb.name} (approval steps: "
            f"{', '.join(approvals) or 'none'}; gates: {', '.join(checks) or 'none'})"
        )
    from . import decide

    decide.check_text("--by", by)
    decide.check_text("--comment", comment, 2000)
    decide.require_state(state_dir(ctx), rb, file)
    if inst.step.action == "check":
        decided = decide.record(state_dir(ctx), rb, file, step, "passed", by, comment)
        Console().out(decide.said(decided, step, file))
        return 0
    said = _approve(state_dir(ctx), rb, file, step, by, comment)
    Console().out(said)
    return 0


def _approve(state_dir: str, rb: Any, file: str, step: str, by: str | None, comment: str) -> str:
    """Check and record one approval, in one transaction beside any running apply."""
    from datetime import UTC, datetime

    from ..format import approvals
    from ..masking import Masker
    from ..state.decisions import decide
    from ..state.identity import os_uid, self_approval_default
    from ..state.status import State
    from ..state.store import now
    from . import decide as people

    who = people.identity(state_dir)
    uid = os_uid(state_dir)  # one uid is one identity, its name resolved or not (directory)
    comment, by = people.masked(rb, comment) or "", people.masked(rb, by)
    on_behalf = by if by and by != who else None
    inst = rb.instances[step]
    said: list[str] = []

    def check(state: State) -> tuple[list[dict[str, Any]], None]:
        run = people.waiting_run(
            state,
            rb,
            file,
            step,
            "not waiting for an approval: approve it once the run has reached it and paused",
        )
        st = state.steps[step]  # waiting: recorded
        if run.digest and run.digest != rb.digest:
            raise InvalidInput(
                f"your copy of {file} differs from the runbook run {run.id} applies "
                f"({run.digest}, yours is {rb.digest}): approve the same runbook (or apply "
                "the edit first)"
            )
        try:  # with the run's own variables, never this command's --var
            rules = approvals.rules(
                inst.step.call.params,
                run.vars or {},
                self_approval_default(state_dir),
                f"{step}: with",
            )
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if rules.approvers is not None and who not in rules.approvers:
            hint = f" (--by {by} only says on whose behalf)" if by else ""
            raise InvalidInput(
                f"{who!r} may not approve {step}: its approvers are "
                f"{', '.join(rules.approvers) or 'nobody'}, and the identity recorded is "
                f"{_whose(state_dir)} who runs `approve`{hint}"
            )
        starter = {"by": run.user, "uid": run.uid}
        if (
            not rules.allow_self
            and run.user is not None
            and approvals.same_identity(starter, who, uid)
        ):
            raise InvalidInput(
                f"{who!r} started run {run.id} and may not approve {step} (allow_self is "
                "false): another person approves"
            )
        vars_now = approvals.vars_digest(run.vars)
        got = approvals.tally(
            state.records.get(step),
            run.id,
            rules,
            digest=run.digest,
            vars_now=vars_now,
            step_pin=inst.digest,
            now=datetime.now(UTC),
            used=approvals.used_of(st.outputs),
        )
        mine = [d for d in got.valid if approvals.same_identity(d, who, uid)]
        if mine:
            raise InvalidInput(
                f"{step} was already approved by {mine[0].get('by')} at {mine[0].get('at')}"
                + (f" (uid {uid}: {who} now)" if mine[0].get("by") != who else "")
                + f": a second approval by the same identity does not count ({got.text(rules)})"
            )
        if len(got.valid) >= rules.required:
            raise InvalidInput(
                f"{step} was already approved by {', '.join(got.names)} "
                f"({got.text(rules)}): run `runbook apply {file}` to go on"
            )
        # bound to the plan the run applies: its runbook, its vars, this step's definition
        decision = {
            "by": who,
            "uid": uid,
            "on_behalf_of": on_behalf,
            "comment": comment,
            "at": now(),
            "digest": run.digest,
            "vars": vars_now,
            "step": inst.digest,
        }
        count = len(got.valid) + 1
        said.append(run.id)
        said.append(rules.counted(count))
        said.append(
            "" if count >= rules.required else f"; it waits for {rules.required - count} more"
        )
        return [
            {
                "t": "record",
                "step": step,
                "items": {approvals.key(run.id, who): json.dumps(decision)},
            },
            {
                "t": "approval",
                "step": step,
                "run": run.id,
                "by": who,
                "on_behalf_of": on_behalf,
                "comment": comment,
                "count": count,
                "required": rules.required,
            },
        ], None

    decide(state_dir, rb.name, Masker(), check, people.notice)
    run_id, counted, more = said
    also = f" on behalf of {on_behalf}" if on_behalf else ""
    go = more or f"; run `runbook apply {file}` to go on"
    return f"{step} approved by {who}{also} for run {run_id} ({counted}){go}"


def _whose(state_dir: str) -> str:
    """Whose identity ``approve`` records, as the refusal names it."""
    from ..state.location import is_postgres

    return "the database's session_user" if is_postgres(state_dir) else "the OS user"
