"""``http``: one HTTP request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import BuiltinAction


class HttpAction(BuiltinAction):
    name = "http"
    summary = "send an HTTP request"
    idempotent = False
    changes = True

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"{params.get('method', 'GET')} {params.get('url')}"
