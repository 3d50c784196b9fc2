"""Where command output goes: stdout for results, stderr for problems and progress.

Colour only on a terminal, never with ``NO_COLOR`` set (https://no-color.org).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ..format.printable import printable

_CODES = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "grey": "90",
    "bold": "1",
}


def wants_colour(stream: TextIO) -> bool:
    if "NO_COLOR" in os.environ:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Console:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.stdout = out or sys.stdout
        self.stderr = err or sys.stderr
        self.colour = wants_colour(self.stdout)
        self.err_colour = wants_colour(self.stderr)

    def style(self, text: str, *styles: str, err: bool = False) -> str:
        if not (self.err_colour if err else self.colour) or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{printable(text)}\x1b[0m"

    def out(self, text: str = "") -> None:
        """A line (or lines) of output, control characters from data escaped."""
        self.stdout.write(printable(text, self.colour) + "\n")

    def err(self, text: str = "") -> None:
        self.stderr.write(printable(text, self.err_colour) + "\n")
        self.stderr.flush()

    def interactive(self) -> bool:
        isatty = getattr(self.stdin, "isatty", None)
        return bool(isatty and isatty())

    @property
    def stdin(self) -> TextIO:
        return sys.stdin
