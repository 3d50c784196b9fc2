"""``runbook approve FILE STEP``"""

from __future__ import annotations

import getpass
import json

import click

from ..console.terminal import Console
from ..errors import InvalidInput
from ..state.lock import Lock
from ..state.store import Store, now, state_path
from .options import state_dir, var_options


@click.command(name="approve")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("step")
@click.option("--by", "by", metavar="NAME", help="Who approves (default: the OS user).")
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

    Records who, when and why in the journal; the next apply goes on. When an approval step
    lists `approvers`, NAME must be one of them. On a gate (`check`) that waits after an
    inconclusive evaluation, approving passes it: the decision is bound to the measurements it
    was made on and recorded with the real identity (the OS user; --by is recorded as on
    behalf of); the gate's `approvers` and `allow_self` (default true) say who may decide.
    Never asks for confirmation.

    \b
    Examples:
      runbook approve migrate.yaml training-ack --by maria --comment "team trained on 11/20"
      runbook approve migrate.yaml 'churn-gate[pilot]' --comment "low volume week: churn ok"
    """
    from ..format.templates import render
    from ..run.session import prepare

    prepared = prepare(file, assignments, var_files, resolve_secrets=False)
    rb = prepared.runbook
    inst = rb.instances.get(step)
    if inst is None or inst.step.action not in ("approval", "check"):
        approvals = [n for n, i in rb.instances.items() if i.step.action == "approval"]
        checks = [n for n, i in rb.instances.items() if i.step.action == "check"]
        raise InvalidInput(
            f"{step!r} is not an approval step or a gate of {rb.name} (approval steps: "
            f"{', '.join(approvals) or 'none'}; gates: {', '.join(checks) or 'none'})"
        )
    if inst.step.action == "check":
        from . import decide

        given = bool(assignments or var_files)
        decide.require_state(state_dir(ctx), rb, file)
        with Lock(state_path(state_dir(ctx), rb.name)):
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
                    prepared.variables if given else None,
                )
            finally:
                store.close()
        Console().out(decide.said(decided, step, file))
        return 0
    who = by or getpass.getuser()
    approvers = inst.step.call.params.get("approvers")
    if approvers:
        allowed = render(approvers, {"vars": prepared.variables})
        if who not in allowed:
            raise InvalidInput(
                f"{who!r} may not approve {step}: approvers are {', '.join(allowed)}"
            )
    from ..plugins.approval import approval_key

    with Lock(state_path(state_dir(ctx), rb.name)):
        store = Store(state_dir(ctx), rb.name, prepared.masker)
        try:
            run = store.state.run
            if run is None or run.finished:
                raise InvalidInput(
                    f"no run of {rb.name} is in progress: start one with `runbook apply {file}`"
                )
            decision = {"by": who, "comment": comment, "at": now()}
            store.commit(
                {
                    "t": "record",
                    "step": step,
                    "items": {approval_key(run.id): json.dumps(decision)},
                },
                {"t": "approval", "step": step, "run": run.id, "by": who, "comment": comment},
            )
        finally:
            store.close()
    Console().out(f"{step} approved by {who} for run {run.id}; run `runbook apply {file}` to go on")
    return 0
