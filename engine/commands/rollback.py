"""``runbook rollback FILE``"""

from __future__ import annotations

import click

from ..errors import Exit, InvalidInput
from ..run.runner import DEFAULT_GRACE, DEFAULT_MAX_PARALLEL
from .options import lease_option, lease_seconds, state_dir, var_options


@click.command(name="rollback")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--step",
    "step",
    metavar="ID",
    help="Roll back this step (and, first, the succeeded steps that depend on it).",
)
@click.option("--phase", "phase", metavar="ID", help="Roll back this phase's steps.")
@click.option("--wave", "wave", metavar="[PHASE.]WAVE", help="Roll back this wave's steps.")
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Show which rollback actions would run, in order and in parallel groups; run nothing.",
)
@var_options
@click.option(
    "--max-parallel", type=click.IntRange(min=1), default=DEFAULT_MAX_PARALLEL, show_default=True
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--grace", type=float, default=DEFAULT_GRACE, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@lease_option
@click.pass_context
def command(
    ctx: click.Context,
    file: str,
    step: str | None,
    phase: str | None,
    wave: str | None,
    plan_only: bool,
    assignments: tuple[str, ...],
    var_files: tuple[str, ...],
    max_parallel: int,
    yes: bool,
    grace: float,
    fmt: str,
    lease: str,
) -> int:
    """Undo succeeded steps in reverse dependency order.

    Runs each succeeded step's `rollback` only after the rollbacks of every step that
    depended on it, in parallel where independent. A step with `rollback: none` (or a gate
    or read) has nothing to undo. A failing rollback is `rollback_failed` and the steps it
    protects are not rolled back past it. Checkpointed and resumable: run it again after a
    failure or a crash.

    \b
    Exit codes: 0 every rollback that ran succeeded; 1 one failed; 2 bad input;
    3 a rollback was left unknown by a crash (resolve it); 4 locked; 130 interrupted.

    \b
    Examples:
      runbook rollback migrate.yaml --wave rollout.early --plan
      runbook rollback migrate.yaml --step copy --yes
    """
    from ..run.session import confirm, open_session, prepare
    from ..run.undo import plan_text, run_rollback, targets_for

    if sum(x is not None for x in (step, phase, wave)) > 1:
        raise InvalidInput("give at most one of --step, --phase, --wave")
    from ..state.pinned import run_vars

    # without --var, the vars of the run whose steps are undone (SPEC §11: a run stores them)
    lease_s = lease_seconds(lease)  # bad input before anything is read
    prepared = prepare(
        file,
        assignments,
        var_files,
        resolve_secrets=not plan_only,
        pinned=lambda rb: run_vars(state_dir(ctx), rb.name, reopen=True),
    )
    if plan_only:
        return plan_text(prepared, state_dir(ctx), step, phase, wave)
    targets = targets_for(prepared, state_dir(ctx), step, phase, wave)
    if not targets:
        from ..console.terminal import Console

        Console().out("nothing to roll back: no succeeded step in that scope")
        return int(Exit.OK)
    confirm(f"roll back {len(targets)} step(s) of {file}?", yes)
    with open_session(prepared, state_dir(ctx), fmt, lease=lease_s) as session:
        return run_rollback(session, step, phase, wave, max_parallel, grace)
