"""``runbook state init URL``: create or migrate the state schema on PostgreSQL (SPEC §8)."""

from __future__ import annotations

import click

from ..console.terminal import Console
from ..errors import InvalidInput


@click.group(name="state")
def command() -> None:
    """The state store shared by a team (PostgreSQL).

    \b
    Example:
      runbook state init postgresql://admin@db.example/runbook
    """


@command.command(name="init")
@click.argument("url", metavar="URL")
def init(url: str) -> int:
    """Create the schema `runbook` in the database at URL, or migrate it to this program's.

    Run once per database by a role with CREATE on it; running it again changes nothing.
    Operators then point at the same URL with --state URL (or RUNBOOK_STATE); their roles
    need USAGE on the schema runbook and SELECT, INSERT, UPDATE on its tables (README),
    given again for the tables a migration adds (it names them).

    \b
    Exit codes: 0 created, migrated or already current; 2 not a PostgreSQL URL, the
    database cannot be reached, the role may not create, or the schema is newer than this
    program (left untouched).
    """
    from ..state import pg
    from ..state.location import parse

    where = parse(url, "state init")
    if not where.postgres:
        raise InvalidInput(
            f"state init {where.shown()}: expected a PostgreSQL URL, "
            "postgresql://USER@HOST:PORT/DATABASE (a state directory needs no init)"
        )
    before, now = pg.init(url)
    if before is None:
        said = f"created the state schema runbook (version {now})"
    elif before == now:
        said = f"the state schema runbook is current (version {now}): nothing to do"
    else:
        said = f"migrated the state schema runbook from version {before} to {now}"
        added = pg.added_tables(before)
        if added:
            said += (
                f"; grant the operators' roles SELECT, INSERT, UPDATE on the tables it added: "
                f"{', '.join(added)}"
            )
    Console().out(f"{where.shown()}: {said}")
    return 0
