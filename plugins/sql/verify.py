"""``sql.verify``: the rows of ``table`` matching ``where`` are the same on both sides.

Rows are matched by key.  A key only on the source is *missing* on the target, one only on the
target is *extra*, one on both with any column unequal is *different*.  The step fails naming
the first ``max_report`` of them, in key order (with ``cohort:``, every differing member is
marked ``failed``).

- SQLite and SQLite: the source ``ATTACH``es the target and SQLite compares every column
  itself (``IS``, so NULL and '' differ) with two joins on the key.  ``where`` is evaluated
  against the source (SPEC §9): on the source's connection, a table a subquery names is the
  source's, for the target's rows too, so both sides are filtered by the same predicate.
- Any other pair (``rangediff``): each database normalises its values per column pair
  (``canon``: integers as decimals, numerics without trailing zeros, timestamps in ISO 8601 UTC,
  NULL apart from '') and hashes them per key range; only ranges that differ are bisected, down
  to the keys.  Keys whose order the two databases may not agree on (``verify_stream``) are
  streamed in key order from both sides and merged instead.
- Before either, ``keycheck`` checks that the key identifies one row on each side: duplicated
  keys and NULL keys are reported as differences (a digest of duplicates can cancel out; no
  key range selects a NULL).
- Failure messages name keys as JSON (``id=5``, ``email="a@b"``), never through ``repr``; a
  value that does not parse as its column pair's type says so (the value itself is data: it
  is not shown).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runbook_engine.actions import ActionContext
from runbook_engine.errors import ActionFailed

from .canon import ctype_of, sqlite_function
from .common import (
    BOOL,
    DATE,
    INT,
    NUMERIC,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    Column,
    Progress,
    Watch,
    check_where,
    cohort_members,
    count_rows,
    key_names,
    matching,
    member_filter,
    pick_columns,
    present_members,
    require_table,
    scope,
    utc_sessions,
    watching,
    where_sql,
    with_members,
)
from .db import (
    Connection,
    connect,
    db_message,
    is_driver_error,
    is_transient,
    jsonable,
    psycopg_module,
    scrub,
    sqlite_path,
)
from .keycheck import key_problems
from .owners import owners_of
from .rangediff import Compare, Found, Side
from .verify_stream import StreamSide, merge

DEFAULT_MAX_REPORT = 10
ATTACHED = "rb_dst"  # the target, attached to the source's connection
KEY_SHOWN = 80  # characters of one key value in a message
KINDS = {"missing": "missing on target", "extra": "extra on target", "different": "different"}


@dataclass
class Diffs:
    """Counts of each kind of difference, and the first ones found (in key order)."""

    max_report: int
    checked: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    first: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)
    every: list[tuple[tuple[Any, ...], str]] | None = None  # all of them, for a cohort's marks
    reasons: dict[tuple[Any, ...], str] = field(default_factory=dict)  # why, when known

    def add(self, key: tuple[Any, ...], kind: str) -> None:
        self.counts[kind] += 1
        if len(self.first) < self.max_report:
            self.first.append((key, kind))
        if self.every is not None:
            self.every.append((key, kind))

    @property
    def mismatches(self) -> int:
        return sum(self.counts.values())


def verify(params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
    table: str = params["table"]
    target_table: str = params.get("target_table") or table
    where: str | None = params.get("where")
    keys = key_names(params)
    diffs = Diffs(int(params.get("max_report", DEFAULT_MAX_REPORT)))
    with (
        connect(params["source"], must_exist=True, read_only=True, masker=ctx.masker) as src,
        connect(params["target"], must_exist=True, read_only=True, masker=ctx.masker) as dst,
        watching(ctx, src, dst) as watch,
    ):
        utc_sessions(src, dst)
        source = require_table(src, table, "source")
        cols, key_cols = pick_columns(source, params.get("columns"), keys, "source")
        tcols = matching(require_table(dst, target_table, "target"), cols)
        members = cohort_members(params, ctx)
        src_where = dst_where = where
        column = ""
        if members is not None:
            column = str(params.get("cohort_key") or members.key_column)
            src_condition = member_filter(src, members, column)
            dst_condition = member_filter(dst, members, column)
            src_where = with_members(where, src_condition)
            dst_where = with_members(where, dst_condition)
            diffs.every = []
        if src.kind == dst.kind == "sqlite":
            progress = Progress(
                ctx.progress, "verified", count_rows(src, table, src_where, "source")
            )
        else:
            check_where(src, table, src_where, "source")
            check_where(dst, target_table, dst_where, "target")
            progress = Progress(ctx.progress, "verified", 0)
        try:
            problems = key_problems(src, table, src_where, key_cols, "source")
            problems_dst = key_problems(
                dst, target_table, dst_where, _keys_of(tcols, cols, key_cols), "target"
            )
            if src.kind == dst.kind == "sqlite":
                _in_sqlite(src, dst, table, target_table, src_where, cols, key_cols, tcols, diffs)
            else:
                pair = (src, table, src_where, cols, key_cols, dst, target_table, dst_where, tcols)
                progress = _across(pair, diffs, watch, ctx.progress)
            _add_problems(diffs, [problems, problems_dst])
        except ActionFailed as exc:
            raise watch.explain(exc, f"after checking {diffs.checked:,} rows") from None
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            reason = watch.fired or db_message(exc)
            text = f"verifying {scope(table, where)} between {src.label} and {dst.label}: {reason}"
            raise ActionFailed(
                scrub(scrub(text, src.dsn), dst.dsn), retryable=is_transient(exc)
            ) from None
        owners: list[Any] = []
        if members is not None and [c.name for c in key_cols] == [column]:
            # a member whose own row is on neither side was never compared: it differs
            present = present_members(src, table, column, src_condition)
            if src.kind == dst.kind == "sqlite":
                present |= present_members(
                    src, _target_name(src, dst, target_table), column, src_condition
                )
            else:
                present |= present_members(dst, target_table, column, dst_condition)
            for key in list(members.keys()):
                if key not in present:
                    members.fail(key, f"sql.verify: no row in {table} on either side")
                    diffs.add((key,), "missing")
        if members is not None and diffs.every:
            owned = ((src, table, key_cols), (dst, target_table, _keys_of(tcols, cols, key_cols)))
            for owner, kind in owners_of(owned, column, diffs.every):
                members.fail(owner, f"sql.verify: {KINDS[kind]} in {target_table}")
                if owner not in owners:
                    owners.append(owner)
    progress(diffs.checked, final=True)
    if members is not None:
        members.completed()  # every member compared: the others are verified
    outputs = _outputs(diffs, key_cols)
    if diffs.mismatches:
        message = _message(table, where, diffs, key_cols)
        if owners and column.lower() not in (c.name.lower() for c in key_cols):
            # rows keyed otherwise than by member (orders of a customer): name the members too
            shown = ", ".join(_shown(o) for o in owners[: diffs.max_report])
            more = (
                f" and {len(owners) - diffs.max_report:,} more"
                if len(owners) > diffs.max_report
                else ""
            )
            message += f"; member(s) marked failed ({column}): {shown}{more}"
        raise ActionFailed(message, outputs=outputs, retryable=False)
    return outputs


def _add_problems(
    diffs: Diffs, sides: Sequence[tuple[list[tuple[tuple[Any, ...], str, int]], int]]
) -> None:
    """Duplicated and NULL keys (``keycheck``): differences listed first, every row checked."""
    listed: list[tuple[tuple[Any, ...], str]] = []
    for problems, nulls in sides:
        diffs.checked += nulls  # never selected by a key range or a join on the key
        for key, reason, rows in problems:
            diffs.counts["different"] += rows
            listed.append((key, "different"))
            diffs.reasons[key] = (
                f"{diffs.reasons[key]}; {reason}" if key in diffs.reasons else reason
            )
            if diffs.every is not None and any(v is not None for v in key):
                diffs.every.append((key, "different"))
    if listed:
        diffs.first = (listed + [f for f in diffs.first if f not in listed])[: diffs.max_report]


PG_KEYS = (INT, TEXT, NUMERIC, DATE, TIMESTAMP, TIMESTAMPTZ, BOOL)  # ordered alike by Python


def _across(pair: tuple[Any, ...], diffs: Diffs, watch: Watch, report: Any) -> Progress:
    """Any pair but SQLite and SQLite: hashed key ranges (or, for keys the two databases may
    order differently, both sides streamed and merged); the progress line's counter."""
    src, table, src_where, cols, key_cols, dst, target_table, dst_where, tcols = pair
    tkeys = _keys_of(tcols, cols, key_cols)
    ctypes = [ctype_of(a, src.kind, b, dst.kind) for a, b in zip(cols, tcols, strict=True)]
    for conn in (src, dst):
        _prepare(conn)
    try:
        if not _rangeable(src, key_cols, dst, tkeys):
            progress = Progress(report, "verified", count_rows(src, table, src_where, "source"))
            a = StreamSide(src, table, src_where, cols, key_cols, "source", ctypes)
            b = StreamSide(dst, target_table, dst_where, tcols, tkeys, "target", ctypes)
            merge(a, b, diffs, watch, progress)
            return progress
        mode = "hash" if src.kind == dst.kind == "postgresql" else "text"
        found = Found(keep_all=diffs.every is not None, limit=diffs.max_report)
        Compare(
            Side(src, table, src_where, list(cols), list(key_cols), ctypes, "source", mode),
            Side(dst, target_table, dst_where, list(tcols), tkeys, ctypes, "target", mode),
            found,
            lambda: watch.check(f"after checking {found.checked:,} rows", {}),
        ).run()
    finally:
        for conn in (src, dst):
            conn.rollback()
    found.trim()
    diffs.counts, diffs.checked, diffs.reasons = found.counts, found.checked, found.reasons
    diffs.first = found.keys[: diffs.max_report]
    if diffs.every is not None:
        diffs.every = list(found.keys)
    return Progress(report, "verified", found.checked - found.counts["extra"])


