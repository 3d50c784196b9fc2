"""Text from outside the runbook (member keys and attributes, error output, file names) shown
on a terminal: control characters become visible escapes (``\\x1b``, ``\\r``, ``\\x07``), so
no data can move the cursor, retitle the window, clear the screen or forge a line.

The one helper every console line goes through (`status`, `apply`, `rollback`, `customers`,
`report`, the reporters): ``printable`` keeps the line breaks the engine itself writes;
``one_line`` escapes them too, for a value that is one line by nature (a key, an error)."""

from __future__ import annotations

import re
from typing import Any

_ESCAPE = r"\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029"  # C0 but tab and LF, DEL, C1, separators
_LINES = re.compile(f"[{_ESCAPE}]")
_ONE = re.compile(f"[{_ESCAPE}\\n\\t]")
_SGR = "\x1b\\[[0-9;]*m"  # a colour, as Console.style writes it
_LINES_SGR = re.compile(f"{_SGR}|[{_ESCAPE}]")


def _escape(m: re.Match[str]) -> str:
    return m.group().encode("unicode_escape").decode("ascii")


def printable(text: str, colour: bool = False) -> str:
    """``text`` with its control characters escaped, line breaks kept (CR escaped: it would
    overwrite the line). ``colour``: colour codes (SGR) pass, on a terminal that shows
    colour; nothing else does."""
    if colour:
        return _LINES_SGR.sub(_keep_colour, text)
    return _LINES.sub(_escape, text)


def _keep_colour(m: re.Match[str]) -> str:
    return m.group() if len(m.group()) > 1 else _escape(m)  # a colour code, or one character


def one_line(value: Any) -> str:
    """One line of text (None: empty), every control character escaped, line breaks too."""
    text = "" if value is None else str(value)
    return _ONE.sub(_escape, text)
