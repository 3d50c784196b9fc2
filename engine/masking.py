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

Every other form a template makes of a secret is reported by the template sandbox as it is made
(``seen``: ``urlencode | lower``, ``'user:' ~ secret | b64encode``...), and masked from then on.
A password in a URL (``scheme://user:PASSWORD@``) or a keyword DSN (``password=PASSWORD``) is
masked even when it was never declared.

Journal records are masked field by field (``mask_record``): the engine's own fields —
statuses, ids, kinds, digests, times, attempts, member keys — are never touched, so a secret
that happens to be ``ing`` or ``2026`` cannot turn ``running`` into ``runn***`` or a run id
into nonsense.  A secret shorter than ``MIN_SECRET`` characters is refused when it is resolved
(``check_length``): it cannot be masked in free text without destroying the text around it.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
# a password inside a URL (`postgresql://user:pw@host/db`) is masked even when it was never
# declared as a secret: it would otherwise land in the journal through a variable or an output
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?P<at>@)")
# a keyword DSN (`host=db user=app password=...`) or a URL's `?password=`: libpq's quoting
# (every keyword that holds a password: `password`, `sslpassword`, any `…password`)
_KEYWORD_PASSWORD = re.compile(
    r"(?i)(?P<head>\b[a-z_]*password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&'\"]+)"
)
_DSN_PAIR = re.compile(r"(?i)\b([a-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s'\"]+)")
MIN_SECRET = 6  # characters: a shorter secret cannot be masked without destroying text
_MIN_FORM = 4  # a derived form shorter than this is not masked (it would mask everything)
# the fields of a journal record the engine writes itself: never masked (see mask_record)
ENGINE_FIELDS = frozenset(
    {
        "t", "id", "status", "run", "at", "attempt", "digest", "phase", "wave", "cohort",
        "event", "kind", "policy", "reason", "step", "seq", "by", "on_behalf_of", "user",
        "host", "pid", "started", "done", "unknown", "resolved", "resumed", "file",
        "reset_attempts", "delay", "risk", "token", "from", "late", "vanished", "summary",
        "items", "decision", "as", "changed", "previous",
    }
)  # fmt: skip
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
    """``text`` with the password of every URL and keyword DSN in it masked."""
    if "://" in text and "@" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + m.group("at"), text)
    if "assword" in text or "ASSWORD" in text:
        text = _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return text


def dsn_secrets(dsn: str) -> set[str]:
    """The secret values of a PostgreSQL URL or keyword DSN (the password of its user part,
    every parameter whose name holds ``password``: ``password``, ``sslpassword``), as given
    and percent-decoded: libpq may quote any of them in its errors (a value it cannot decode,
    as typed)."""
    from urllib.parse import unquote, urlsplit

    found: set[str] = set()
    if "://" in dsn:
        rest = dsn.partition("://")[2]
        userinfo = rest.split("/", 1)[0].split("?", 1)[0]
        if "@" in userinfo:
            user_part = userinfo.rsplit("@", 1)[0]
            if ":" in user_part:
                found.add(user_part.split(":", 1)[1])
        try:
            query = urlsplit(dsn).query
        except ValueError:
            query = rest.split("?", 1)[1] if "?" in rest else ""
        for piece in query.split("&"):
            key, _, value = piece.partition("=")
            if "password" in unquote(key).lower():
                found.add(value)
    else:
        for key, value in _DSN_PAIR.findall(dsn):
            if "password" in key.lower():
                found.add(value[1:-1] if value.startswith("'") else value)
    forms = found | {unquote(f) for f in found}
    return {f for f in forms if len(f) >= _MIN_FORM}


def mask_dsn(text: str, dsn: str) -> str:
    """``text`` (a message about ``dsn``: libpq's own included) with every password of
    ``dsn`` masked, in any form it may be quoted in, and every password of a URL in it."""
    for form in sorted(dsn_secrets(dsn), key=len, reverse=True):
        text = text.replace(form, MASK)
    return mask_url_passwords(text)


