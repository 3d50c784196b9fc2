"""``runbook unlock FILE --force``"""

from __future__ import annotations

import click

from ..console.terminal import Console
from ..errors import InvalidInput
from .options import state_dir


@click.command(name="unlock")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Required: you checked that the holder is gone.")
@click.pass_context
def command(ctx: click.Context, file: str, force: bool) -> int:
    """Clear the state's lease, naming its holder.

    The next apply takes a lease over by itself when its holder's process is gone from
    this host (at once) or when the lease expired (after --lease, 30s by default). This is
    for not waiting: it advances the lease's epoch, so the holder, if it still runs
    anywhere, is fenced: its next renewal or write fails, it cancels its running actions
    and exits 4, and nothing it writes after this reaches the state. Exit 0 when cleared,
    2 without --force or without a state.

    \b
    Example:
      runbook lock migrate.yaml              # who holds it, since when, last renewal
      runbook unlock migrate.yaml --force    # once that host or process is known to be gone
    """
    from ..format.loader import load
    from ..state import db as dbm
    from ..state.lease import force as force_lease
    from ..state.lease import guard
    from ..state.store import state_path

    if not force:
        raise InvalidInput("unlock clears another run's lease: check it is gone, then pass --force")
    rb = load(file).runbook
    command = f"runbook unlock {file} --force"
    from ..state.location import is_postgres

    if is_postgres(state_dir(ctx)):
        from ..state.pglease import force as force_pg

        seen, epoch = force_pg(state_dir(ctx), rb.name, command)
    else:
        directory = state_path(state_dir(ctx), rb.name)
        path = directory / dbm.FILE
        if not path.exists():
            raise InvalidInput(f"no state at {directory}: nothing to clear")
        with guard(directory):
            db = dbm.open_existing(path, rb.name)
            try:
                dbm.setup(db)
                seen, epoch = force_lease(directory, db, command)
            finally:
                db.close()
    console = Console()
    if seen.state == "none" or seen.holder is None:
        console.out(f"lease of {rb.name} cleared (nobody held it; epoch now {epoch})")
        return 0
    who = seen.holder.describe()
    if seen.state == "held":
        console.out(
            f"lease of {rb.name} cleared (it was held by {who}, live: {seen.age_text()}); epoch "
            f"now {epoch}: that run is fenced and stops at its next renewal or write (exit 4)"
        )
    else:
        console.out(
            f"lease of {rb.name} cleared (it was held by {who}, {seen.state}); epoch now {epoch}"
        )
    return 0
