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
    """Record an approval for a waiting `approval` step; the next apply goes on.

    Records who, when and why in the journal. When the step lists `approvers`, NAME must
    be one of them. Never asks for confirmation.

    \b
    Example:
      runbook approve migrate.yaml training-ack --by maria --comment "team trained on 11/20"
    """
    from ..format.templates import render
    from ..run.session import prepare

    prepared = prepare(file, assignments, var_files, resolve_secrets=False)
    rb = prepared.runbook
    inst = rb.instances.get(step)
    if inst is None or inst.step.action != "approval":
        approvals = [n for n, i in rb.instances.items() if i.step.action == "approval"]
        raise InvalidInput(
            f"{step!r} is not an approval step of {rb.name} (approval steps: "
            f"{', '.join(approvals) or 'none'})"
        )
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
