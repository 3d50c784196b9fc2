"""``runbook unlock FILE --force``"""

from __future__ import annotations

import click

from ..console.terminal import Console
from ..errors import InvalidInput
from ..state.lock import force_unlock
from ..state.store import state_path
from .options import state_dir


@click.command(name="unlock")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Required: you checked that the holder is gone.")
@click.pass_context
def command(ctx: click.Context, file: str, force: bool) -> int:
    """Clear a stale lock, naming its holder.

    A lock whose holder died on this host is taken over automatically by the next apply;
    this is for a lock held from another host that is gone. It refuses while the holder
    is alive on this host. Exit 0 when cleared, 2 without --force.

    \b
    Example:
      runbook apply migrate.yaml --yes       # exit 4 names the holder: host, pid, user, start
      runbook unlock migrate.yaml --force    # once that host or process is known to be gone
    """
    from ..format.loader import load

    if not force:
        raise InvalidInput("unlock clears another run's lock: check it is gone, then pass --force")
    rb = load(file).runbook
    from ..state.location import is_postgres

    if is_postgres(state_dir(ctx)):
        from ..state.pglease import force_release

        who = force_release(state_dir(ctx), rb.name)
    else:
        who = force_unlock(state_path(state_dir(ctx), rb.name))
    Console().out(f"lock of {rb.name} cleared (it was held by {who})")
    return 0
