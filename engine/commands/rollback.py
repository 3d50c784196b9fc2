"""``runbook rollback FILE``"""

from __future__ import annotations

import click

from ..errors import Exit, InvalidInput
from ..run.runner import DEFAULT_GRACE, DEFAULT_MAX_PARALLEL
from .options import lease_option, state_dir, var_options


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
    "--accept-changes",
    is_flag=True,
    help="Go on although the runbook or vars changed since the run started, for the steps "
    "this rolls back (journaled with who and both digests, as apply's; approvals given "
    "before the change are voided).",
)
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
    accept_changes: bool,
    max_parallel: int,
    yes: bool,
    grace: float,
    fmt: str,
    lease: float,
) -> int:
    """Undo succeeded steps in reverse dependency order.

    Runs each succeeded step's `rollback` only after the rollbacks of every step that
    depended on it, in parallel where independent. A step with `rollback: none` (or a gate
    or read) has nothing to undo. A failing rollback is `rollback_failed` and the steps it
    protects are not rolled back past it. Checkpointed and resumable: run it again after a
    failure or a crash.

    Like apply, rollback is pinned to the runbook and vars the run started with: without
    --var or --var-file it uses the run's vars, and when an edit or other vars change a
    step it would undo (its rollback, a var it uses, its place in the order), it prints the
    changes and exits 2, writing nothing, until --accept-changes.

    \b
    Exit codes: 0 every rollback that ran succeeded; 1 one failed; 2 bad input, or changes
    to the pinned run not accepted; 3 a rollback was left unknown by a crash (resolve it);
    4 locked, or this rollback lost its lease (as for apply: --lease); 130 interrupted.

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
    prepared = prepare(
        file,
        assignments,
        var_files,
        resolve_secrets=not plan_only,
        pinned=lambda rb: run_vars(state_dir(ctx), rb.name, reopen=True, strict=not plan_only),
    )
    if plan_only:
        return plan_text(prepared, state_dir(ctx), step, phase, wave)
    targets = targets_for(prepared, state_dir(ctx), step, phase, wave)
    if not targets:
        from ..console.terminal import Console

        Console().out("nothing to roll back: no succeeded step in that scope")
        return int(Exit.OK)
    from ..run.pins import refuse_early

    # refused for changes (exit 2) before anything on disk is touched, as apply's
    refuse_early(
        file,
        prepared.runbook,
        prepared.variables,
        prepared.masker,
        state_dir(ctx),
        accept_changes,
        (),
        undo=targets,
    )
    confirm(f"roll back {len(targets)} step(s) of {file}?", yes)
    with open_session(prepared, state_dir(ctx), fmt, lease_seconds=lease) as session:
        return run_rollback(session, step, phase, wave, max_parallel, grace, accept_changes)
