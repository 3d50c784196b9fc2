"""``runbook graph FILE``"""

from __future__ import annotations

import click

from ..console.terminal import Console
from ..graph.render import RENDERERS
from .common import load_or_report
from .options import state_dir


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
@click.option(
    "--state",
    "with_state",
    is_flag=True,
    help="Colour each step by its status in the state (done, running, failed, skipped, "
    "waiting, unknown, rolled back, ...): mermaid classDef, dot fillcolor, json `status`.",
)
@click.pass_context
def command(ctx: click.Context, file: str, fmt: str, rollbacks: bool, with_state: bool) -> int:
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
      runbook graph --state migrate.yaml     # coloured by each step's status
    """
    console = Console()
    loaded = load_or_report(file, console)
    text = RENDERERS[fmt](loaded, rollbacks)
    if with_state:
        from ..graph.colours import colour

        text, notice = colour(fmt, text, loaded, state_dir(ctx))
        if notice:
            console.err(f"notice: {notice}")
    console.out(text)
    return 0
