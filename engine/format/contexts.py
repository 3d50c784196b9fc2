"""Where a template's output lands decides how each ``{{ }}`` is written (SPEC §9, §11).

- **Shell commands** (the ``command`` of ``shell``, ``ssh`` and ``check``: an action lists its
  keys in ``command_keys``): every ``{{ }}`` renders shell-quoted, a list as separate quoted
  words; ``quote`` there changes nothing (the value is quoted once); ``| raw`` writes the value
  as it is.  A quoted word is safe only where the shell reads a word (``shellsyntax``): a
  ``{{ }}`` inside a quoted literal, a comment, a here-document, backquotes, after ``eval`` or
  in ``sh -c``'s script is refused — by ``validate`` (``misplaced_values``, exit 2 at the
  ``{{``) and again on the rendered command (``resolve_shell``: a step failure), where
  ``{% %}`` statements have written their text.
- **URLs** (the ``url`` of ``http``, ``check`` and ``notify``: ``url_keys``): a ``{{ }}`` whose
  output lands in the path, the query or the fragment (after the scheme and host) is
  percent-encoded, every reserved character included (``/``, ``?``, ``&``, ``=``, ``#``); one in
  the userinfo (before an ``@``) is percent-encoded too; one in the host or port must be a host
  name (letters, digits, ``.``, ``-``, an optional ``:PORT``) or the render fails: a value can
  never move a request, with its credentials, to another host.  A value at the very start of
  the URL is its base, written as it is (``url: "{{ vars.api }}/customers/{{ member.key }}"``);
  ``validate`` refuses outside data there and in the host.  ``| raw`` and ``| urlencode``
  (already encoded) are written as they are.

A value the author vouches for, or one already quoted or encoded for its place, travels as
``Raw`` (a secret as a raw ``Secret``).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote as url_quote

from .sandbox import Raw, Secret
from .shellsyntax import MESSAGES, WORD, Reader, misplaced

PLAIN, SHELL, URL = "plain", "shell", "url"
# a value's place in the rendered text of a URL or a command, marked while rendering,
# resolved (and the marks removed) after
_OPEN, _CLOSE = "\ue000", "\ue001"
_S_OPEN, _S_CLOSE = "\ue002", "\ue003"
_MARKS = (_OPEN, _CLOSE, _S_OPEN, _S_CLOSE)
_RAW_LAST = re.compile(r"\|\s*raw\s*-?\}\}\Z")  # `{{ x | raw }}`: the author vouches for it
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")

__all__ = ["PLAIN", "SHELL", "URL", "Raw", "Secret"]


class TemplatePlaceError(ValueError):
    """A value lands where its quoting or encoding does not protect it (a step failure)."""


def text(value: Any) -> str:
    """A value as the text a template writes (``Markup`` and ``Raw`` become plain ``str``)."""
    return str.__str__(value) if isinstance(value, str) else str(value)


def _clean(value: str) -> str:
    for mark in _MARKS:
        value = value.replace(mark, "")
    return value


def b64encode(value: Any) -> str:
    """``| b64encode``: standard base64 of the value's UTF-8 text (e.g. for Basic auth)."""
    data = value if isinstance(value, bytes) else text(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def _raw(value: Any) -> bool:
    return isinstance(value, Raw) or (isinstance(value, Secret) and value.raw)


# -- shell commands ------------------------------------------------------------------------


def shell_words(value: Any) -> str:
    """One ``{{ }}`` of a command: quoted as one word, a list or tuple as one word per item."""
    if _raw(value):
        return text(value)
    if isinstance(value, (list, tuple)):
        return " ".join(shell_words(v) for v in value)
    quoted = shlex.quote(_clean(text(value)))
    if isinstance(value, Secret):
        value.derive(quoted)  # the masker learns the quoted form
    return quoted


def shell_quote_filter(value: Any) -> Raw:
    """``| quote`` inside a command: the same quoting the command gives anyway (no double)."""
    return Raw(shell_words(value))


def shell_raw_filter(value: Any) -> Raw:
    if isinstance(value, (list, tuple)):
        return Raw(" ".join(text(v) for v in value))
    return Raw(text(value))


def shell_finalize(value: Any) -> str:
    if _raw(value):
        return text(value)
    return _S_OPEN + shell_words(value) + _S_CLOSE


def resolve_shell(rendered: str) -> str:
    """The command with its values' marks removed, once each value is known to land in a
    word (``shellsyntax``); raises ``TemplatePlaceError`` otherwise."""
    if _S_OPEN not in rendered:
        return rendered
    reader = Reader()
    out: list[str] = []
    pos = 0
    while True:
        start = rendered.find(_S_OPEN, pos)
        if start < 0:
            out.append(rendered[pos:])
            reader.text(rendered[pos:])
            if reader.finish():
                raise TemplatePlaceError(f"a value lands {MESSAGES['stdin']}")
            return "".join(out)
        end = rendered.find(_S_CLOSE, start)
        literal = rendered[pos:start]
        reader.text(literal)
        where = reader.value()
        if where != WORD:
            raise TemplatePlaceError(f"a value lands {MESSAGES[where]}")
        reader.value_written()
        out.append(literal)
        out.append(rendered[start + 1 : end])
        pos = end + 1


def misplaced_values(source: str) -> list[tuple[int, str]]:
    """The ``{{`` of every expression of the command ``source`` that lands where a quoted word
    is not safe: ``(offset in source, kind)`` (``shellsyntax.MESSAGES[kind]`` says why).  The
    literal text between Jinja blocks is read as /bin/sh reads it; statements and comments of
    Jinja are skipped; an expression's output counts as part of a word.  An expression that
    ends in ``| raw`` is the author's to place."""
    pieces = list(_pieces(source))
    vouched = {start for kind, start, chunk in pieces if kind == "{{" and _RAW_LAST.search(chunk)}
    return misplaced(pieces, vouched)


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
    if _raw(value):
        return text(value)
    return _OPEN + _clean(text(value)) + _CLOSE


def resolve_url(rendered: str) -> str:
    """The URL with every marked output encoded for its place (see the module's text);
    raises ``TemplatePlaceError`` for a value in the host that is not a host name."""
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
        out.append(_in_url(value, "".join(out), _clean(rendered[end + 1 :])))
        pos = end + 1


def _in_url(value: str, before: str, after: str) -> str:
    place = _place(before)
    if place == "path":
        _no_dot_segment(value, before, after)
        return url_quote(value, safe="")
    if place == "start" or value[:1] in ("/", "?", "#", ""):
        return value  # the base of the URL, or a value that begins its path
    rest = after
    for c in "/?#":
        rest = rest.split(c, 1)[0]
    if "@" in rest:
        return url_quote(value, safe="")  # the userinfo: `user:password@`
    if _HOST.fullmatch(value):
        return value
    shown = json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=True)
    raise TemplatePlaceError(
        f"a value in the host of a URL must be a host name (letters, digits, '.', '-', an "
        f"optional ':PORT'), not {shown}: it would send the request elsewhere"
    )


