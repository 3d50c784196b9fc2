"""``runbook report FILE``"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from ..console.terminal import Console
from ..errors import InvalidInput, StateError
from .common import load_or_report
from .options import state_dir

FORMATS = ("markdown", "html", "json")


@click.command(name="report")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="markdown",
    show_default=True,
    help="markdown: tables and a mermaid gantt timeline; html: one self-contained page "
    "(inline SVG timeline and gate charts, no network); json: every figure, machine-readable.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report to this file instead of stdout.",
)
@click.option(
    "--run",
    "run_id",
    metavar="ID",
    help="Report on this earlier run (default: the latest); `status` shows the run id.",
)
@click.pass_context
def command(ctx: click.Context, file: str, fmt: str, output: str | None, run_id: str | None) -> int:
    """The post-migration evaluation of a run, from the journal and the state.

    What happened (outcome, duration, a timeline of every step), where it hurt
    (failures and retries with their errors, contingencies fired and why, rollbacks,
    gates against their thresholds, slowest steps), what customers got (per wave:
    customers moved, verify results, notifications sent, skipped and uncertain),
    approvals, and the risk register with what materialised. With cohorts, the
    ledger's entities: per wave a funnel (members, notified, moved, verified,
    failed, compensated, pending), excluded entities by reason, late and vanished
    ones with their first keys.

    Reads the journal without taking the lock (safe during a run). The journal is
    already masked: the report holds no secret. Exit 0 when the report was made,
    whatever the run's outcome; 2 for an invalid runbook, a runbook never applied,
    or a damaged state.

    \b
    Examples:
      runbook report migrate.yaml > report.md
      runbook report migrate.yaml --format html --output report.html
      runbook report migrate.yaml --format json | jq '.waves[] | {wave, customers_moved}'
    """
    from ..report.build import build
    from ..state.journeys import reader
    from ..state.store import read_records

    console = Console()
    loaded = load_or_report(file, console)
    name = loaded.runbook.name
    where = state_dir(ctx)
    got = read_records(where, name)
    if got is None:
        raise StateError(
            f"{file}: runbook {name!r} has never been applied (no state in {_shown(where, name)}): "
            f"nothing to report yet; run `runbook apply {file}` first, or pass the --state-dir "
            "it ran with"
        )
    records, notice = got
    notices = [notice] if notice else []
    for note in notices:
        console.err(f"notice: {note}")
    with reader(where, name) as ledger:
        rep = build(loaded, records, run_id, notices, ledger)
    text = render(fmt, rep)
    if output:
        _write(output, text)
        console.err(f"report of run {rep.run.id} written to {output} ({fmt})")
    else:
        console.stdout.write(text)
        console.stdout.flush()
    return 0


def render(fmt: str, rep: object) -> str:
    from ..report.model import Report

    assert isinstance(rep, Report)
    if fmt == "json":
        import json

        return json.dumps(rep.as_json(), indent=2, ensure_ascii=False, default=str) + "\n"
    if fmt == "html":
        from ..report.html import render_html

        return render_html(rep)
    from ..report.markdown import render_markdown

    return render_markdown(rep)


def _write(output: str, text: str) -> None:
    """Replace ``output`` whole (a reader never sees half a report), 0600."""
    target = Path(output)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".report-", dir=str(target.parent.resolve()))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)  # a report tells about customers and systems: private (SPEC §9)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise InvalidInput(f"--output {output}: cannot write: {exc.strerror or exc}") from None


def _shown(where: str, name: str) -> str:
    """Where the state was looked for, a password in a URL masked."""
    from ..state.location import is_postgres, shown

    return f"{shown(where)} for {name}" if is_postgres(where) else f"{where}/{name}"
