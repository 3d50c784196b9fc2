"""``runbook validate FILE...``"""

from __future__ import annotations

import json

import click

from ..console.terminal import Console
from ..errors import Exit, InvalidInput, Problem, ValidationFailed
from ..format.loader import load


def validate(files: tuple[str, ...], strict: bool, fmt: str, console: Console) -> int:
    results: list[dict[str, object]] = []
    worst = Exit.OK
    for file in files:
        problems: list[Problem]
        try:
            loaded = load(file)
            problems = list(loaded.warnings)
        except ValidationFailed as exc:
            problems = exc.problems
        except InvalidInput as exc:
            problems = [Problem(file, 1, 1, "", exc.message)]
        errors = [p for p in problems if p.severity == "error" or strict]
        if errors:
            worst = Exit.INVALID
        results.append(
            {
                "file": file,
                "valid": not errors,
                "errors": sum(1 for p in problems if p.severity == "error"),
                "warnings": sum(1 for p in problems if p.severity == "warning"),
                "problems": [p.as_json() for p in problems],
            }
        )
        if fmt == "text":
            for p in problems:
                colour = "red" if p.severity == "error" else "yellow"
                console.err(console.style(str(p), colour, err=True))
            if not errors:
                note = f" ({len(problems)} warning(s))" if problems else ""
                console.out(f"{file}: valid{note}")
            else:
                console.err(
                    console.style(f"{file}: invalid ({len(errors)} problem(s))", "bold", err=True)
                )
    if fmt == "json":
        console.out(json.dumps({"valid": worst == Exit.OK, "files": results}, indent=2))
    return int(worst)


@click.command(name="validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--strict", is_flag=True, help="Treat lint warnings as errors (exit 2).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one `FILE:LINE:COL: PATH: message` line per problem; json: a list of problems.",
)
def command(files: tuple[str, ...], strict: bool, fmt: str) -> int:
    """Check runbooks without running anything.

    Checks the schema, each action's `with`, template syntax and names (vars, secrets,
    steps, wave), ids, needs, risks, contingencies and dependency cycles; then lints
    (a changing step without `rollback`, a risk without contingency, ...).

    Every problem of every file is listed, as FILE:LINE:COL: PATH: message.
    Exit 0 when valid, 2 when any file has an error (or, with --strict, a warning).

    \b
    Example:
      runbook validate --strict runbooks/*.yaml
    """
    return validate(files, strict, fmt, Console())