def _prepare(conn: Connection) -> None:
    """One snapshot for every query of the comparison, values printed alike."""
    if conn.kind == "sqlite":
        conn.raw.create_function("rb_canon", 2, sqlite_function, deterministic=True)
        conn.raw.execute("BEGIN")
        return
    for setting in (  # one statement per call: a read-only connection prepares each
        "SET jit = off",
        "SET DateStyle = 'ISO, YMD'",
        "SET IntervalStyle = 'postgres'",
        "SET extra_float_digits = 1",
    ):
        conn.raw.execute(setting)
    conn.raw.commit()
    conn.raw.isolation_level = psycopg_module().IsolationLevel.REPEATABLE_READ


def _rangeable(
    src: Connection, skeys: Sequence[Column], dst: Connection, dkeys: Sequence[Column]
) -> bool:
    """Keys both databases order as Python does: integers, or text in byte order; across
    PostgreSQL also numbers, dates, timestamps, booleans and uuids of one type."""
    for a, b in zip(skeys, dkeys, strict=True):
        if a.category != b.category:
            return False
        if src.kind == dst.kind == "postgresql":
            if a.category not in PG_KEYS and not (a.decl == b.decl == "uuid"):
                return False
        elif a.category not in (INT, TEXT):
            return False
    return True


def _target_name(src: Connection, dst: Connection, table: str) -> str:
    """The target table as the source's connection names it (a SQLite pair attaches it)."""
    if os.path.realpath(sqlite_path(src.dsn)) == os.path.realpath(sqlite_path(dst.dsn)):
        return table
    return f"{ATTACHED}.{table}"


