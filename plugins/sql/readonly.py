"""Which ``COPY`` a read-only PostgreSQL connection lets through: ``COPY … TO STDOUT`` and
``COPY … FROM STDIN`` (the client's own stream; a read-only transaction writes only temp
tables), never a file or a program.

A read-only transaction does not stop ``COPY … TO '/file'`` or ``COPY … TO PROGRAM 'cmd'``
(they write no table), and for a superuser or a member of ``pg_write_server_files`` /
``pg_execute_server_program`` they wrote files and ran programs as the ``postgres`` user.
``copy_refused(sql)`` reads the statement's skeleton (string literals, quoted names,
dollar-quoted bodies and comments blanked) and says why a ``COPY`` is refused, or ``None``.
"""

from __future__ import annotations

import re

_TAG = re.compile(r"\$[A-Za-z_0-9]*\$")
_PART = r"(?:\"\"|[A-Za-z_][A-Za-z_0-9$]*)"
_NAME = re.compile(rf"\s*{_PART}(?:\s*\.\s*{_PART})*")


def _skeleton(sql: str) -> str:
    """``sql`` with literals, quoted identifiers, dollar-quoted text and comments as ``""``
    or a space (their content can never read as a keyword)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            out.append(" ")
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif ch in "'\"":
            i += 1
            while i < n:
                if sql[i] == ch and sql.startswith(ch * 2, i):
                    i += 2
                elif sql[i] == ch:
                    break
                else:
                    i += 1
            i += 1
            out.append('""')
        elif ch == "$" and (tag := _TAG.match(sql, i)) is not None:
            end = sql.find(tag.group(), tag.end())
            i = n if end < 0 else end + len(tag.group())
            out.append('""')
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def copy_refused(sql: str) -> str | None:
    """Why the statement ``sql`` may not run on a read-only connection, if it is a ``COPY``
    other than ``COPY (query) TO STDOUT`` / ``COPY table [(columns)] TO STDOUT | FROM
    STDIN``, or a ``DO`` block."""
    text = _skeleton(sql).strip()
    if re.match(r"do\b", text, re.I):
        return "a read cannot run a `DO` block (its EXECUTE could COPY to a program); use a SELECT"
    if not re.match(r"copy\b", text, re.I):
        return None
    if "\\" in sql:  # `E'\''` and standard strings end in different places: not guessed
        return "a read's COPY cannot hold a backslash (its strings would be ambiguous)"
    rest = text[4:].lstrip()
    if rest.startswith("("):  # `COPY (query)`: skip the query, parentheses balanced
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                rest = rest[i + 1 :]
                break
        else:
            rest = ""
    else:  # a table name, maybe qualified, maybe with a column list
        m = _NAME.match(rest)
        rest = rest[m.end() :] if m else ""
        cols = re.match(r"\s*\([^()]*\)", rest)
        if cols:
            rest = rest[cols.end() :]
    if re.match(r"\s*(?:to\s+stdout|from\s+stdin)\b", rest, re.I):
        return None  # the client's own stream (FROM STDIN: the engine's temp tables)
    return (
        "a read can only `COPY … TO STDOUT` (or `FROM STDIN`): COPY to or from a file or a "
        "program is refused on a read-only connection"
    )
