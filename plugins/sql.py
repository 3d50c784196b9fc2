"""``sql.exec``, ``sql.query``, ``sql.copy`` and ``sql.verify``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_engine.actions import BuiltinAction


def _where(params: Mapping[str, Any]) -> str:
    where = params.get("where")
    return f" where {where}" if where else ""


class SqlExecAction(BuiltinAction):
    name = "sql.exec"
    summary = "run SQL statements in one transaction"
    idempotent = False
    changes = True


class SqlQueryAction(BuiltinAction):
    name = "sql.query"
    summary = "run one SQL query"
    idempotent = True
    changes = False


class SqlCopyAction(BuiltinAction):
    name = "sql.copy"
    summary = "copy rows between databases, upserting on a key"
    idempotent = True
    changes = True

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"copy {params.get('table')} rows{_where(params)}, upsert on {params.get('key')}"


class SqlVerifyAction(BuiltinAction):
    name = "sql.verify"
    summary = "compare rows on both sides by count and per-row checksum"
    idempotent = True
    changes = False

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"verify {params.get('table')} rows{_where(params)} match on both sides"
