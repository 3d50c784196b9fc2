"""Where the run state lives (SPEC §8 "Backends"): ``--state URL`` is a directory (the default
``./.runbook``) or a PostgreSQL URL (``postgresql://…`` or ``postgres://…``).

``parse`` is the one place that tells them apart: any other ``scheme://`` (or a DSN with a
password) is exit 2, never a folder named after it, and the password of a URL is masked in
every form the location is shown (``shown``). The commands ask ``is_postgres`` (or use
``Location``) to pick the backend: the directory backend is the one of before, unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidInput
from ..masking import MASK, mask_url_passwords

DEFAULT = ".runbook"
PG_SCHEMES = frozenset({"postgresql", "postgres"})
# schemes that are clearly URLs even without `//` (a DSN taken for a folder name)
_URL_SCHEMES = frozenset(
    {"postgresql", "postgres", "sqlite", "mysql", "mariadb", "http", "https", "file", "redis"}
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_CREDENTIALS = re.compile(r"[^/:@\s]*:[^/@\s]*@")


def shown(value: str) -> str:
    """``value`` with any password masked (``user:***@``, ``password=***``)."""
    return re.sub(r"(:)[^:@/\s]*(@)", r"\1" + MASK + r"\2", mask_url_passwords(value))


@dataclass(frozen=True)
class Location:
    kind: str  # "dir" | "postgresql"
    value: str  # the folder, or the URL as given (password included: never print it)

    @property
    def postgres(self) -> bool:
        return self.kind == "postgresql"

    def shown(self) -> str:
        return shown(self.value) if self.postgres else self.value


def parse(value: str, option: str = "--state") -> Location:
    """The location ``value`` names; InvalidInput (exit 2) for a URL of another scheme or a
    string with credentials that is not a PostgreSQL URL."""
    m = _SCHEME.match(value)
    scheme = m.group(1).lower() if m else None
    if scheme in PG_SCHEMES:
        if not value[len(scheme or "") + 1 :].startswith("//"):
            raise InvalidInput(
                f"{option} {shown(value)}: not a PostgreSQL URL nor a directory; give a "
                "directory or postgresql://USER@HOST:PORT/DATABASE"
            )
        return Location("postgresql", value)
    url = m is not None and (value[m.end() :].startswith("//") or scheme in _URL_SCHEMES)
    if url and m:
        raise InvalidInput(
            f"{option} {shown(value)}: the scheme {m.group(1)!r} is not supported; give a "
            "directory or postgresql://USER@HOST:PORT/DATABASE (a URL is never taken for a "
            "folder name)"
        )
    if _CREDENTIALS.search(value) is not None:
        raise InvalidInput(
            f"{option} {shown(value)}: a DSN with a password is not a directory (it would "
            "become a folder named after it, password included); give a directory or a "
            "postgresql:// URL"
        )
    return Location("dir", value)


def is_postgres(value: object) -> bool:
    """``value`` (a state location as the commands pass it) is a PostgreSQL URL."""
    return (
        isinstance(value, str)
        and _SCHEME.match(value) is not None
        and (value.split(":", 1)[0].lower() in PG_SCHEMES)
    )
