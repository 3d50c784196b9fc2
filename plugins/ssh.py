"""``ssh``: run a command on inventory hosts with paramiko."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import BuiltinAction


class SshAction(BuiltinAction):
    name = "ssh"
    summary = "run a command on remote hosts over SSH"
    idempotent = False
    changes = True

    def describe(self, params: Mapping[str, Any]) -> str:
        targets = [*params.get("hosts", []), *(f"group {g}" for g in params.get("groups", []))]
        return f"ssh `{params.get('command', '')}` on {', '.join(str(t) for t in targets)}"
