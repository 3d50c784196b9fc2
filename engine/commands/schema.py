"""``runbook schema``"""

from __future__ import annotations

import click

from ..actions import registry
from ..console.terminal import Console
from ..errors import InvalidInput
from ..schemas import schema_text


@click.command(name="schema")
@click.option(
    "--action", "action", metavar="NAME", help="Print this action's `with` schema instead."
)
def command(action: str | None) -> int:
    """Print the runbook JSON Schema (JSON Schema 2020-12).

    Point your editor at it with a first line such as
    `# yaml-language-server: $schema=schemas/runbook.schema.json` for completion and help.

    \b
    Examples:
      runbook schema > runbook.schema.json
      runbook schema --action sql.copy
    """
    console = Console()
    if action is None:
        console.out(schema_text("runbook").rstrip())
        return 0
    reg = registry()
    if action not in reg:
        raise InvalidInput(f"unknown action {action!r}; known: {', '.join(reg.names())}")
    import json

    console.out(json.dumps(reg.get(action).schema, indent=2))
    return 0
