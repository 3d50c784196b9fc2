"""``notify``: tell recipients by email, webhook or outbox, once each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import BuiltinAction


class NotifyAction(BuiltinAction):
    name = "notify"
    summary = "notify recipients (email, webhook, outbox), once each"
    idempotent = True
    changes = True
    late_keys = frozenset({"templates", "subject", "message"})
    late_names = frozenset({"recipient"})

    def describe(self, params: Mapping[str, Any]) -> str:
        who = (
            "recipients of a query"
            if params.get("recipients_query")
            else (f"{len(params.get('to', []))} recipient(s)")
        )
        locales = params.get("templates")
        tail = f" in {', '.join(locales)}" if isinstance(locales, Mapping) and locales else ""
        return f"notify {who} by {params.get('channel')}{tail}"