def _no_dot_segment(value: str, before: str, after: str) -> None:
    """A value that makes a path segment of dots only (``.``, ``..``) would walk out of the
    path (``/accounts/../card`` is ``/card``), encoded or not: servers decode ``%2E``. It
    is refused, like a value that is not a host name in the host."""
    scheme = before.find("://")
    if any(c in before[scheme + 3 if scheme >= 0 else 0 :] for c in "?#"):
        return  # in the query or the fragment: dots are plain text there
    head = before.rsplit("/", 1)[-1]
    tail = after
    for c in "/?#":
        tail = tail.split(c, 1)[0]
    segment = head + value + tail
    if value and segment.strip(".") == "":
        shown = json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=True)
        raise TemplatePlaceError(
            f"a value in the path of a URL makes the segment {json.dumps(segment)}: dots only "
            f"would walk out of the path (value {shown})"
        )


def _place(before: str) -> str:
    """Where text written after ``before`` lands in a URL: "start" (its base), "authority"
    (userinfo, host, port) or "path" (path, query, fragment)."""
    scheme = before.find("://")
    if scheme < 0:
        return "path" if any(c in before for c in "/?#") else "start"
    rest = before[scheme + 3 :]
    return "path" if any(c in rest for c in "/?#") else "authority"


def values_before_path(source: str) -> list[tuple[int, str]]:
    """``(offset, block)`` of each ``{{ }}`` of the URL ``source`` that lands at its start or
    in its scheme, userinfo, host or port (``| raw`` ones aside): ``validate`` refuses outside
    data there."""
    out: list[tuple[int, str]] = []
    before = ""
    for kind, start, chunk in _pieces(source):
        if kind == "text":
            before += chunk
        elif kind == "{{":
            if _place(before) != "path" and not _RAW_LAST.search(chunk):
                out.append((start, chunk))
            before += "x"
    return out
