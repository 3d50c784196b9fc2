"""Masking: every secret value becomes ``***`` in any text or nested value before it is stored,
printed or rendered. The store masks every record before it is written and the reporters mask
every line before it is shown. A base module: it imports nothing of the engine.

A secret is masked in every form the built-in filters give it (SPEC §9): as it is, shell-quoted
(``quote``, a command's own quoting), percent-encoded (``urlencode``, a URL's path or query, a
password inside a URL), JSON-escaped (``tojson``), base64 (``b64encode``, also inside a longer
encoded text such as ``user:password``), HTML-escaped, upper- and lower-case.  The forms are
computed once per secret; a text is searched for each (C-speed substring search) and only
replaced when one is there.  Text is masked *before* it is cut (``head``, ``tail``): a secret
that straddles the cut would otherwise leave its beginning or its end behind.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
# a password inside a URL (`postgresql://user:pw@host/db`) is masked even when it was never
# declared as a secret: it would otherwise land in the journal through a variable or an output
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?P<at>@)")
_MIN_B64_PART = 8  # characters of a secret's base64 inside a longer text worth masking
_URL_REACH = 256  # characters of `scheme://user:password@` a cut must not split
_GRAM = 4  # characters of a secret that most of its forms keep as they are


def _anchor(form: str, grams: set[str]) -> str:
    """A short piece of ``form`` that many forms share (a piece of the secret itself), else
    the form: a text without it cannot hold the form."""
    for i in range(max(1, len(form) - _GRAM + 1)):
        if form[i : i + _GRAM] in grams:
            return form[i : i + _GRAM]
    return form


def mask_url_passwords(text: str) -> str:
    if "://" in text and "@" in text:
        return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + m.group("at"), text)
    return text


def forms(secret: str) -> set[str]:
    """Every text a built-in filter (or a command, a URL, the journal's JSON) makes of
    ``secret``, each of which must be masked: the textual ones also after ``upper`` or
    ``lower``; base64 of the secret as it is, whole and inside a longer encoded text."""
    bases = {secret, secret.upper(), secret.lower()}
    out = set(bases)
    for base in bases:
        out |= {f(base) for f in _TRANSFORMS}
    out.add(base64.b64encode(secret.encode()).decode())
    out |= set(_base64_inside(secret))
    # a form shorter than the secret (lower-casing ß...) still hides it; trivial ones do not
    return {f for f in out if len(f) >= min(len(secret), 3)}


def _json_inner(s: str, *, ascii: bool = True, html_safe: bool = False) -> str:
    text = json.dumps(s, ensure_ascii=ascii)[1:-1]
    if html_safe:  # Jinja2's tojson
        for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
            text = text.replace(a, b)
    return text


_TRANSFORMS = (
    shlex.quote,
    lambda s: quote(s, safe=""),
    lambda s: quote(s, safe="/"),  # Jinja2's urlencode
    lambda s: quote(s, safe="/:@!$&'()*+,;="),  # a URL's userinfo or path as written
    lambda s: quote_plus(s, safe=""),
    lambda s: quote_plus(s, safe="/"),
    lambda s: _json_inner(s),
    lambda s: _json_inner(s, ascii=False),
    lambda s: _json_inner(s, html_safe=True),  # Jinja2's tojson
    lambda s: _json_inner(s, ascii=False, html_safe=True),
    html.escape,
    lambda s: html.escape(s).replace("&#x27;", "&#39;"),  # markupsafe's escape
)


def _base64_inside(secret: str) -> Iterable[str]:
    """The part of the base64 text that only the secret decides, at each of the three
    alignments it can have inside a longer encoded text (``b64encode`` of ``user:pw``)."""
    data = secret.encode()
    for pad in (1, 2):
        enc = base64.b64encode(b"\0" * pad + data).decode()
        end = (pad + len(data)) // 3 * 4
        part = enc[4:end]
        if len(part) >= _MIN_B64_PART:
            yield part
    enc = base64.b64encode(data).decode()
    part = enc[: len(data) // 3 * 4]
    if len(part) >= _MIN_B64_PART:
        yield part


class Masker:
    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        secrets = {v for v in (values or {}).values() if v}
        self._secrets = sorted(secrets, key=len, reverse=True)
        found: set[str] = set()
        for s in secrets:
            found |= forms(s)
        # longest first, so that a form containing another is masked whole
        self._values = sorted(found, key=len, reverse=True)
        # how far past a cut a secret (or a password in a URL) can reach
        self.longest = (len(self._values[0]) if self._values else 0) + _URL_REACH
        # a text with none of these has no form at all: most texts are checked with these few
        grams = {
            base[i : i + _GRAM]
            for s in secrets
            for base in (s, s.upper(), s.lower())
            for i in range(max(1, len(base) - _GRAM + 1))
        }
        self._anchors = sorted({_anchor(f, grams) for f in found}, key=len)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str) -> str:
        for anchor in self._anchors:
            if anchor in text:
                for v in self._values:
                    if v in text:
                        text = text.replace(v, MASK)
                break
        return mask_url_passwords(text)

    def head(self, text: str, limit: int) -> str:
        """The first ``limit`` characters of ``text`` once masked: a secret that straddles
        the cut is masked whole, never left half.  Only the part that can matter is masked:
        the head and one form's length after it (more when masking shortened it)."""
        size = limit + self.longest
        while True:
            window = text[:size]
            masked = self.mask(window)
            # an unmasked piece of a form cut at the window's end is under `longest` long
            if len(window) == len(text) or len(masked) >= limit + self.longest:
                return masked[:limit]
            size *= 2

    def tail(self, text: str, limit: int) -> str:
        """The last ``limit`` characters of ``text`` once masked (see ``head``)."""
        size = limit + self.longest
        while True:
            window = text[-size:] if size < len(text) else text
            masked = self.mask(window)
            if len(window) == len(text) or len(masked) >= limit + self.longest:
                return masked[-limit:] if limit else ""
            size *= 2

    def mask_value(self, value: Any) -> Any:
        """A copy of ``value`` with every string masked (mappings and lists walked)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {k: self.mask_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_value(v) for v in value]
        return value
