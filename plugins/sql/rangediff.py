"""``sql.verify`` across engines and PostgreSQL ↔ PostgreSQL: hashed key ranges, bisected.

Each database normalises and hashes its own rows (``canon``: canonical values per column pair)
and answers, per key range, a row count and a digest; only ranges whose answers differ are
split again (``SPLIT`` ways) until a range is small (``LEAF`` rows), whose rows are then read
from both sides in key order and merged to name the differing keys. A range holding no row on
one side needs no values: its keys on the other side are missing (or extra) as they are.

- PostgreSQL ↔ PostgreSQL (``hash``): a row's digest is a mix of its values' own 64-bit hashes
  (``canon.pg_hash``); a range's, their ``bit_xor`` and ``count(*)``. An integer key is cut
  into ``TOP`` equal ranges in one ``GROUP BY`` (one scan per side); other keys by quantiles.
- SQLite ↔ PostgreSQL (``text``): SQLite has no hash function in SQL, so each side
  concatenates its canonical texts per column in key order (SQLite ``group_concat``,
  PostgreSQL ``string_agg``) and the two are compared by MD5 (``hashlib`` on the SQLite side):
  columns whose texts contain no comma are joined by commas, text columns by nothing next to
  the list of their lengths, so that no two different columns give the same bytes.

Both sides work at once (a thread for the target); text keys compare in byte order (``COLLATE
"C"`` on PostgreSQL, SQLite's ``BINARY``), as Python compares strings.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runbook_engine.errors import ActionFailed

from .canon import BAD, TOKENS, bad_reason, canon, json_same, pg_hash, pg_text, sqlite_text
from .common import INT, JSON, TEXT, Column, where_sql

TOP = 4096  # equal ranges of an integer key, hashed in one GROUP BY (hash mode)
TOP_ROWS = 20000  # rows per range at the top level otherwise
WIDE = 2**62  # integer keys beyond this are bucketed in numeric
SPLIT = 32  # sub-ranges of a differing range
LEAF = {"hash": 4096, "text": 4096}  # rows at or below which a range is read and merged
MARK = "\x00"  # a bound parameter in the SQL built here (no SQL text or identifier holds NUL)
Key = tuple[Any, ...]
Bound = Key | None  # None: unbounded
T = TypeVar("T")


@dataclass
class Side:
    """One side's table, the columns compared (in the source's order) and their ctypes."""

    conn: Any  # db.Connection
    table: str
    where: str | None
    cols: list[Column]
    keys: list[Column]
    ctypes: list[str]
    name: str  # "source" or "target"
    mode: str  # "hash" or "text"

    @property
    def pg(self) -> bool:
        return bool(self.conn.kind == "postgresql")

    def key_sql(self, col: Column) -> str:
        if col.category == TEXT:
            return f'{col.q} COLLATE "C"' if self.pg else f"{col.q} COLLATE BINARY"
        return col.q

    @property
    def order(self) -> str:
        return ", ".join(self.key_sql(k) for k in self.keys)

    def canon_sql(self) -> list[str]:
        if self.pg:
            return [pg_text(c, t) for c, t in zip(self.cols, self.ctypes, strict=True)]
        return [sqlite_text(c.q, t) for c, t in zip(self.cols, self.ctypes, strict=True)]

    def row_hash(self) -> str:
        parts = [
            pg_hash(c, t, i + 1)
            for i, (c, t) in enumerate(zip(self.cols, self.ctypes, strict=True))
        ]
        return f"hashint8extended({' # '.join(parts)}, 0)"

    def where_range(self, lo: Bound, hi: Bound) -> tuple[str, list[Any]]:
        cond, args = [where_sql(self.where)], []
        mark = MARK
        keys = [self.key_sql(k) for k in self.keys]
        lhs = keys[0] if len(keys) == 1 else "(" + ", ".join(keys) + ")"
        rhs = mark if len(keys) == 1 else "(" + ", ".join([mark] * len(keys)) + ")"
        if lo is None or hi is None:  # a NULL key is in no range (keycheck reports it)
            cond += [f"{k.q} IS NOT NULL" for k in self.keys]
        if lo is not None:
            cond.append(f"{lhs} >= {rhs}")
            args += list(lo)
        if hi is not None:
            cond.append(f"{lhs} < {rhs}")
            args += list(hi)
        return " AND ".join(cond), args

    def cursor(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """A cursor over ``sql``, whose parameters are written ``MARK`` (a ``%`` in the
        runbook's ``where`` stays an operator on PostgreSQL)."""
        cur = self.conn.raw.cursor()
        if self.pg:
            cur.execute(sql.replace("%", "%%").replace(MARK, "%s"), list(args))
        else:
            cur.execute(sql.replace(MARK, "?"), list(args))
        return cur

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.cursor(sql, args).fetchall()]


