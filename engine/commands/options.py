"""Options shared by the commands that run things."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def var_options(f: F) -> F:
    f = click.option(
        "--var-file",
        "var_files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="YAML mapping of variable values (repeatable; --var wins).",
    )(f)
    f = click.option(
        "--var",
        "assignments",
        multiple=True,
        metavar="NAME=VALUE",
        help="Set a variable (repeatable), converted to its declared type.",
    )(f)
    return f


def state_dir(ctx: click.Context) -> str:
    obj = ctx.find_root().obj or {}
    return str(obj.get("state_dir", ".runbook"))


def lease_option(f: F) -> F:
    return click.option(
        "--lease",
        "lease",
        default="30s",
        show_default=True,
        metavar="DURATION",
        help="On a PostgreSQL state: how long the run's lease lasts without renewal (renewed "
        "every min(5s, lease/3)); another apply takes over a lease expired that long.",
    )(f)


def lease_seconds(value: str) -> float:
    """``--lease``: a duration of at least one second (exit 2 otherwise)."""
    from ..errors import InvalidInput
    from ..format.durations import parse_duration

    try:
        seconds = float(value) if value.replace(".", "", 1).isdigit() else parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"--lease {value!r}: {exc}") from None
    if seconds < 1:
        raise InvalidInput(f"--lease {value!r}: at least 1s (it is renewed every lease/3)")
    return seconds
