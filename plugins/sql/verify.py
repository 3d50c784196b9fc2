"""``sql.verify``: the rows of ``table`` matching ``where`` are the same on both sides.

Rows are matched by key.  A key only on the source is *missing* on the target, one only on the
target is *extra*, one on both with any column unequal is *different*.  The step fails naming
the first ``max_report`` of them, in key order.

- SQLite and SQLite: the source ``ATTACH``es the target and SQLite compares every column
  itself (``IS``, so NULL and '' differ) with two joins on the key.  ``where`` is evaluated
  against the source (SPEC §9): on the source's connection, a table a subquery names is the
  source's, for the target's rows too, so both sides are filtered by the same predicate.
- Failure messages name keys as JSON (``id=5``, ``email="a@b"``), never through ``repr``.
- Any other pair: both sides are streamed ordered by key (PostgreSQL through a server-side
  cursor, text keys in ``COLLATE "C"`` order, which is Python's and SQLite's) and merge-joined
  in constant memory.  Rows equal as the drivers give them are equal; otherwise both rows are
  normalised per column type (integers as decimals, numerics without trailing zeros,
  timestamps as ISO 8601 UTC, NULL apart from '') and compared.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runbook_engine.actions import ActionContext
from runbook_engine.errors import ActionFailed

from .common import (
    TEXT,
    Column,
    Progress,
    Watch,
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
    scrub,
    sqlite_path,
)
from .normalize import normaliser
from .owners import owners_of

DEFAULT_MAX_REPORT = 10
FETCH = 10_000
AHEAD = 2  # chunks read ahead per side
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
        n_src = count_rows(src, table, src_where, "source")
        if not src.kind == dst.kind == "sqlite":  # a SQLite pair filters both on the source
            count_rows(dst, target_table, dst_where, "target")
        progress = Progress(ctx.progress, "verified", n_src)
        try:
            if src.kind == dst.kind == "sqlite":
                _in_sqlite(src, dst, table, target_table, src_where, cols, key_cols, tcols, diffs)
            else:
                sides = [
                    _Side(src, table, src_where, cols, key_cols, "source"),
                    _Side(
                        dst,
                        target_table,
                        dst_where,
                        tcols,
                        _keys_of(tcols, cols, key_cols),
                        "target",
                    ),
                ]
                _merge(sides[0], sides[1], diffs, watch, progress)
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

    return {
        "rows_checked": diffs.checked,
        "mismatches": diffs.mismatches,
        **diffs.counts,
        "first_differences": [{"key": key_json(k), "kind": kind} for k, kind in diffs.first],
    }


def _message(table: str, where: str | None, diffs: Diffs, key_cols: Sequence[Column]) -> str:
    def key_text(key: tuple[Any, ...]) -> str:
        pairs = ", ".join(f"{c.name}={_shown(v)}" for c, v in zip(key_cols, key, strict=True))
        return pairs if len(key) == 1 else f"({pairs})"

    counts = "; ".join(f"{KINDS[k]}: {n:,}" for k, n in diffs.counts.items() if n)
    groups: dict[str, list[str]] = {}
    for key, kind in diffs.first:
        groups.setdefault(KINDS[kind], []).append(key_text(key))
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
        return f"(SELECT {body} FROM {name} WHERE {where_sql(where)})"

    s, t = side(table, cols), side(target_table, tcols)
    on = " AND ".join(f"t.c{i} = s.c{i}" for i in kidx)
    same = " AND ".join(f"s.{a} IS t.{a}" for a in alias)
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


# -- any other pair: stream both sides ordered by key and merge ---------------------------------


@dataclass
class _Failed:
    exc: BaseException


class _Side:
    """One side's rows, keys first, ordered by key, fetched in bounded chunks."""

    def __init__(
        self,
        conn: Connection,
        table: str,
        where: str | None,
        cols: Sequence[Column],
        key_cols: Sequence[Column],
        name: str,
        *,
        as_text: bool = False,
    ) -> None:
        self.conn, self.name = conn, name
        self.nk = len(key_cols)
        rest = [c for c in cols if c not in key_cols]
        self.cols = [*key_cols, *rest]
        self.norms = [normaliser(c.category) for c in self.cols]
        pg = conn.kind == "postgresql"
        order = ", ".join(
            f'{c.q} COLLATE "C"' if pg and c.category == TEXT else c.q for c in key_cols
        )
        # PostgreSQL on both sides: values as text (cheaper to read than parsed numerics and
        # timestamps); equal text is an equal value, unequal text is normalised and compared.
        names = ", ".join(
            [c.q for c in key_cols] + [f"{c.q}::text" if as_text else c.q for c in rest]
        )
        self.sql = f"SELECT {names} FROM {table} WHERE {where_sql(where)} ORDER BY {order}"

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """The rows, read ahead by a thread of their own so both sides' databases work at
        once; at most ``AHEAD`` chunks wait in memory."""
        chunks: queue.Queue[Any] = queue.Queue(maxsize=AHEAD)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    chunks.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                if self.conn.kind == "postgresql":
                    cur = self.conn.raw.cursor(name=f"rb_verify_{self.name}")
                    cur.itersize = FETCH
                    cur.execute(self.sql)
                else:
                    cur = self.conn.raw.execute(self.sql)
                try:
                    while chunk := cur.fetchmany(FETCH):
                        if not put(chunk):
                            return
                finally:
                    cur.close()
                put(None)
            except BaseException as exc:  # noqa: BLE001  (handed to the merging thread)
                put(_Failed(exc))

        reader = threading.Thread(target=produce, name=f"sql-verify-{self.name}", daemon=True)
        reader.start()
        try:
            while True:
                item = chunks.get()
                if item is None:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield from item
        finally:
            stop.set()
            reader.join()