def _keys_of(
    tcols: Sequence[Column], cols: Sequence[Column], keys: Sequence[Column]
) -> list[Column]:
    return [tcols[list(cols).index(k)] for k in keys]


def _outputs(diffs: Diffs, key_cols: Sequence[Column]) -> dict[str, Any]:
    def key_json(key: tuple[Any, ...]) -> Any:
        return jsonable(key[0]) if len(key) == 1 else [jsonable(k) for k in key]

    def entry(key: tuple[Any, ...], kind: str) -> dict[str, Any]:
        why = diffs.reasons.get(key)
        return {"key": key_json(key), "kind": kind, **({"reason": why} if why else {})}

    return {
        "rows_checked": diffs.checked,
        "mismatches": diffs.mismatches,
        **diffs.counts,
        "first_differences": [entry(k, kind) for k, kind in diffs.first],
    }


def _message(table: str, where: str | None, diffs: Diffs, key_cols: Sequence[Column]) -> str:
    def key_text(key: tuple[Any, ...]) -> str:
        pairs = ", ".join(f"{c.name}={_shown(v)}" for c, v in zip(key_cols, key, strict=True))
        return pairs if len(key) == 1 else f"({pairs})"

    counts = "; ".join(f"{KINDS[k]}: {n:,}" for k, n in diffs.counts.items() if n)
    groups: dict[str, list[str]] = {}
    for key, kind in diffs.first:
        why = diffs.reasons.get(key)
        groups.setdefault(KINDS[kind], []).append(key_text(key) + (f" ({why})" if why else ""))
    first = "; ".join(f"{kind}: {', '.join(keys)}" for kind, keys in groups.items())
    return (
        f"{scope(table, where)}: {diffs.mismatches:,} of {diffs.checked:,} rows differ "
        f"({counts}); first: {first}"
    )


