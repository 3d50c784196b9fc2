"""What the commands that read one runbook share: load it, or report it as ``validate`` does."""

from __future__ import annotations

from ..console.terminal import Console
from ..errors import InvalidInput, Problem, ValidationFailed
from ..format.loader import Loaded, load


class Reported(InvalidInput):
    """The problems were printed already; the CLI only sets the exit code."""

    def __init__(self, file: str, count: int) -> None:
        super().__init__(f"{file}: invalid ({count} problem(s))")


def load_or_report(file: str, console: Console) -> Loaded:
    """The loaded runbook; or every problem on stderr, located, and ``Reported`` (exit 2).

    Lint warnings go to stderr too: they do not stop a plan or a graph.
    """
    problems: list[Problem]
    try:
        loaded = load(file)
    except ValidationFailed as exc:
        problems = [p for p in exc.problems if p.severity == "error"] or exc.problems
    except InvalidInput as exc:
        problems = [Problem(file, 1, 1, "", exc.message)]
    else:
        for p in loaded.warnings:
            console.err(console.style(str(p), "yellow", err=True))
        return loaded
    for p in problems:
        console.err(console.style(str(p), "red", err=True))
    raise Reported(file, len(problems))
