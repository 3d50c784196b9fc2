"""Masking: every secret value becomes ``***`` in any text or nested value before it is stored,
printed or rendered. The store masks every record before it is written and the reporters mask
every line before it is shown. A base module: it imports nothing of the engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
# a password inside a URL (`postgresql://user:pw@host/db`) is masked even when it was never
# declared as a secret: it would otherwise land in the journal through a variable or an output
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?P<at>@)")


def mask_url_passwords(text: str) -> str:
    if "://" in text and "@" in text:
        return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + m.group("at"), text)
    return text


class Masker:
    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        # longest first, so that a secret containing another is masked whole
        self._values = sorted({v for v in (values or {}).values() if v}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, MASK)
        return mask_url_passwords(text)

    def mask_value(self, value: Any) -> Any:
        """A copy of ``value`` with every string masked (mappings and lists walked)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {k: self.mask_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_value(v) for v in value]
        return value