@dataclass
class Found:
    """What the comparison found: counts per kind, and the differing keys."""

    keep_all: bool
    checked: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: {"missing": 0, "extra": 0, "different": 0}
    )
    keys: list[tuple[Key, str]] = field(default_factory=list)  # all, or the first ones
    reasons: dict[Key, str] = field(default_factory=dict)
    limit: int = 10

    def add(self, key: Key, kind: str, reason: str = "") -> None:
        self.counts[kind] += 1
        self.keys.append((key, kind))
        if reason and len(self.reasons) < 1000:
            self.reasons[key] = reason
        if not self.keep_all and len(self.keys) >= 4 * self.limit + 1000:
            self.trim()

    def trim(self) -> None:
        self.keys.sort(key=lambda item: item[0])
        if not self.keep_all:
            del self.keys[self.limit :]


def both(source: Callable[[], T], target: Callable[[], T]) -> tuple[T, T]:
    """Run the two sides' work at once: the target's in a thread."""
    out: list[Any] = [None]
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out[0] = target()
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
            failed.append(exc)

    thread = threading.Thread(target=run, name="sql-verify-target", daemon=True)
    thread.start()
    try:
        a = source()
    finally:
        thread.join()
    if failed:
        raise failed[0]
    return a, out[0]


# -- digests ------------------------------------------------------------------------------------


def _digests(side: Side, ranges: Sequence[tuple[Bound, Bound]]) -> list[tuple[int, Any]]:
    """(rows, digest) of each range."""
    if side.mode == "hash":
        select = f"SELECT count(*), bit_xor({side.row_hash()}) FROM {side.table}"
        out = []
        for lo, hi in ranges:
            cond, args = side.where_range(lo, hi)
            ((n, h),) = side.query(f"{select} WHERE {cond}", args)
            out.append((int(n), h))
        return out
    exprs = side.canon_sql()
    inner = ", ".join(f"{e} AS rb_c{i}_" for i, e in enumerate(exprs))
    aggs = []
    for i, ctype in enumerate(side.ctypes):
        if ctype in TOKENS:
            aggs.append(_concat(side, f"coalesce(rb_c{i}_, 'N')", "','"))
        else:
            aggs.append(_concat(side, f"coalesce(rb_c{i}_, '')", "''"))
            aggs.append(_concat(side, f"coalesce(length(rb_c{i}_), -1)", "','"))
    if _rowid_key(side):  # scanned in key order as it is: no sorted subquery to fill
        inner_of = f"FROM {side.table} NOT INDEXED WHERE {{cond}}"
        aggs = [_inline(a, exprs) for a in aggs]
        select = f"SELECT count(*), {', '.join(aggs)} {inner_of}"
    else:
        select = (
            f"SELECT count(*), {', '.join(aggs)} FROM (SELECT {inner} FROM {side.table} "
            f"WHERE {{cond}} ORDER BY {side.order}) AS s"
        )
    out = []
    for lo, hi in ranges:
        cond, args = side.where_range(lo, hi)
        sql = select.replace("{cond}", cond)
        ((n, *parts),) = side.query(sql, args)
        if not side.pg:
            parts = [None if p is None else hashlib.md5(p).hexdigest() for p in parts]
        out.append((int(n), tuple(parts)))
    return out


