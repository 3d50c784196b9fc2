"""Options shared by the commands that run things."""

from __future__ import annotations

import math
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

    def __init__(self, minimum: float = 0.0, maximum: float | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

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
        bounds = (
            f" (from {format_duration(self.minimum)} to {format_duration(self.maximum)})"
            if self.maximum is not None
            else ""
        )
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r} is not a positive duration{bounds}", param, ctx)
        if seconds < self.minimum:
            self.fail(
                f"{value!r} is shorter than {format_duration(self.minimum)}{bounds}", param, ctx
            )
        if self.maximum is not None and seconds > self.maximum:
            self.fail(
                f"{value!r} is longer than {format_duration(self.maximum)}{bounds}", param, ctx
            )
        return seconds


LEASE_MIN = 1.0  # seconds: renewed every lease/3, a renewal needs a moment
LEASE_MAX = 3600.0  # seconds: a holder gone without a trace blocks the state this long at most


def lease_option(f: F) -> F:
    return click.option(
        "--lease",
        "lease",
        type=Duration(minimum=LEASE_MIN, maximum=LEASE_MAX),
        default="30s",
        show_default=True,
        metavar="DURATION",
        help="How long the state's lease lasts without renewal (renewed every min(5s, "
        "lease/3)), from 1s to 1h; another apply takes over a lease expired this long, or "
        "at once when its holder's process is gone from this host.",
    )(f)
