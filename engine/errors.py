"""One error hierarchy; the CLI maps each class to the exit code of SPEC §4.

Every error the engine raises on purpose is a ``RunbookError``.  Anything else that escapes is
a bug: the CLI prints one line and writes the traceback to a log file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    """The exit codes of SPEC §4."""

    OK = 0
    FAILED = 1
    INVALID = 2
    PAUSED = 3
    LOCKED = 4
    INTERRUPTED = 130


@dataclass(frozen=True, order=True)
class Problem:
    """One located finding about a runbook: an error or a lint warning."""

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: str = "error"  # "error" | "warning"
    code: str = field(default="invalid", compare=False)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        label = "" if self.severity == "error" else "warning: "
        if self.path:
            return f"{where}: {self.path}: {label}{self.message}"
        return f"{where}: {label}{self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
            "code": self.code,
        }


class RunbookError(Exception):
    """Base of every error the engine raises on purpose."""

    exit_code: Exit = Exit.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(RunbookError):
    """Bad usage, a bad --var, an unreadable file: exit 2, nothing changed."""

    exit_code = Exit.INVALID


class ValidationFailed(InvalidInput):
    """A runbook with one or more located problems (all of them, not the first only)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        shown = errors or self.problems
        super().__init__("\n".join(str(p) for p in shown))


class StateError(InvalidInput):
    """A corrupt, truncated or foreign state: exit 2, and the state is left as it was."""


class StateWriteError(RunbookError):
    """The state could not be written (disk full, I/O error): nothing more is started."""

    exit_code = Exit.FAILED


class RunFailed(RunbookError):
    """The run (or a rollback) failed; the state is saved and resumable."""

    exit_code = Exit.FAILED


class Paused(RunbookError):
    """The run waits for an approval or an operator's decision."""

    exit_code = Exit.PAUSED


class LockHeld(RunbookError):
    """Another apply/rollback holds the state's lease."""

    exit_code = Exit.LOCKED


class LeaseLost(LockHeld):
    """This run's lease was taken over (or cleared by ``unlock --force``): it stopped, and
    nothing it would have written after that reached the state (exit 4)."""


class Interrupted(RunbookError):
    """Ctrl-C or SIGTERM: checkpointed, resumable."""

    exit_code = Exit.INTERRUPTED


class ActionFailed(Exception):
    """Raised by an action's ``run`` when the step failed.

    ``details`` is the indented tail of output (already bounded) shown under the message;
    ``outputs`` are whatever the action measured before failing (kept in the state).
    """

    def __init__(
        self,
        message: str,
        *,
        details: str = "",
        outputs: dict[str, Any] | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.outputs = outputs or {}
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class Waiting(Exception):
    """Raised by an action's ``run`` when the step needs a human decision (an approval).

    The step becomes ``waiting``; independent branches run on; ``apply`` exits 3 when nothing
    else can run.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