def _rowid_key(side: Side) -> bool:
    """A SQLite table keyed by its rowid (``INTEGER PRIMARY KEY``): a key range is read in key
    order by the plain scan."""
    if side.pg or len(side.keys) != 1:
        return False
    key = side.keys[0]
    return key.pk and key.decl.upper() == "INTEGER" and sum(c.pk for c in side.cols) <= 1


def _inline(agg: str, exprs: Sequence[str]) -> str:
    """An aggregate over ``rb_c0_``, ``rb_c1_``… written over the expressions themselves."""
    return re.sub(r"\brb_c(\d+)_", lambda m: f"({exprs[int(m.group(1))]})", agg)


def _concat(side: Side, expr: str, sep: str) -> str:
    if side.pg:
        return f"md5(string_agg(({expr})::text, {sep}))"
    return f"CAST(group_concat({expr}, {sep}) AS BLOB)"


def _int_top(side: Side, lo: int, width: int, n: int) -> dict[int, tuple[int, Any]]:
    """Hash mode, one integer key: the TOP ranges' (rows, digest) in one GROUP BY."""
    k = side.keys[0].q
    if lo > -WIDE and lo + width * n < WIDE:
        bucket = f"least(greatest(({k} - {lo}) / {width}, 0), {n - 1})"
    else:  # keys near bigint's limits: ``k - lo`` would overflow bigint
        bucket = f"least(greatest(div({k}::numeric - {lo}, {width}), 0), {n - 1})"
    sql = (
        f"SELECT {bucket} AS rb_bucket, count(*), bit_xor({side.row_hash()}) FROM {side.table} "
        f"WHERE {where_sql(side.where)} GROUP BY rb_bucket"
    )
    side.conn.raw.execute("SET LOCAL enable_sort = off")  # 4,096 groups: hash them
    return {int(b): (int(c), h) for b, c, h in side.query(sql)}


# -- the comparison -----------------------------------------------------------------------------