def check_length(name: str, value: str) -> str | None:
    """Why the secret ``name`` cannot be used (too short to mask), or None."""
    if 0 < len(value) < MIN_SECRET:
        return (
            f"secret {name!r} is shorter than {MIN_SECRET} characters: it could not be masked "
            "in outputs and messages without masking the words it happens to be part of; "
            "use a longer secret"
        )
    return None


def forms(secret: str) -> set[str]:
    """Every text a built-in filter (or a command, a URL, the journal's JSON) makes of
    ``secret``, each of which must be masked: the textual ones also after ``upper`` or
    ``lower``; base64 of the secret as it is, whole and inside a longer encoded text."""
    bases = {secret, secret.upper(), secret.lower()}
    out = set(bases)
    for base in bases:
        out |= {f(base) for f in _TRANSFORMS}
    # `%2f` as well as `%2F` (RFC 3986 allows both); JSON with `\/` (PHP's json_encode)
    # and `\u00E9` as well as `\u00e9`, in every combination
    out |= {_PERCENT.sub(lambda m: m.group().lower(), f) for f in out}
    out |= {f.replace("/", "\\/") for f in out if "/" in f}
    out |= {_UNICODE.sub(lambda m: m.group()[:2] + m.group()[2:].upper(), f) for f in out}
    out.add(base64.b64encode(secret.encode()).decode())
    out |= set(_base64_inside(secret))
    # a form shorter than the secret (lower-casing ß...) still hides it; trivial ones do not
    return {f for f in out if len(f) >= min(len(secret), 3)}


_PERCENT = re.compile(r"%[0-9A-F]{2}")
_UNICODE = re.compile(r"\\u[0-9a-f]{4}")


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
    lambda s: html.escape(s).replace("&#x27;", "&#39;"),
    lambda s: html.escape(s).replace("&#x27;", "&#39;").replace("&quot;", "&#34;"),  # markupsafe
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


_ACTIVE: weakref.WeakSet[Masker] = weakref.WeakSet()


def mask_everywhere(text: str) -> str:
    """``text`` masked by every masker of this process (the crash handler's last resort)."""
    for masker in list(_ACTIVE):
        text = masker.mask(text)
    return mask_url_passwords(text)


class Masker:
    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        secrets = {v for v in (values or {}).values() if v}
        self._secrets = sorted(secrets, key=len, reverse=True)
        self._lock = threading.Lock()
        found: set[str] = set()
        for s in secrets:
            found |= forms(s)
        self._found = found
        self._grams = {
            base[i : i + _GRAM]
            for s in secrets
            for base in (s, s.upper(), s.lower())
            for i in range(max(1, len(base) - _GRAM + 1))
        }
        self._build()
        if secrets:
            _ACTIVE.add(self)

    def _build(self) -> None:
        # longest first, so that a form containing another is masked whole
        values = sorted(self._found, key=len, reverse=True)
        # a text with none of these has no form at all: most texts are checked with these few
        anchors = sorted({_anchor(f, self._grams) for f in self._found}, key=len)
        # how far past a cut a secret (or a password in a URL) can reach
        self.longest = (len(values[0]) if values else 0) + _URL_REACH
        self._values, self._anchors = values, anchors

    def seen(self, form: str) -> None:
        """A form of a secret a template made (``sandbox.Secret``): masked from now on."""
        if len(form) < _MIN_FORM or form in self._found:
            return
        with self._lock:
            self._found = {*self._found, form}
            self._build()
        _ACTIVE.add(self)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str) -> str:
        values, anchors = self._values, self._anchors
        for anchor in anchors:
            if anchor in text:
                for v in values:
                    if v in text:
                        text = text.replace(v, MASK)
                break
        return mask_url_passwords(text)

    def mask_record(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        """A journal record masked where text from outside the engine can be (outputs,
        errors, messages, rendered values, event data); its engine fields as they are."""
        out: dict[str, Any] = {}
        for k, v in rec.items():
            if k in ENGINE_FIELDS:
                out[k] = v
            elif k == "failed" and isinstance(v, list):  # members: [key, why] pairs
                out[k] = [
                    [p[0], self.mask_value(p[1])]
                    if isinstance(p, (list, tuple)) and len(p) == 2
                    else p
                    for p in v
                ]
            else:
                out[k] = self.mask_value(v)
        return out

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
