"""``runbook apply FILE``"""

from __future__ import annotations

import click

from ..errors import Exit
from ..run.runner import DEFAULT_GRACE, DEFAULT_MAX_PARALLEL
from .options import lease_option, state_dir, var_options


@click.command(name="apply")
@click.argument("file", type=click.Path(dir_okay=False))
@var_options
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PARALLEL,
    show_default=True,
    help="Steps run at the same time, at most.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="ID",
    help="Run only this step, instance, phase or wave (PHASE.WAVE); what it needs "
    "must be done already. Repeatable.",
)
@click.option(
    "--replace",
    multiple=True,
    metavar="ID",
    help="Run this succeeded step instance again (e.g. after changing it). Repeatable.",
)
@click.option(
    "--accept-changes",
    is_flag=True,
    help="Go on with a run whose runbook or vars changed since it started (journaled with "
    "who and both digests; approvals given before the change are voided).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Render every template and show what would run; run and write nothing. Exit 2 "
    "when the apply would be refused (changes to a pinned run not accepted).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--grace",
    type=float,
    default=DEFAULT_GRACE,
    show_default=True,
    help="Seconds running steps get to finish after Ctrl-C/SIGTERM.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: live view on a terminal, lines otherwise; json: one event per line.",
)
@lease_option
@click.pass_context
def command(
    ctx: click.Context,
    file: str,
    assignments: tuple[str, ...],
    var_files: tuple[str, ...],
    max_parallel: int,
    only: tuple[str, ...],
    replace: tuple[str, ...],
    accept_changes: bool,
    dry_run: bool,
    yes: bool,
    grace: float,
    fmt: str,
    lease: float,
) -> int:
    """Run (or resume) a runbook.

    Runs every step whose dependencies are done, in parallel up to --max-parallel,
    checkpointing every transition to STATE_DIR/NAME/state.db. Run it again after a
    failure, a crash, Ctrl-C or an approval: succeeded steps never run again, failed ones
    get fresh attempts.

    A run is pinned to the runbook and the vars it started with: without --var or
    --var-file, a resume uses the run's vars. When the runbook or the vars changed and
    steps not yet done are affected (their definition, or a var they use), apply prints
    the changes and exits 2, writing nothing, until --accept-changes (journaled with who
    and both digests; approvals given before the change are voided). Succeeded steps that
    changed are only flagged; --replace ID runs one again.

    \b
    Exit codes: 0 every step succeeded (or was skipped by `when`); 1 a step failed,
    a contingency fired or a rollback ran; 2 invalid runbook or variables, or changes
    to a pinned run not accepted; 3 paused for an approval or an operator's decision;
    4 locked by another run (`runbook lock FILE` shows it), or this run lost its lease;
    130 interrupted.

    \b
    The run holds the state's lease, renewed every min(5s, --lease/3). A lease whose
    holder's process is gone from this host is taken over at once, an expired one after
    --lease, each with a notice naming the lost holder. A run that loses its lease (a
    takeover, `unlock --force`) starts nothing more, cancels its running actions and exits
    4; nothing it writes after that reaches the state.

    \b
    Examples:
      runbook apply migrate.yaml --var region=eu --yes
      runbook apply migrate.yaml --only rollout.pilot --yes
      runbook apply migrate.yaml --dry-run
      runbook apply migrate.yaml --accept-changes --yes   # after reviewing the changes
    """
    from ..run.scheduler import Apply, ApplyOptions
    from ..run.session import confirm, open_session, prepare
    from ..run.summary import apply_summary
    from ..state.pinned import run_vars

    prepared = prepare(
        file,
        assignments,
        var_files,
        resolve_secrets=not dry_run,
        pinned=lambda rb: run_vars(state_dir(ctx), rb.name, reopen=bool(replace), strict=True),
    )
    if dry_run:
        from ..run.dryrun import dry_run as show

        return show(prepared, state_dir(ctx), only, accept_changes)
    from ..run.pins import refuse_early

    # refused for changes (exit 2) before anything on disk is touched
    refuse_early(
        file,
        prepared.runbook,
        prepared.variables,
        prepared.masker,
        state_dir(ctx),
        accept_changes,
        replace,
    )
    confirm(f"apply {file} ({len(prepared.runbook.instances)} steps)?", yes)
    options = ApplyOptions(max_parallel, only, replace, grace, accept_changes)
    with open_session(prepared, state_dir(ctx), fmt, lease_seconds=lease) as session:
        engine = Apply(session, options)
        try:
            outcome = engine.execute()
        finally:
            engine.close()
        gates = frozenset(
            n for n, i in prepared.runbook.instances.items() if i.step.action == "check"
        )
        foreach = frozenset(
            n for n, i in prepared.runbook.instances.items() if i.step.foreach is not None
        )
        text, data = apply_summary(outcome, file, gates, foreach)
        session.reporter.summary(text, data)
    return int(outcome.exit if not outcome.nothing_to_do else Exit.OK)
