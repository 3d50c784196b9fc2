"""Canonical values: how a column is compared with its counterpart in another database (SPEC §6).

The *pair* of columns decides the comparison type (``ctype``), not each side's declared type:

- SQLite and PostgreSQL: the PostgreSQL column's category. SQLite's loose values are read as
  that type: a legacy ``TEXT`` column of ISO timestamps against a ``timestamptz`` compares
  instants, ``'12.50'`` against a ``numeric`` compares numbers.
- PostgreSQL and PostgreSQL: the category both share; numbers of two kinds (integer, numeric,
  float) as numeric; ``timestamp`` with ``timestamptz`` as timestamp; any other two as text.

The canonical text of a value, per ctype:

- ``int``, ``numeric``, ``float``: decimal digits, no exponent, no trailing zeros (``1.5``,
  ``100``, ``0``, ``-2``), ``NaN``, ``Infinity``, ``-Infinity``. A binary float (SQLite
  ``REAL``, ``double precision``) to 15 significant digits, as PostgreSQL casts one to
  ``numeric``; an integer column takes integers only.
- ``bool``: ``1`` or ``0``.  ``date``: ``YYYY-MM-DD``.  ``uuid``: lower case, 8-4-4-4-12.
- ``timestamp`` (and ``timestamptz``): ``YYYY-MM-DD HH:MM:SS[.ffffff without trailing zeros]``
  in UTC; a value without an offset is UTC; SQLite integers and reals are Unix times.
- ``blob``: lower-case hex.  ``json``: PostgreSQL's ``jsonb`` text.  ``text`` and any other
  PostgreSQL type: its text.

NULL stays NULL, apart from ''. A SQLite value that does not parse as its ctype becomes
``BAD + ctype``, a text no database value has (PostgreSQL text cannot hold NUL): it differs
from everything, and ``bad_reason`` says why.

Three implementations that must agree (tests/plugins/test_sql_canon.py checks them against
each other): ``canon`` in Python (the authority: SQLite's slow path and the reasons),
``sqlite_text`` (SQL with ``rb_canon`` for what SQL cannot parse cheaply) and ``pg_text``.
``pg_hash`` is PostgreSQL ↔ PostgreSQL's cheaper form: the values' own hash functions, under
which two values are equal exactly when their canonical texts are.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from .common import (
    BLOB,
    BOOL,
    DATE,
    FLOAT,
    INT,
    JSON,
    NUMERIC,
    OTHER,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    Column,
)

UUID = "uuid"
BAD = "\x00"
NUMBERS = (INT, NUMERIC, FLOAT)
TOKENS = (INT, NUMERIC, FLOAT, BOOL, TIMESTAMP, DATE, UUID, BLOB)  # canonical texts without ","
_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*\Z")
_DEC_TEXT = re.compile(
    r"\s*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity))\s*\Z", re.I
)
_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})\.(\d{7,})")
_BOOL_TEXT = {"t": "1", "true": "1", "y": "1", "yes": "1", "on": "1", "1": "1",
              "f": "0", "false": "0", "n": "0", "no": "0", "off": "0", "0": "0"}  # fmt: skip
NAMES = {INT: "an integer", NUMERIC: "a number", FLOAT: "a number", BOOL: "a boolean",
         TIMESTAMP: "a timestamp", DATE: "a date", UUID: "a uuid", JSON: "JSON",
         BLOB: "bytes", TEXT: "text", OTHER: "text"}  # fmt: skip


def ctype_of(a: Column, a_kind: str, b: Column, b_kind: str) -> str:
    """The comparison type of a column pair (at least one side PostgreSQL)."""
    if a_kind == "sqlite":
        return _pg_ctype(b)
    if b_kind == "sqlite":
        return _pg_ctype(a)
    ca, cb = _pg_ctype(a), _pg_ctype(b)
    if ca == cb:
        if ca == FLOAT and a.decl != b.decl:
            return NUMERIC  # real against double precision: as numbers
        return ca
    if ca in NUMBERS and cb in NUMBERS:
        return NUMERIC
    return TEXT


def _pg_ctype(col: Column) -> str:
    if col.category == TIMESTAMPTZ:
        return TIMESTAMP
    if col.category == OTHER and col.decl == "uuid":
        return UUID
    return col.category


# -- Python: the authority ----------------------------------------------------------------------


def canon(value: Any, ctype: str) -> str | None:
    """The canonical text of ``value`` read as ``ctype`` (None for NULL; BAD... if it does not
    parse)."""
    if value is None:
        return None
    try:
        return _CANON.get(ctype, _text)(value)
    except (ValueError, TypeError, ArithmeticError, OverflowError, UnicodeDecodeError):
        return BAD + ctype


def bad_reason(value: Any, ctype: str) -> str:
    return f"{_kind(value)} value does not parse as {NAMES.get(ctype, ctype)}"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a real"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "a blob"
    return "a text"


def number(d: decimal.Decimal) -> str:
    """``1.50`` -> ``1.5``; ``100.00`` -> ``100``; ``-0.0`` -> ``0``; ``NaN``, ``Infinity``."""
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "-Infinity" if d < 0 else "Infinity"
    if d.is_zero():
        return "0"
    with decimal.localcontext() as ctx:  # the default 28 digits would round longer values
        ctx.prec = max(28, len(d.as_tuple().digits))
        return format(d.normalize(), "f")


def float15(f: float) -> str:
    """A binary float as PostgreSQL's ``float8::numeric`` gives it: 15 significant digits."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "Infinity" if f > 0 else "-Infinity"
    return number(decimal.Decimal(format(f, ".15g")))


