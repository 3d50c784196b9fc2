"""Where a template's output lands decides how each ``{{ }}`` is written (SPEC §9, §11).

- **Shell commands** (the ``command`` of ``shell``, ``ssh`` and ``check``: an action lists its
  keys in ``command_keys``): every ``{{ }}`` renders shell-quoted, a list as separate quoted
  words; ``quote`` there changes nothing (the value is quoted once); ``| raw`` writes the value
  as it is.  A ``{{ }}`` inside a ``'…'`` or ``"…"`` literal of the command would be quoted
  inside quotes: ``quoted_blocks`` finds those for ``validate`` (exit 2 at the ``{{``).
- **URLs** (the ``url`` of ``http``, ``check`` and ``notify``: ``url_keys``): a ``{{ }}`` whose
  output lands in the path, the query or the fragment (after the scheme and host) is
  percent-encoded, every reserved character included (``/``, ``?``, ``&``, ``=``, ``#``); one at
  the start of the URL or inside the scheme and host is written as it is, so that ``url:
  "{{ vars.api }}/customers/{{ member.key }}"`` keeps the base and encodes the key.
  ``| raw`` and ``| urlencode`` (already encoded) are written as they are.

A value the author vouches for, or one already quoted for its context, travels as ``Raw``.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote as url_quote

PLAIN, SHELL, URL = "plain", "shell", "url"
# a value's place in the rendered text of a URL, marked while rendering, resolved after
_OPEN, _CLOSE = "\ue000", "\ue001"
_RAW_LAST = re.compile(r"\|\s*raw\s*-?\}\}\Z")  # `{{ x | raw }}`: the author vouches for it


class Raw(str):
    """Text written as it is: ``| raw``, or a value already quoted or encoded for its place."""


def text(value: Any) -> str:
    """A value as the text a template writes (``Markup`` and ``Raw`` become plain ``str``)."""
    return str.__str__(value) if isinstance(value, str) else str(value)


def b64encode(value: Any) -> str:
    """``| b64encode``: standard base64 of the value's UTF-8 text (e.g. for Basic auth)."""
    data = value if isinstance(value, bytes) else text(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


# -- shell commands ------------------------------------------------------------------------


def shell_words(value: Any) -> str:
    """One ``{{ }}`` of a command: quoted as one word, a list or tuple as one word per item."""
    if isinstance(value, Raw):
        return text(value)
    if isinstance(value, (list, tuple)):
        return " ".join(shell_words(v) for v in value)
    return shlex.quote(text(value))


def shell_quote_filter(value: Any) -> Raw:
    """``| quote`` inside a command: the same quoting the command gives anyway (no double)."""
    return Raw(shell_words(value))


def shell_raw_filter(value: Any) -> Raw:
    if isinstance(value, (list, tuple)):
        return Raw(" ".join(text(v) for v in value))
    return Raw(text(value))


def shell_finalize(value: Any) -> str:
    return shell_words(value)


def quoted_blocks(source: str) -> list[tuple[int, str]]:
    """The ``{{`` of every expression that sits inside a quoted literal of the command
    ``source``: ``(offset in source, "'" or '"')``.  The literal text between Jinja blocks is
    read as /bin/sh reads it (quotes, backslashes, comments); statements and comments of
    Jinja are skipped; an expression's output counts as part of a word.  An expression that
    ends in ``| raw`` is the author's to place, quotes included."""
    found: list[tuple[int, str]] = []
    state = ""  # "" outside quotes, "'" or '"' inside, "#" in a comment, "$'" ANSI-C quoting
    prev = " "  # the character before, for `#` (a comment only at the start of a word)
    for kind, start, chunk in _pieces(source):
        if kind == "{{":
            if state in ("'", '"', "$'") and not _RAW_LAST.search(chunk):
                found.append((start, "'" if state == "$'" else state))
            prev = "x"
            continue
        if kind != "text":
            continue
        i = 0
        while i < len(chunk):
            ch = chunk[i]
            if state == "#":
                if ch == "\n":
                    state = ""
            elif state == "'":
                if ch == "'":
                    state = ""
            elif state in ('"', "$'"):
                if ch == "\\":
                    i += 1
                elif ch == state[-1]:
                    state = ""
            elif ch == "\\":
                i += 1
            elif ch == "'":
                state = "$'" if prev == "$" else "'"
            elif ch == '"':
                state = '"'
            elif ch == "#" and (prev.isspace() or prev in ";&|()"):
                state = "#"
            prev = chunk[i] if i < len(chunk) else ch
            i += 1
    return found


def _pieces(source: str) -> Iterator[tuple[str, int, str]]:
    """The template as (kind, offset, text): "text", "{{", "{%" or "{#" blocks, in order."""
    pos = 0
    n = len(source)
    while pos < n:
        starts = [i for i in (source.find(m, pos) for m in ("{{", "{%", "{#")) if i >= 0]
        if not starts:
            yield "text", pos, source[pos:]
            return
        start = min(starts)
        if start > pos:
            yield "text", pos, source[pos:start]
        kind = source[start : start + 2]
        end = _block_end(source, start + 2, {"{{": "}}", "{%": "%}", "{#": "#}"}[kind])
        yield kind, start, source[start:end]
        pos = end


def _block_end(source: str, pos: int, closer: str) -> int:
    """Where the block that began before ``pos`` ends (string literals inside skipped)."""
    quote = ""
    i = pos
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"" and closer != "#}":
            quote = ch
        elif source.startswith(closer, i):
            return i + 2
        i += 1
    return len(source)


# -- URLs ----------------------------------------------------------------------------------


def url_raw_filter(value: Any) -> Raw:
    return Raw(text(value))


def url_finalize(value: Any) -> str:
    """Mark each output; ``resolve_url`` decides, with the whole URL in view, what to encode."""
    if isinstance(value, Raw):
        return text(value)
    out = text(value)
    return _OPEN + out.replace(_OPEN, "").replace(_CLOSE, "") + _CLOSE


def resolve_url(rendered: str) -> str:
    """The URL with every marked output in the path, query or fragment percent-encoded."""
    if _OPEN not in rendered:
        return rendered
    out: list[str] = []
    pos = 0
    while True:
        start = rendered.find(_OPEN, pos)
        if start < 0:
            out.append(rendered[pos:])
            return "".join(out)
        end = rendered.find(_CLOSE, start)
        out.append(rendered[pos:start])
        value = rendered[start + 1 : end]
        out.append(url_quote(value, safe="") if _past_host("".join(out)) else value)
        pos = end + 1


def _past_host(before: str) -> bool:
    """Whether text written after ``before`` is in a URL's path, query or fragment."""
    if not before:
        return False
    scheme = before.find("://")
    rest = before[scheme + 3 :] if scheme >= 0 else before
    return any(c in rest for c in "/?#")
