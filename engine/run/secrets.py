"""Secrets: resolved at run time from the environment or a file, never stored or printed
(``masking.Masker`` hides their values everywhere)."""

from __future__ import annotations

import os

from ..errors import InvalidInput
from ..format.model import Runbook
from ..masking import check_length


def resolve(runbook: Runbook) -> dict[str, str]:
    """Every secret's value; all missing ones reported at once (exit 2, before anything runs)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for name, ref in runbook.secrets.items():
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if value is None:
                problems.append(f"secret {name!r}: environment variable {ref.env} is not set")
                continue
            values[name] = value
        elif ref.file is not None:
            try:
                with open(os.path.expanduser(ref.file), encoding="utf-8") as fh:
                    values[name] = fh.read().rstrip("\n")
            except OSError as exc:
                problems.append(f"secret {name!r}: cannot read {ref.file}: {exc.strerror}")
    problems += [p for n, v in values.items() if (p := check_length(n, v))]
    if problems:
        raise InvalidInput("; ".join(problems))
    return values


def available(runbook: Runbook) -> dict[str, str]:
    """The secrets that can be resolved here, silently without the others: for commands that
    only read (``customers``, ``plan``), to mask what they print and to reach a source."""
    values: dict[str, str] = {}
    for name, ref in runbook.secrets.items():
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if value is not None:
                values[name] = value
        elif ref.file is not None:
            try:
                with open(os.path.expanduser(ref.file), encoding="utf-8") as fh:
                    values[name] = fh.read().rstrip("\n")
            except OSError:
                continue
    short = [p for n, v in values.items() if (p := check_length(n, v))]
    if short:
        raise InvalidInput("; ".join(short))
    return values