class Compare:
    def __init__(self, src: Side, dst: Side, found: Found, check: Callable[[], None]) -> None:
        self.src, self.dst, self.found, self.check = src, dst, found, check
        self.int_key = len(src.keys) == 1 and src.keys[0].category == INT
        self.leaf = LEAF[src.mode]
        self.compared = 0  # ranges compared by the last level

    def run(self) -> None:
        level = self._top()
        while level:
            self.check()
            level = self._level(level)

    def _top(self) -> list[tuple[Bound, Bound, int, int]]:
        """The first ranges, with their row counts on both sides; equal ones counted."""
        if self.int_key:
            (a, b) = both(lambda: self._min_max(self.src), lambda: self._min_max(self.dst))
            found = [m for m in (a, b) if m[0] is not None]
            if not found:
                return []
            lo = min(m[0] for m in found)
            hi = max(m[1] for m in found) + 1
            # ranges by the key's span, but never many more than the rows call for: sparse
            # keys (0 and 2**63-1) would otherwise make millions of empty ranges
            rows = TOP if self.src.mode == "hash" else max(1, (hi - lo) // TOP_ROWS)
            if rows > TOP:
                most = max(both(lambda: _count(self.src), lambda: _count(self.dst)))
                rows = min(rows, 4 * most // TOP_ROWS + 1)
            n = max(1, min(rows, hi - lo))
            width = -(-(hi - lo) // n)
            n = -(-(hi - lo) // width)
            ranges: list[tuple[Bound, Bound]] = [
                ((lo + i * width,), (min(lo + (i + 1) * width, hi),)) for i in range(n)
            ]
            if self.src.mode == "text":  # open ends: ``max + 1`` may not fit a SQLite integer
                ranges[0] = (None, ranges[0][1])
                ranges[-1] = (ranges[-1][0], None)
            if self.src.mode == "hash":
                s, d = both(
                    lambda: _int_top(self.src, lo, width, n),
                    lambda: _int_top(self.dst, lo, width, n),
                )
                empty = (0, None)
                pairs = [(s.get(i, empty), d.get(i, empty)) for i in range(n)]
                return self._differing(ranges, pairs)
            return self._compare(ranges)
        side = self._larger()
        bounds = _quantiles(side, None, None, TOP_ROWS)
        return self._compare(_between(bounds))

    def _min_max(self, side: Side) -> tuple[Any, Any]:
        k = side.keys[0].q
        ((lo, hi),) = side.query(
            f"SELECT min({k}), max({k}) FROM {side.table} WHERE {where_sql(side.where)}"
        )
        if lo is not None and not (isinstance(lo, int) and isinstance(hi, int)):
            raise ActionFailed(
                f"{side.name} key {side.keys[0].name} holds values that are not integers "
                f"({lo!r} .. {hi!r}): the key must be of one type on both sides",
                retryable=False,
            )
        return lo, hi

    def _larger(self) -> Side:
        counts = both(lambda: _count(self.src), lambda: _count(self.dst))
        return self.src if counts[0] >= counts[1] else self.dst

    def _compare(
        self, ranges: Sequence[tuple[Bound, Bound]]
    ) -> list[tuple[Bound, Bound, int, int]]:
        pairs = list(
            zip(
                *both(lambda: _digests(self.src, ranges), lambda: _digests(self.dst, ranges)),
                strict=True,
            )
        )
        return self._differing(ranges, pairs)

    def _differing(
        self,
        ranges: Sequence[tuple[Bound, Bound]],
        pairs: Sequence[tuple[tuple[int, Any], tuple[int, Any]]],
    ) -> list[tuple[Bound, Bound, int, int]]:
        out = []
        self.compared = len(ranges)
        for (lo, hi), ((na, da), (nb, db)) in zip(ranges, pairs, strict=True):
            if na == nb and da == db:
                self.found.checked += na
            else:
                out.append((lo, hi, na, nb))
        return out

    def _level(
        self, differing: list[tuple[Bound, Bound, int, int]]
    ) -> list[tuple[Bound, Bound, int, int]]:
        """Differing ranges: small ones (or one side empty) read; the others split."""
        split: list[tuple[Bound, Bound]] = []
        # most ranges differ: more hashing would not narrow them down, reading them does
        dense = len(differing) >= 8 and 2 * len(differing) >= self.compared
        for lo, hi, na, nb in differing:
            if na == 0 or nb == 0:
                self._one_sided(lo, hi, na, nb)
            elif max(na, nb) <= (16 * self.leaf if dense else self.leaf):
                self._leaf(lo, hi)
            else:
                parts = self._split(lo, hi, na, nb)
                if len(parts) < 2:
                    self._leaf(lo, hi)
                else:
                    split += parts
        return self._compare(split) if split else []

    def _split(self, lo: Bound, hi: Bound, na: int, nb: int) -> list[tuple[Bound, Bound]]:
        if self.int_key and lo is not None and hi is not None:
            a, b = lo[0], hi[0]
            width = max(1, -(-(b - a) // SPLIT))
            return [((x,), (min(x + width, b),)) for x in range(a, b, width)]
        side = self.src if na >= nb else self.dst
        bounds = _quantiles(side, lo, hi, max(1, max(na, nb) // SPLIT))
        return _between(bounds, lo, hi)

    def _one_sided(self, lo: Bound, hi: Bound, na: int, nb: int) -> None:
        side, kind = (self.src, "missing") if nb == 0 else (self.dst, "extra")
        cond, args = side.where_range(lo, hi)
        keys = ", ".join(k.q for k in side.keys)
        cur = side.cursor(
            f"SELECT {keys} FROM {side.table} WHERE {cond} ORDER BY {side.order}", args
        )
        while rows := cur.fetchmany(10_000):
            self.check()
            for row in rows:
                self.found.add(tuple(row), kind)
            self.found.checked += len(rows)

    def _leaf(self, lo: Bound, hi: Bound) -> None:
        a, b = both(lambda: _rows(self.src, lo, hi), lambda: _rows(self.dst, lo, hi))
        nk = len(self.src.keys)
        i = j = 0
        while i < len(a) or j < len(b):
            self.found.checked += 1
            if j >= len(b) or (i < len(a) and _less(a[i][:nk], b[j][:nk], self.src)):
                self.found.add(a[i][:nk], "missing")
                i += 1
            elif i >= len(a) or _less(b[j][:nk], a[i][:nk], self.src):
                self.found.add(b[j][:nk], "extra")
                j += 1
            else:
                reason = self._differs(a[i], b[j])
                if reason is not None:
                    self.found.add(a[i][:nk], "different", reason)
                i += 1
                j += 1

    def _differs(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> str | None:
        """None when the rows are the same; else why they differ ('' when just unequal)."""
        nk = len(self.src.keys)
        if self.src.mode == "hash":
            return None if a[nk] == b[nk] else ""
        m = len(self.src.cols)
        ca, cb = a[nk : nk + m], b[nk : nk + m]
        if ca == cb:
            return None
        # SQLite's SQL passed some values on untouched: its raw values decide (and say why)
        lite, pg = (a, cb) if not self.src.pg else (b, ca)
        raw = lite[nk + m :]
        lite_side = self.src if not self.src.pg else self.dst
        reasons = []
        unequal = False
        for col, ctype, value, other in zip(lite_side.cols, lite_side.ctypes, raw, pg, strict=True):
            mine = canon(value, ctype)
            if mine != other and not (ctype == JSON and json_same(mine, other)):
                unequal = True
                if mine is not None and mine.startswith(BAD):
                    reasons.append(
                        f"{col.name} on the {lite_side.name}: {bad_reason(value, ctype)}"
                    )
        if not unequal:
            return None
        return "; ".join(reasons)


def _less(x: Key, y: Key, side: Side) -> bool:
    try:
        return x < y
    except TypeError:
        raise ActionFailed(
            f"keys of different types cannot be matched: {x!r} and {y!r}", retryable=False
        ) from None


def _count(side: Side) -> int:
    ((n,),) = side.query(f"SELECT count(*) FROM {side.table} WHERE {where_sql(side.where)}")
    return int(n)


def _rows(side: Side, lo: Bound, hi: Bound) -> list[tuple[Any, ...]]:
    """A small range's rows in key order: keys, then the row hash (hash mode) or the canonical
    texts (text mode; SQLite adds its raw values)."""
    keys = [k.q for k in side.keys]
    if side.mode == "hash":
        values = [side.row_hash()]
    else:
        values = side.canon_sql()
        if not side.pg:
            values += [c.q for c in side.cols]
    cond, args = side.where_range(lo, hi)
    named = [f"{v} AS rb_v{i}" for i, v in enumerate(values)]
    sql = f"SELECT {', '.join(keys + named)} FROM {side.table} WHERE {cond} ORDER BY {side.order}"
    return side.query(sql, args)


def _quantiles(side: Side, lo: Bound, hi: Bound, step: int) -> list[Key]:
    """Every ``step``-th key of ``side`` in (lo, hi), in order: the bounds of ranges of about
    ``step`` rows."""
    cond, args = side.where_range(lo, hi)
    keys = ", ".join(k.q for k in side.keys)
    sql = (
        f"SELECT {keys} FROM (SELECT {keys}, row_number() OVER (ORDER BY {side.order}) AS rb_n "
        f"FROM {side.table} WHERE {cond}) AS s WHERE rb_n % {max(1, step)} = 1 AND rb_n > 1 "
        f"ORDER BY rb_n"
    )
    return [tuple(r) for r in side.query(sql, args)]


def _between(bounds: list[Key], lo: Bound = None, hi: Bound = None) -> list[tuple[Bound, Bound]]:
    edges: list[Bound] = [lo, *bounds, hi]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def keys_in_order(found: Found) -> Iterator[tuple[Key, str]]:
    found.keys.sort(key=lambda item: item[0])
    return iter(found.keys)
