"""``runbook graph FILE``"""

from __future__ import annotations

import click

from ..console import Console
from ..graph_render import RENDERERS
from .common import load_or_report


@click.command(name="graph")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(RENDERERS)),
    default="mermaid",
    show_default=True,
    help="mermaid: a flowchart for GitHub/GitLab markdown and mermaid.live; "
    "dot: Graphviz (`dot -Tsvg`); json: node-link data (`nodes`, `edges`).",
)
@click.option(
    "--rollbacks",
    is_flag=True,
    help="Also draw each step's rollback action, as a dashed node beside the step.",
)
def command(file: str, fmt: str, rollbacks: bool) -> int:
    """Print the runbook's dependency graph (DAG) of steps.

    \b
    An arrow A --> B means B starts only after A is done.
    mermaid: each phase is a subgraph; the waves of a phase are subgraphs
      inside it, and wave steps appear once per wave as STEP[WAVE]. An arrow
      from a subgraph means "after everything in that phase (or wave)".
    dot: phases and waves are clusters; the small points are the ends of
      phases and waves, through which later steps wait for them.
    json: {"nodes": [{"id", "kind": step|phase|wave, ...}], "edges":
      [{"source", "target", "kind"}]}; phase and wave nodes are those ends.

    An invalid runbook gets the same located errors as `validate` (exit 2).

    \b
    Examples:
      runbook graph migrate.yaml > graph.mmd
      runbook graph --format dot migrate.yaml | dot -Tsvg > graph.svg
      runbook graph --format json --rollbacks migrate.yaml
    """
    console = Console()
    loaded = load_or_report(file, console)
    console.out(RENDERERS[fmt](loaded, rollbacks))
    return 0