def _shown(value: Any) -> str:
    """A key value for a message: JSON (control characters escaped), bounded."""
    text = json.dumps(jsonable(value), ensure_ascii=False)
    return text if len(text) <= KEY_SHOWN else text[: KEY_SHOWN - 1] + "…"


# -- SQLite and SQLite: compare in SQL ----------------------------------------------------------


def _in_sqlite(
    src: Connection,
    dst: Connection,
    table: str,
    target_table: str,
    where: str | None,
    cols: Sequence[Column],
    key_cols: Sequence[Column],
    tcols: Sequence[Column],
    diffs: Diffs,
) -> None:
    dst_path = os.path.realpath(sqlite_path(dst.dsn))
    if dst_path != os.path.realpath(sqlite_path(src.dsn)):
        with src.engine_statements():  # a read-only connection refuses ATTACH in query text
            src.raw.execute(f"ATTACH DATABASE ? AS {ATTACHED}", (dst_path,))
        target_table = f"{ATTACHED}.{target_table}"
    nk = len(key_cols)
    kidx = [list(cols).index(k) for k in key_cols]
    alias = [f"c{i}" for i in range(len(cols))]

    def side(name: str, columns: Sequence[Column]) -> str:
        body = ", ".join(f"{c.q} AS {a}" for c, a in zip(columns, alias, strict=True))
        keyed = " AND ".join(f"{columns[i].q} IS NOT NULL" for i in kidx)  # NULL: keycheck's
        return f"(SELECT {body} FROM {name} WHERE {where_sql(where)} AND {keyed})"

    s, t = side(table, cols), side(target_table, tcols)
    # BINARY: a column declared NOCASE or RTRIM must not make 'A' and 'a ' equal
    on = " AND ".join(f"t.c{i} = s.c{i} COLLATE BINARY" for i in kidx)
    same = " AND ".join(f"s.{a} IS t.{a} COLLATE BINARY" for a in alias)
    skeys = ", ".join(f"s.c{i}" for i in kidx)
    tkeys = ", ".join(f"t.c{i}" for i in kidx)
    found: list[tuple[tuple[Any, ...], str]] = []
    raw = src.raw
    raw.execute("BEGIN")  # one snapshot of both databases for every query below
    try:
        (n_src,) = raw.execute(f"SELECT count(*) FROM {s}").fetchone()
        cur = raw.execute(
            f"SELECT {skeys}, t.c{kidx[0]} IS NULL FROM {s} AS s LEFT JOIN {t} AS t ON {on} "
            f"WHERE t.c{kidx[0]} IS NULL OR NOT ({same}) ORDER BY {skeys}"
        )
        for row in cur:
            kind = "missing" if row[nk] else "different"
            diffs.counts[kind] += 1
            if len(found) < diffs.max_report * 2:
                found.append((tuple(row[:nk]), kind))
            if diffs.every is not None:
                diffs.every.append((tuple(row[:nk]), kind))
        cur = raw.execute(
            f"SELECT {tkeys} FROM {t} AS t LEFT JOIN {s} AS s ON {on} "
            f"WHERE s.c{kidx[0]} IS NULL ORDER BY {tkeys}"
        )
        for row in cur:
            diffs.counts["extra"] += 1
            if diffs.counts["extra"] <= diffs.max_report:
                found.append((tuple(row), "extra"))
            if diffs.every is not None:
                diffs.every.append((tuple(row), "extra"))
    finally:
        raw.execute("ROLLBACK")
    diffs.checked = int(n_src) + diffs.counts["extra"]
    found.sort(key=lambda item: _sort_key(item[0]))
    diffs.first = found[: diffs.max_report]


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQLite's own order across storage classes: NULL < numbers < text < blobs.
    def rank(v: Any) -> tuple[int, Any]:
        if v is None:
            return (0, 0)
        if isinstance(v, (int, float)):
            return (1, v)
        if isinstance(v, str):
            return (2, v)
        return (3, bytes(v))

    return tuple(rank(v) for v in key)
