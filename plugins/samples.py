"""Cohort gates (SPEC §7, §11): a metric over the rows of a wave's members, against the same
metric over a baseline's members.

The gate's query returns ``(key, number)`` rows.  The engine wraps it and joins its keys with
the members' keys inside the database, set-wise, in one statement: the keys travel as one bound
parameter (a JSON array read by ``json_each`` on SQLite, a ``text[]`` array unnested on
PostgreSQL), so the connection stays read-only (no temp table, which a read-only transaction
or a hot standby would refuse) and there is no query per member.  Keys are compared as text on
both sides: the ledger keeps each key's type from the cohort's source (an integer ``17`` or a
text ``'C-17'``), and a gate's table may hold the same key as the other type.

Per member, its rows' numbers are summed (NULL ignored; a member whose rows are all NULL, or
that has no row, has no value and is not in the sample).  ``n`` is the number of members with a
value; the metric is ``mean`` (the average of the members' values), ``sum``, ``count`` (=
``n``) or ``rate`` (the share of those members whose value is non-zero).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runbook_engine.actions import Masker

KEYS = "rb_keys"  # the bound parameter holding the members' keys, when params are named


@dataclass(frozen=True)
class Sample:
    raw: Any  # the metric as the database gave it (None: no member had a value)
    n: int  # members with a value
    not_numbers: int = 0  # rows whose value is not a number (text, blob): inconclusive
    example: Any = None  # one of them, for the reason


def wrapped(query: str, kind: str, metric: str, placeholder: str) -> str:
    """The gate's query wrapped: one row ``(n, metric)`` over the members named by the
    ``placeholder`` parameter."""
    body = query.strip().rstrip(";").strip()
    if kind == "sqlite":
        k, members = "CAST(k AS TEXT)", f"(SELECT value FROM json_each({placeholder}))"
        nonzero = "sum(CASE WHEN v <> 0 THEN 1 ELSE 0 END)"
        # sum() and avg() read text as 0 ('abc', '', 'NaN'): such rows are counted, set-wise,
        # and make the measurement inconclusive (numeric text such as '1.5' is a number)
        bad = (
            "(typeof(v) = 'blob' OR (typeof(v) = 'text' AND (trim(v) = ''"
            " OR trim(v) GLOB '*[^0-9.eE+-]*' OR trim(v) NOT GLOB '*[0-9]*')))"
        )
        not_numbers = f"sum(CASE WHEN {bad} THEN 1 ELSE 0 END)"
        example = f"min(CASE WHEN {bad} THEN v END)"
    else:
        k, members = "k::text", f"(SELECT unnest(CAST({placeholder} AS text[])))"
        nonzero = "count(*) FILTER (WHERE v <> 0)"
        not_numbers, example = "0", "NULL::text"  # PostgreSQL refuses to sum text
    value = {
        "mean": "avg(v)",
        "sum": "sum(v)",
        "count": "count(*)",
        "rate": f"CASE WHEN count(*) = 0 THEN NULL ELSE 1.0 * {nonzero} / count(*) END",
    }[metric]
    return (
        f"WITH rb_gate(k, v) AS ({body}\n),\n"
        f"rb_member(k, v, bad, example) AS (SELECT {k}, sum(v), {not_numbers}, {example}"
        f" FROM rb_gate WHERE v IS NOT NULL AND {k} IN {members} GROUP BY {k})\n"
        f"SELECT count(*), {value}, sum(bad), min(example) FROM rb_member"
    )


def _bind(
    kind: str, params: Sequence[Any] | Mapping[str, Any], keys: list[str]
) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
    """(the keys' placeholder, every parameter): the keys go after positional parameters, or
    under their own name beside named ones."""
    value: Any = json.dumps(keys) if kind == "sqlite" else keys
    if isinstance(params, Mapping) and params:
        if KEYS in params:
            from runbook_engine.errors import ActionFailed

            raise ActionFailed(f"params: {KEYS!r} is the engine's own name", retryable=False)
        return (f":{KEYS}" if kind == "sqlite" else f"%({KEYS})s"), {**params, KEYS: value}
    return ("?" if kind == "sqlite" else "%s"), [*params, value]


def measure(
    dsn: str,
    query: str,
    params: Sequence[Any] | Mapping[str, Any],
    keys: Sequence[Any],
    metric: str,
    masker: Masker | None = None,
) -> Sample:
    """The metric over ``keys``' rows, read-only, in one statement. No key: no sample."""
    if not keys:
        return Sample(None, 0)
    from runbook_engine.plugins.sql.db import connect, kind_of

    kind = kind_of(dsn)
    text_keys = [str(k) for k in keys]
    placeholder, bound = _bind(kind, params, text_keys)
    if kind == "postgresql" and not params:
        query = query.replace("%", "%%")  # the keys are a parameter now: `%` is psycopg's
    sql = wrapped(query, kind, metric, placeholder)
    with connect(dsn, must_exist=True, read_only=True, masker=masker) as conn:
        try:
            row = conn.execute(sql, bound).fetchone()
        finally:
            conn.rollback()
    n = int(row[0]) if row and row[0] is not None else 0
    bad = int(row[2]) if row and row[2] is not None else 0
    return Sample(row[1] if row and n else None, n, bad, row[3] if row and bad else None)