def _same(src: _Side, dst: _Side, a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Rows unequal as read: equal when every unequal column is equal once normalised."""
    for x, y, fx, fy in zip(a, b, src.norms, dst.norms, strict=True):
        if x != y and fx(x) != fy(y):
            return False
    return True


def _ordered(side: _Side) -> Iterator[tuple[Any, ...]]:
    """The side's rows, failing if a key does not follow the one before it."""
    last: tuple[Any, ...] | None = None
    nk = side.nk
    for row in side.rows():
        key = row[:nk]
        try:
            bad = last is not None and key <= last
        except TypeError:
            bad = True
        if bad:
            raise ActionFailed(
                f"{side.name} rows do not come in key order at key {key!r} (after {last!r}): "
                "the key must be unique and of one type",
                retryable=False,
            )
        last = key
        yield row


def _merge(src: _Side, dst: _Side, diffs: Diffs, watch: Watch, progress: Progress) -> None:
    nk = src.nk
    a_rows, b_rows = _ordered(src), _ordered(dst)
    a, b = next(a_rows, None), next(b_rows, None)
    while a is not None or b is not None:
        if diffs.checked % FETCH == 0:
            watch.check(f"after checking {diffs.checked:,} rows", {})
            progress(diffs.checked)
        diffs.checked += 1
        if b is None:
            assert a is not None
            diffs.add(a[:nk], "missing")
            a = next(a_rows, None)
            continue
        if a is None:
            diffs.add(b[:nk], "extra")
            b = next(b_rows, None)
            continue
        ka, kb = a[:nk], b[:nk]
        try:
            if ka < kb:
                diffs.add(ka, "missing")
                a = next(a_rows, None)
            elif kb < ka:
                diffs.add(kb, "extra")
                b = next(b_rows, None)
            else:
                if a != b and not _same(src, dst, a, b):
                    diffs.add(ka, "different")
                a, b = next(a_rows, None), next(b_rows, None)
        except TypeError:
            raise ActionFailed(
                f"keys of different types cannot be matched: source {ka!r}, target {kb!r}",
                retryable=False,
            ) from None