def _int(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, decimal.Decimal) and v.is_finite() and v == v.to_integral_value():
        return str(int(v))
    if isinstance(v, str) and _INT_TEXT.match(v):
        return str(int(v))
    raise ValueError(v)


def _decimal_text(v: str) -> decimal.Decimal:
    if not _DEC_TEXT.match(v):
        raise ValueError(v)
    return decimal.Decimal(v.strip().lower().replace("infinity", "inf"))


def _numeric(v: Any) -> str:
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return float15(v)
    if isinstance(v, decimal.Decimal):
        return number(v)
    if isinstance(v, str):
        return number(_decimal_text(v))
    raise ValueError(v)


def _float(v: Any) -> str:
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, (int, decimal.Decimal)):
        return float15(float(v))
    if isinstance(v, float):
        return float15(v)
    if isinstance(v, str):
        _decimal_text(v)
        return float15(float(v.strip().lower().replace("infinity", "inf")))
    raise ValueError(v)


def _bool(v: Any) -> str:
    if isinstance(v, (bool, int)):
        return "1" if v else "0"
    if isinstance(v, float) and v in (0.0, 1.0):
        return "1" if v else "0"
    if isinstance(v, str) and v.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[v.strip().lower()]
    raise ValueError(v)


def timestamp_text(d: dt.datetime) -> str:
    if d.tzinfo is not None:
        d = d.astimezone(dt.UTC).replace(tzinfo=None)
    text = f"{d.year:04d}-{d.month:02d}-{d.day:02d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    if d.microsecond:
        text += f".{d.microsecond:06d}".rstrip("0")
    return text


def _timestamp(v: Any) -> str:
    if isinstance(v, dt.datetime):
        return timestamp_text(v)
    if isinstance(v, dt.date):
        return timestamp_text(dt.datetime(v.year, v.month, v.day))
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, (int, float)):
        return timestamp_text(dt.datetime.fromtimestamp(v, dt.UTC))
    if isinstance(v, str):
        text = v.strip()
        m = _FRACTION.search(text)
        if m:  # more than microseconds: rounded as PostgreSQL rounds them
            micro = round(float("0." + m.group(2)) * 1_000_000)
            base = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", text, count=1))
            return timestamp_text(base + dt.timedelta(microseconds=micro))
        return timestamp_text(dt.datetime.fromisoformat(text))
    raise ValueError(v)


def _date(v: Any) -> str:
    """A date; a date and time is that date only at midnight UTC, else it stays a timestamp
    (and differs from every date)."""
    if isinstance(v, dt.datetime):
        return _day(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, str):
        text = v.strip()
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat()
        return _day(dt.datetime.fromisoformat(text))
    raise ValueError(v)


def _day(d: dt.datetime) -> str:
    if d.tzinfo is not None:
        d = d.astimezone(dt.UTC).replace(tzinfo=None)
    if d.time() != dt.time(0):
        return timestamp_text(d)
    return d.date().isoformat()


