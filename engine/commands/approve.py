"""``runbook approve FILE STEP``"""

from __future__ import annotations

import json

import click

from ..console.terminal import Console
from ..errors import InvalidInput
from ..state import backend
from ..state.store import Store, now
from .options import state_dir, var_options


@click.command(name="approve")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("step")
@click.option(
    "--by",
    "by",
    metavar="NAME",
    help="On whose behalf (recorded beside the real identity, the OS user; never instead).",
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

    Records who, when and why in the journal; the next apply goes on. The identity recorded
    is the real one, the OS user who runs the command; --by NAME is recorded beside it as on
    behalf of, never instead. When an approval step lists `approvers`, the OS user must be one
    of them. Refused (exit 2, nothing recorded): a step that is not waiting, a second approval
    of the same run, a copy of the runbook that differs from the run's. On a gate (`check`) that waits after an
    inconclusive evaluation, approving passes it: the decision is bound to the measurements it
    was made on and recorded with the real identity (the OS user; --by is recorded as on
    behalf of); the gate's `approvers` and `allow_self` (default true) say who may decide.
    Never asks for confirmation.

    \b
    Examples:
      runbook approve migrate.yaml training-ack --by maria --comment "team trained on 11/20"
      runbook approve migrate.yaml 'churn-gate[pilot]' --comment "low volume week: churn ok"
    """
    from ..run.session import prepare
    from ..state.pinned import run_vars

    # without --var, the vars of the run in progress (SPEC §11)
    prepared = prepare(
        file,
        assignments,
        var_files,
        resolve_secrets=False,
        pinned=lambda rb: run_vars(state_dir(ctx), rb.name),
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
    if inst.step.action == "check":
        from . import decide

        decide.check_text("--by", by)
        decide.check_text("--comment", comment, 2000)
        decide.require_state(state_dir(ctx), rb, file)
        with backend.decision_lock(state_dir(ctx), rb.name):
            store = Store(state_dir(ctx), rb.name, prepared.masker)
            try:
                decided = decide.record(
                    store,
                    rb,
                    file,
                    step,
                    "passed",
                    by,
                    comment,
                )
            finally:
                store.close()
        Console().out(decide.said(decided, step, file))
        return 0
    from . import decide

    decide.check_text("--by", by)
    decide.check_text("--comment", comment, 2000)
    who = decide.identity(state_dir(ctx))
    comment, by = decide.masked(rb, comment) or "", decide.masked(rb, by)
    from ..plugins.approval import approval_key
    from ..state.status import Status

    decide.require_state(state_dir(ctx), rb, file)
    with backend.decision_lock(state_dir(ctx), rb.name):
        store = Store(state_dir(ctx), rb.name, prepared.masker)
        try:
            run = store.state.run
            if run is None or run.finished:
                raise InvalidInput(
                    f"no run of {rb.name} is in progress: start one with `runbook apply {file}`"
                )
            st = store.state.steps.get(step)
            if st is None or st.status is not Status.WAITING:
                have = st.status.value if st else "pending"
                raise InvalidInput(
                    f"{step} is {have}, not waiting for an approval: approve it once the run "
                    "has reached it and paused"
                )
            earlier = store.state.records.get(step, {}).get(approval_key(run.id))
            done = json.loads(earlier) if earlier is not None else None
            if done is not None and not done.get("void"):  # a voided one is approved anew
                raise InvalidInput(
                    f"{step} was already approved by {done.get('by')} at {done.get('at')}: run "
                    f"`runbook apply {file}` to go on"
                )
            if run.digest and run.digest != rb.digest:
                raise InvalidInput(
                    f"your copy of {file} differs from the runbook run {run.id} applies "
                    f"({run.digest}): approve the same runbook (or apply the edit first)"
                )
            approvers = inst.step.call.params.get("approvers")
            if approvers:  # with the run's own variables, never this command's --var
                rendered = decide.rendered(approvers, run.vars or {}, f"{step}: with.approvers")
                allowed = [str(a) for a in rendered] if isinstance(rendered, list) else []
                if who not in allowed:
                    hint = f" (--by {by} only says on whose behalf)" if by else ""
                    raise InvalidInput(
                        f"{who!r} may not approve {step}: its approvers are "
                        f"{', '.join(allowed)}, and the identity recorded is the OS user who "
                        f"runs `approve`{hint}"
                    )
            on_behalf = by if by and by != who else None
            # bound to the runbook the run is pinned to (a change voids it: run/pins.py)
            decision = {
                "by": who,
                "on_behalf_of": on_behalf,
                "comment": comment,
                "at": now(),
                "digest": run.digest,
            }
            store.commit(
                {
                    "t": "record",
                    "step": step,
                    "items": {approval_key(run.id): json.dumps(decision)},
                },
                {
                    "t": "approval",
                    "step": step,
                    "run": run.id,
                    "by": who,
                    "on_behalf_of": on_behalf,
                    "comment": comment,
                },
            )
        finally:
            store.close()
    also = f" on behalf of {on_behalf}" if on_behalf else ""
    Console().out(
        f"{step} approved by {who}{also} for run {run.id}; run `runbook apply {file}` to go on"
    )
    return 0
