"""``runbook customers FILE [KEY...]``"""

from __future__ import annotations

import click

from ..console.terminal import Console
from ..state.ledger import STATES
from .common import load_or_report
from .options import state_dir


@click.command(name="customers")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@click.option(
    "--cohort",
    "cohort_name",
    metavar="NAME",
    help="The cohort to read (required when the runbook declares more than one).",
)
@click.option("--wave", metavar="ID", help="Only the members of this wave.")
@click.option(
    "--in",
    "states",
    multiple=True,
    type=click.Choice(STATES),
    metavar="STATE",
    help="Only entities in this state (repeatable: --in failed --in vanished): "
    + ", ".join(STATES)
    + ".",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv"]),
    default="text",
    show_default=True,
    help="text: for a terminal; json: one object; csv: one line per entity (key, wave, state, "
    "reason, updated_at, then the attributes) for the support team.",
)
@click.pass_context
def command(
    ctx: click.Context,
    file: str,
    keys: tuple[str, ...],
    cohort_name: str | None,
    wave: str | None,
    states: tuple[str, ...],
    fmt: str,
) -> int:
    """Where each customer is: the ledger of a cohort, read-only.

    \b
    No KEY: counts by wave x state (waves in draw order, states in journey
    order, with totals). With --wave or --in: the entities that match. With
    KEYs: each entity's wave, state, attributes, and its journey in time:
    drawn into its wave, every transition (state, step, run, wave attempt)
    and every message (channel, Message-ID, delivery state).

    Journey states: pending, notified, moved, verified; excluded, failed,
    compensated, late, vanished. An unknown KEY, an unknown --wave, or a
    cohort not drawn yet (`runbook cohort freeze FILE` or the first `apply`
    draws it) is exit 2. Reads the state without taking the lock (safe during
    a run); secrets are masked in everything printed.

    \b
    Examples:
      runbook customers migrate.yaml
      runbook customers migrate.yaml 4711 982
      runbook customers migrate.yaml --in failed --format csv > failed.csv
      runbook customers migrate.yaml --wave pilot --format json | jq '.entities[].state'
    """
    from ..masking import Masker
    from ..report.customers import Query, customers, pick_cohort
    from ..run.secrets import available

    console = Console()
    rb = load_or_report(file, console).runbook
    cohort = pick_cohort(rb, cohort_name)
    masker = Masker(available(rb))
    query = Query(keys, wave, states, fmt)
    customers(rb, state_dir(ctx), cohort, query, masker, console.stdout.write)
    console.stdout.flush()
    return 0
