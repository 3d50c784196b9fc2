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
