"""``runbook plan FILE``"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from ..console.terminal import Console
from ..format import variables
from ..plan.build import build_plan
from ..plan.cohorts import PlanCohort
from ..plan.render import RENDERERS
from .common import load_or_report
from .options import var_options

if TYPE_CHECKING:
    from ..format.model import Runbook
    from ..masking import Masker
    from ..state.status import State


@click.command(name="plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(RENDERERS)),
    default="text",
    show_default=True,
    help="text: for a terminal; markdown: tables for a pull request or a wiki; "
    "json: one object with `groups` of `steps`, `risk_matrix` and `risks`.",
)
@var_options
@click.pass_context
def command(
    ctx: click.Context,
    file: str,
    fmt: str,
    assignments: tuple[str, ...],
    var_files: tuple[str, ...],
) -> int:
    """Show what `apply` would do, without running anything.

    \b
    The steps in execution order, in groups: the steps of one group can run
    side by side, and each group starts once the groups before it are done.
    Each step shows its phase (and wave: wave steps appear once per wave, as
    STEP[WAVE]), what its action will do, the risks it can trigger, and its
    rollback: the rollback action, `none` (nothing to undo, said on purpose)
    or `no rollback` (the runbook says nothing).

    \b
    Then the risk register: a likelihood x impact table of risk ids, and each
    risk with its mitigation, owner, contingencies and the steps that name it.

    Once the runbook has been applied (state in --state-dir), each step also shows
    where it stands: `to run`, `done` (and `changed since applied` when its
    definition changed: apply will not re-run it without --replace), `skipped`,
    `waiting` (an approval or an operator's decision) or `running`.

    Templates are shown rendered with what is known before a run: the variables
    (their defaults, then --var-file and --var, as apply takes them) and each
    wave's values. What only a run knows is named: ⟨steps.backup.outputs.path⟩,
    ⟨run.id⟩, ⟨failed_step.error⟩, a variable without a value ⟨vars.region⟩.
    Secrets are never rendered into a plan: ⟨secrets.NAME⟩.

    Each cohort shows its waves with their sizes and strata before anything
    runs: as frozen in the ledger, or, not frozen yet, drawn now in memory from
    its source (nothing is written; --var gives the variables its dsn needs). A
    source that cannot be read shows `not drawn: REASON` (exit 0).

    An invalid runbook gets the same located errors as `validate` (exit 2), and so
    do bad --var values; lint warnings are printed on stderr and do not stop the plan.

    \b
    Examples:
      runbook plan migrate.yaml
      runbook plan migrate.yaml --var region=eu --var-file prod.yaml
      runbook plan --format markdown migrate.yaml > PLAN.md
      runbook plan --format json migrate.yaml | jq '.groups[0].steps[].id'
      runbook plan --format json migrate.yaml | jq '.cohorts.customers.waves'
    """
    from ..plan.status import plan_statuses
    from ..state.store import read_state
    from .options import state_dir

    console = Console()
    loaded = load_or_report(file, console)
    from ..state.pinned import run_vars

    values = variables.resolve(
        loaded.runbook,
        assignments,
        var_files,
        require_all=False,
        # no var given: those of the run in progress, as `apply` takes them
        pinned=None if assignments or var_files else run_vars(state_dir(ctx), loaded.runbook.name),
    )
    got = read_state(state_dir(ctx), loaded.runbook.name)
    if got is not None and got[1]:
        console.err(got[1])
    rb = loaded.runbook
    from ..masking import Masker
    from ..run.secrets import available

    secrets = available(rb)
    masker = Masker(secrets)
    statuses = (
        plan_statuses(loaded, got[0], state_dir(ctx), masker.mask_value(values))
        if got is not None
        else None
    )
    if got is not None:
        from ..state.pinned import read_var_key

        other_vars = _pinned_note(
            console, got[0], rb, values, masker, file, read_var_key(state_dir(ctx), rb.name)
        )
        if statuses is not None and other_vars:
            statuses = {
                n: (replace(s, other_vars=True) if n in other_vars else s)
                for n, s in statuses.items()
            }
    cohorts: tuple[PlanCohort, ...] = ()
    if rb.cohorts:
        from ..plan.cohorts import plan_cohorts

        cohorts = plan_cohorts(rb, state_dir(ctx), values, secrets, masker)
    plan = build_plan(loaded, statuses=statuses, values=values, cohorts=cohorts)
    # a password in a URL or a keyword DSN of a variable is masked, as `show` masks it
    console.out(masker.mask(RENDERERS[fmt](plan)))
    return 0


def _pinned_note(
    console: Console,
    state: State,
    rb: Runbook,
    values: dict[str, Any],
    masker: Masker,
    file: str,
    key: bytes | None,
) -> set[str]:
    """A run in progress pinned to another runbook or other vars: say what the next apply
    will refuse (SPEC §8 "Pinned runs"), on stderr. Returns the succeeded steps whose vars
    changed (the plan shows them rendered with the new vars: they ran with the old ones)."""
    from ..run import pins

    run = state.run
    if run is None or run.finished:
        return set()
    changes = pins.compare(run, state, rb, values, masker, key)
    if changes.affected:
        shown = ", ".join(f"{iid} ({why})" for iid, why in changes.affected[:10])
        more = f" and {len(changes.affected) - 10} more" if len(changes.affected) > 10 else ""
        console.err(
            f"note: run {run.id} started with another runbook or other vars; these steps not "
            f"yet done are affected: {shown}{more}. `runbook apply {file}` exits 2 until "
            "--accept-changes"
        )
    if changes.done_other_vars:
        shown = ", ".join(changes.done_other_vars[:10])
        more = (
            f" and {len(changes.done_other_vars) - 10} more"
            if len(changes.done_other_vars) > 10
            else ""
        )
        console.err(
            f"note: done with other vars (run {run.id} ran them with the vars it started "
            f"with; they run again only with --replace): {shown}{more}"
        )
    return set(changes.done_other_vars)
