"""``runbook lock FILE``"""

from __future__ import annotations

import json

import click

from ..console.terminal import Console
from .options import state_dir


@click.command(name="lock")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def command(ctx: click.Context, file: str, fmt: str) -> int:
    """Show who holds the state's lease, and the lease's age.

    An apply or rollback holds the lease while it runs and renews it every min(5s,
    lease/3). The holder is `live`, `expired` (not renewed for its --lease: the next
    apply takes it over, with a notice) or `lost` (its process is gone from this host, or,
    on a PostgreSQL state, its database session is gone: taken over at once). Ages are on
    the state's clock (the file system's, or the database's). Reads only; takes nothing and
    changes nothing on disk (not even a file's modification time).
    A run of an earlier version of runbook holding `lock` is named too. Exit 0, with a
    holder or without; 2 when the state cannot be read (damaged, or not a runbook state).

    \b
    Examples:
      runbook lock migrate.yaml
      runbook lock migrate.yaml --format json | jq .lease.state
    """
    from ..format.durations import format_duration
    from ..format.loader import load
    from ..state.backend import probe
    from ..state.location import is_postgres

    rb = load(file).runbook
    seen = probe(state_dir(ctx), rb.name)
    holder = seen.holder
    console = Console()
    if fmt == "json":
        doc = {
            "runbook": rb.name,
            "lease": {
                "state": "live" if seen.state == "held" else seen.state,
                "epoch": seen.epoch,
                "seconds": seen.seconds,
                "holder": holder.__dict__ if holder and seen.state != "none" else None,
                "age": seen.age,
                "renewed": seen.renewed,
                "since_renewal": seen.idle,
                "lost_since": seen.lost_since,
                "last_holder": holder.__dict__ if holder and seen.state == "none" else None,
                "released": seen.released,
            },
        }
        console.out(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    if seen.state == "none" or holder is None:
        last = f" (last held by {holder.describe()}, released {seen.released})" if holder else ""
        console.out(f"{rb.name}: nobody holds the lease{last}")
        return 0
    console.out(f"{rb.name}: lease held by {holder.describe()}")
    age = seen.age_text()
    if seen.state == "held":
        console.out(f"  live: {age}")
    elif seen.state == "expired":
        console.out(
            f"  expired: {age}; holder lost since {seen.lost_since}: the next apply takes it "
            f"over (lease {format_duration(seen.seconds)})"
        )
    else:
        gone = (
            "database session is gone"
            if is_postgres(state_dir(ctx))
            else "process is gone from this host"
        )
        console.out(
            f"  lost: its {gone}; holder lost since {seen.lost_since} "
            f"({age}): the next apply takes it over at once"
        )
    return 0