def _uuid(v: Any) -> str:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)) and len(bytes(v)) == 16:
        return str(uuid.UUID(bytes=bytes(v)))
    if isinstance(v, str):
        return str(uuid.UUID(v.strip()))
    raise ValueError(v)


def _blob(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, str):
        return v.encode("utf-8").hex()
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v).encode().hex()
    raise ValueError(v)


def sqlite_real_text(f: float) -> str:
    """SQLite's own text for a REAL (``%!.15g``): ``1.5``, ``5.0``, ``1.0e+20``."""
    if f != f:
        raise ValueError(f)
    if f in (float("inf"), float("-inf")):
        return "Inf" if f > 0 else "-Inf"
    text = format(f, ".15g")
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + exponent


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return sqlite_real_text(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8")
    if isinstance(v, dt.datetime):
        return timestamp_text(v)
    if isinstance(v, (dt.date, uuid.UUID, decimal.Decimal)):
        return str(v)
    if isinstance(v, (dict, list)):
        return jsonb_text(v)
    return str(v)


def _json(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        v = bytes(v).decode("utf-8")
    if isinstance(v, str):
        parsed = json.loads(v, parse_float=decimal.Decimal, parse_int=decimal.Decimal)
        return jsonb_text(parsed)
    return jsonb_text(v)


def jsonb_text(v: Any) -> str:
    """PostgreSQL's ``jsonb`` output: object keys shortest first then by bytes (the last of a
    duplicate key kept), ``", "`` and ``": "``, numbers as ``numeric`` prints them."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float, decimal.Decimal)):
        d = v if isinstance(v, decimal.Decimal) else decimal.Decimal(repr(v))
        if not d.is_finite():
            raise ValueError(v)
        return format(abs(d) if d.is_zero() else d, "f")
    if isinstance(v, str):
        return _json_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(jsonb_text(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{_json_string(k)}: {jsonb_text(v[k])}" for k in keys) + "}"
    raise ValueError(v)


def json_same(a: str | None, b: str | None) -> bool:
    """Two canonical JSON texts equal as values: numbers compared without trailing zeros
    (``1.0`` is ``1``, as ``jsonb`` compares them), never a number equal to a boolean."""
    if a is None or b is None:
        return a is b
    try:
        return bool(_json_value(_parse(a)) == _json_value(_parse(b)))
    except ValueError:
        return False


def _parse(text: str) -> Any:
    return json.loads(text, parse_float=decimal.Decimal, parse_int=decimal.Decimal)


def _json_value(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return ("n", number(v))
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    return (type(v).__name__, v)


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                 "\r": "\\r", "\t": "\\t"}  # fmt: skip


def _json_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_CANON: dict[str, Callable[[Any], str]] = {
    INT: _int, NUMERIC: _numeric, FLOAT: _float, BOOL: _bool, TIMESTAMP: _timestamp,
    DATE: _date, UUID: _uuid, BLOB: _blob, JSON: _json, TEXT: _text, OTHER: _text,
}  # fmt: skip


def sqlite_function(ctype: str, value: Any) -> str | None:
    """``rb_canon(ctype, value)``: registered on SQLite connections (deterministic)."""
    return canon(value, ctype)


# -- SQL ------------------------------------------------------------------------------------------


def sqlite_text(x: str, ctype: str) -> str:
    """SQLite SQL giving the canonical text of column ``x`` (quoted) read as ``ctype``: the
    common forms in SQL, the rest through ``rb_canon``. Raw text is passed through only in the
    canonical shape, so any text equal to the other side's canonical text is that value."""
    slow = f"rb_canon('{ctype}', {x})"
    null = "WHEN 'null' THEN NULL"
    if ctype == INT:
        return f"CASE typeof({x}) WHEN 'integer' THEN CAST({x} AS TEXT) {null} ELSE {slow} END"
    if ctype in (NUMERIC, FLOAT):
        real = (
            f"CASE WHEN abs({x}) >= 0.0001 AND abs({x}) < 1e14 "
            f"THEN CASE WHEN {x} = CAST({x} AS INTEGER) THEN CAST(CAST({x} AS INTEGER) AS TEXT) "
            f"ELSE CAST({x} AS TEXT) END WHEN {x} = 0 THEN '0' ELSE {slow} END"
        )
        integer = (
            f"CAST({x} AS TEXT)"
            if ctype == NUMERIC
            else f"CASE WHEN abs({x}) < 1000000000000000 THEN CAST({x} AS TEXT) ELSE {slow} END"
        )
        return (
            f"CASE typeof({x}) WHEN 'integer' THEN {integer} WHEN 'real' THEN {real} "
            f"{null} ELSE {slow} END"
        )
    if ctype == BOOL:
        return (
            f"CASE typeof({x}) WHEN 'integer' THEN CASE WHEN {x} = 0 THEN '0' ELSE '1' END "
            f"{null} ELSE {slow} END"
        )
    if ctype == TIMESTAMP:
        return (
            f"CASE WHEN typeof({x}) = 'text' AND length({x}) = 19 THEN CASE substr({x}, 11, 1) "
            f"WHEN ' ' THEN {x} WHEN 'T' THEN substr({x}, 1, 10) || ' ' || substr({x}, 12) "
            f"ELSE {slow} END WHEN {x} IS NULL THEN NULL ELSE {slow} END"
        )
    if ctype == DATE:
        return (
            f"CASE WHEN typeof({x}) = 'text' AND length({x}) = 10 THEN {x} "
            f"WHEN {x} IS NULL THEN NULL ELSE {slow} END"
        )
    if ctype == UUID:
        return (
            f"CASE WHEN typeof({x}) = 'text' AND length({x}) = 36 AND {x} = lower({x}) "
            f"THEN {x} WHEN {x} IS NULL THEN NULL ELSE {slow} END"
        )
    if ctype == BLOB:
        return f"CASE WHEN {x} IS NULL THEN NULL ELSE lower(hex({x})) END"
    if ctype == JSON:
        return f"CASE WHEN {x} IS NULL THEN NULL ELSE {slow} END"
    return (
        f"CASE typeof({x}) WHEN 'text' THEN {x} WHEN 'integer' THEN CAST({x} AS TEXT) "
        f"{null} ELSE {slow} END"
    )


def pg_text(col: Column, ctype: str) -> str:
    """PostgreSQL SQL giving the canonical text of ``col`` read as ``ctype`` (sessions run in
    UTC with ``DateStyle`` ISO)."""
    x, cat = col.q, col.category
    if ctype in NUMBERS:
        if cat == NUMERIC:
            return f"trim_scale({x})::text"
        if cat == FLOAT:
            return f"trim_scale({x}::numeric)::text"
        return f"{x}::text"
    if ctype == BOOL:
        return f"{x}::int::text"
    if ctype == TIMESTAMP:
        return f"({x} AT TIME ZONE 'UTC')::text" if cat == TIMESTAMPTZ else f"{x}::text"
    if ctype == JSON:
        return f"{x}::jsonb::text"
    if ctype == BLOB:
        return f"encode({x}, 'hex')"
    return f"{x}::text"


def pg_hash(col: Column, ctype: str, seed: int) -> str:
    """A 64-bit hash of ``col`` read as ``ctype``, equal exactly when the canonical texts are
    (PostgreSQL ↔ PostgreSQL); NULL gives its own constant."""
    x, cat = col.q, col.category
    if ctype == INT:
        h = f"hashint8extended({x}::int8, {seed})"
    elif ctype == NUMERIC:
        h = f"hash_numeric_extended({x}::numeric, {seed})"
    elif ctype == FLOAT:
        # as ``pg_text``: 15 significant digits, the one rule of every path (docs/contract.md)
        h = f"hash_numeric_extended({x}::numeric, {seed})"
    elif ctype == BOOL:
        h = f"hashint4extended({x}::int4, {seed})"
    elif ctype == TIMESTAMP:
        value = f"({x} AT TIME ZONE 'UTC')" if cat == TIMESTAMPTZ else x
        h = f"timestamp_hash_extended({value}, {seed})"
    elif ctype == JSON:
        h = f"jsonb_hash_extended({x}::jsonb, {seed})"
    elif ctype == UUID:
        h = f"uuid_hash_extended({x}, {seed})"
    else:
        h = f'hashtextextended(({pg_text(col, ctype)}) COLLATE "C", {seed})'
    return f"coalesce({h}, {-seed * 7919 - 1})"
