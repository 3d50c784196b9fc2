"""``runbook status FILE``"""

from __future__ import annotations

import json
from typing import Any

import click

from ..console.terminal import Console
from ..format.durations import format_duration
from ..format.printable import one_line
from ..state import outcome
from .options import state_dir


@click.command(name="status")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def command(ctx: click.Context, file: str, fmt: str) -> int:
    """Show each step's status, attempts, duration and last error.

    Reads the state without taking the lock (safe while a run is going on). A succeeded
    step whose definition changed since it ran is flagged `changed`.

    \b
    Example:
      runbook status migrate.yaml --format json | jq '.steps[] | select(.status=="failed")'
    """
    from ..format.loader import load
    from ..state.view import build_status

    loaded = load(file)
    doc = build_status(loaded, state_dir(ctx))
    console = Console()
    if fmt == "json":
        console.out(json.dumps(doc, indent=2, default=str, ensure_ascii=False))
        return 0
    _text(console, doc, file)
    return 0


def status_words(run: dict[str, Any]) -> str:
    """The run's status in the words every command uses (SPEC §11 "Run outcome")."""
    status = run["status"]
    holder = run.get("holder") or {}
    if holder.get("lost_since"):
        # its holder died mid-command: never shown as plainly running (or plainly paused)
        who = (
            f" ({holder['user']}@{holder['host']} pid {holder['pid']})"
            if holder.get("host")
            else ""
        )
        again = holder.get("resume_with") or "apply"
        return (
            f"{status.replace('_', ' ')} (holder lost since {holder['lost_since']}{who}: "
            f"resume with {again})"
        )
    words = outcome.run_words(status, bool(run.get("compensated")), bool(run.get("clean", True)))
    return words + (" (its apply exited 1)" if words != status.replace("_", " ") else "")


def _text(console: Console, doc: dict[str, Any], file: str) -> None:
    run = doc["run"]
    if run is None:
        console.out(f"{doc['runbook']}: never applied ({len(doc['steps'])} steps pending)")
        return
    console.out(
        f"{doc['runbook']}: run {run['id']} {status_words(run)} (started {run['started_at']})"
    )
    holder = run.get("holder")
    if holder and holder.get("host") and run["status"] == "running" and holder.get("alive"):
        console.out(
            f"  held by {holder['user']}@{holder['host']} pid {holder['pid']} since "
            f"{holder['started']}"
        )
    if run["compensated"]:
        fired = ", ".join(run["contingencies_fired"])
        console.out(
            "  compensated in this run: "
            + (f"contingencies fired ({fired})" if fired else "steps were rolled back")
        )
    for name, c in run["cohorts"].items():
        console.out(f"  {c['summary']}")
        for s in c["short"]:
            keys = ", ".join(str(k) for k in s["first_keys"])
            more = ", …" if s["count"] > len(s["first_keys"]) else ""
            console.out(
                f"  not clean: cohort {name}, wave {s['wave']}: {s['count']:,} member(s) not "
                f"{s['target']} (first: {keys}{more})"
            )
    width = max((len(s["id"]) for s in doc["steps"]), default=4)
    for s in doc["steps"]:
        took = ""
        if s.get("duration") is not None:
            took = format_duration(s["duration"])
        flag = " changed" if s.get("changed") else ""
        line = f"  {s['id']:<{width}}  {s['status']:<15} {s['attempts']:>2}  {took:>7}{flag}"
        gate = s.get("gate")
        if gate and gate.get("head"):
            line += f"  {gate['head']}:"  # its measurements follow, one a line
        elif s.get("error"):
            line += f"  {one_line(s['error'])}"
        console.out(line)
        if s.get("unknown_members"):
            from ..run.members import member_advice

            console.out(f"      {member_advice(file, s['id'])}")
        if gate:
            _gate(console, s["id"], gate, file)


def _gate(console: Console, sid: str, gate: dict[str, Any], file: str) -> None:
    """A waiting gate: each measurement, and how it is decided (or who decided)."""
    import shlex

    from ..format.gates import measurement_text

    for m in gate.get("measurements") or []:
        console.out(f"      {measurement_text(m)}")
    decision = gate.get("decision")
    q, node = shlex.quote(file), shlex.quote(sid)
    if decision:
        console.out(
            f"      decided: {decision['decision']} by {decision['by']} at {decision['at']}; "
            f"runbook apply {q} goes on"
        )
    else:
        console.out(
            f"      decide: runbook approve {q} {node} (pass) or "
            f"runbook resolve {q} {node} --as failed"
        )
