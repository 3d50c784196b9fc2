"""Values normalised per column type, so the same row compares equal across engines.

SPEC §6: integers as decimals, numerics without trailing zeros, timestamps in ISO 8601 UTC,
NULL distinct from the empty string.  A naive timestamp is taken as UTC (the copy writes
PostgreSQL sessions in UTC).  Text read from a numeric or timestamp column of SQLite (which
stores what it is given) is parsed the same way; text that does not parse stays as it is.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable
from typing import Any

from .common import BOOL, DATE, FLOAT, INT, JSON, NUMERIC, TIMESTAMP, TIMESTAMPTZ

Normaliser = Callable[[Any], Any]


def number(d: decimal.Decimal) -> str:
    """``1.50`` -> ``1.5``; ``100.00`` -> ``100``; ``-0.0`` -> ``0``."""
    if not d.is_finite():
        return str(d)
    if d.is_zero():
        return "0"
    return format(d.normalize(), "f")


def timestamp(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _text_as(category: str, text: str) -> Any:
    if category in (INT, NUMERIC, FLOAT):
        try:
            return number(decimal.Decimal(text.strip()))
        except decimal.InvalidOperation:
            return text
    if category in (TIMESTAMP, TIMESTAMPTZ):
        try:
            return timestamp(dt.datetime.fromisoformat(text.strip()))
        except ValueError:
            return text
    if category == BOOL and text.lower() in ("true", "false", "t", "f"):
        return "1" if text.lower() in ("true", "t") else "0"
    if category == JSON:
        try:
            return json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)
        except ValueError:
            return text
    if category == DATE:
        try:
            return dt.date.fromisoformat(text.strip()).isoformat()
        except ValueError:
            return text
    return text


def normalise(value: Any, category: str) -> Any:
    """The canonical form of ``value`` from a column of ``category``: a str, bytes or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return _text_as(category, value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return repr(value)
        return number(decimal.Decimal(repr(value)))
    if isinstance(value, decimal.Decimal):
        return number(value)
    if isinstance(value, dt.datetime):
        return timestamp(value)
    if isinstance(value, (dt.date, dt.time, uuid.UUID)):
        return value.isoformat() if not isinstance(value, uuid.UUID) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def normaliser(category: str) -> Normaliser:
    def norm(value: Any) -> Any:
        return normalise(value, category)

    return norm
