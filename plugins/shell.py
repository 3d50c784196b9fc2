"""``shell``: run a command through /bin/sh, or an argv with no shell."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import BuiltinAction


class ShellAction(BuiltinAction):
    name = "shell"
    summary = "run a local command"
    idempotent = False
    changes = True

    def describe(self, params: Mapping[str, Any]) -> str:
        if "argv" in params and isinstance(params["argv"], list):
            return "run " + shlex.join(str(a) for a in params["argv"])
        return f"run `{_one_line(str(params.get('command', '')))}`"


def _one_line(text: str, limit: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
