"""The journal: the append-only table of every event (who, what, when, outputs, errors) in
the state database. ``append`` adds records inside the caller's transaction (a group commit is
one transaction: one fsync); ``read`` returns them in commit order.

A record that is not valid JSON, or not a mapping with a kind, is damage: a ``StateError``
naming its sequence number (exit 2), and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import StateError
from .db import Database


def encode(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)


def append(db: Database, records: Sequence[dict[str, Any]]) -> None:
    """Insert ``records`` (already masked and stamped); the caller holds a transaction."""
    db.executemany(
        "INSERT INTO journal (at, kind, rec) VALUES (?, ?, ?)",
        [(str(r.get("at", "")), str(r.get("t", "")), encode(r)) for r in records],
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    """A JSON number as the engine writes it: finite (``1e999`` is not)."""
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is not a finite number")
    return value


def read(db: Database, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
    """(seq, record) of every record after ``after``, in commit order."""
    out: list[tuple[int, dict[str, Any]]] = []
    for seq, text in db.query("SELECT seq, rec FROM journal WHERE seq > ? ORDER BY seq", (after,)):
        try:
            rec = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
        except (TypeError, ValueError, RecursionError):  # RecursionError: nested past bounds
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("t"), str):
            raise StateError(
                f"{db.path}: journal record {seq} is damaged (not a JSON record); the state was "
                "left untouched"
            )
        out.append((seq, rec))
    return out
