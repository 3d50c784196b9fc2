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


class Duration(click.ParamType[float]):
    """A duration as runbooks write them (SPEC §6): 30s, 2m, 1h30m, 250ms; a bare number is
    seconds."""

    name = "duration"

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        from ..format.durations import format_duration, parse_duration

        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds < self.minimum:
            self.fail(f"{value!r} is shorter than {format_duration(self.minimum)}", param, ctx)
        return seconds


def lease_option(f: F) -> F:
    return click.option(
        "--lease",
        "lease",
        type=Duration(minimum=1.0),
        default="30s",
        show_default=True,
        metavar="DURATION",
        help="How long the state's lease lasts without renewal (renewed every min(5s, "
        "lease/3)); another apply takes over a lease expired this long, or at once when "
        "its holder's process is gone from this host.",
    )(f)
