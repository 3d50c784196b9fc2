"""``sql.verify``'s slow path: both sides streamed in key order and merged in Python.

For key pairs whose order the databases cannot be trusted to agree on (a SQLite key of no
declared type, a PostgreSQL ``uuid`` against SQLite text, two PostgreSQL key types that differ):
both sides are read ordered by key (PostgreSQL through a server-side cursor, text keys in
``COLLATE "C"`` order, which is Python's and SQLite's) and merge-joined in constant memory.
Rows equal as the drivers give them are equal; otherwise both rows' values are canonicalised
per column pair (``canon``) and compared.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from runbook_engine.errors import ActionFailed

from .canon import BAD, canon, json_same
from .common import JSON, TEXT, Column, Progress, Watch, where_sql
from .db import Connection, jsonable

FETCH = 10_000
AHEAD = 2  # chunks read ahead per side


@dataclass
class _Failed:
    exc: BaseException


class StreamSide:
    """One side's rows, keys first, ordered by key, fetched in bounded chunks."""

    def __init__(
        self,
        conn: Connection,
        table: str,
        where: str | None,
        cols: Sequence[Column],
        key_cols: Sequence[Column],
        name: str,
        ctypes: Sequence[str],
        *,
        as_text: bool = False,
    ) -> None:
        self.conn, self.name = conn, name
        self.nk = len(key_cols)
        rest = [c for c in cols if c not in key_cols]
        self.cols = [*key_cols, *rest]
        kinds = dict(zip([c.name for c in cols], ctypes, strict=True))
        self.ctypes = [kinds[c.name] for c in self.cols]
        pg = conn.kind == "postgresql"
        order = ", ".join(
            f'{c.q} COLLATE "C"' if pg and c.category == TEXT else c.q for c in key_cols
        )
        # PostgreSQL on both sides: values as text (cheaper to read than parsed numerics and
        # timestamps); equal text is an equal value, unequal text is normalised and compared.
        # a uuid key is matched as its canonical text (its order is that text's order)
        names = ", ".join(
            [f"{c.q}::text" if pg and c.decl == "uuid" else c.q for c in key_cols]
            + [f"{c.q}::text" if as_text else c.q for c in rest]
        )
        keyed = " AND ".join(f"{c.q} IS NOT NULL" for c in key_cols)  # NULL: keycheck's
        self.sql = (
            f"SELECT {names} FROM {table} WHERE {where_sql(where)} AND {keyed} ORDER BY {order}"
        )

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


def _identical(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Equal as read, and of the same Python types (``1 == True`` is not a match)."""
    return a == b and all(type(x) is type(y) for x, y in zip(a, b, strict=True))


def _same(src: StreamSide, a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Rows unequal as read: equal when every unequal column is equal once canonical."""
    for x, y, ctype in zip(a, b, src.ctypes, strict=True):
        if x != y or type(x) is not type(y):
            cx, cy = canon(x, ctype), canon(y, ctype)
            if cx is not None and cx.startswith(BAD):
                return False
            if cx != cy and not (ctype == JSON and json_same(cx, cy)):
                return False
    return True


def _key(key: tuple[Any, ...]) -> str:
    """A key for a message: JSON, never ``repr``."""
    return json.dumps([jsonable(v) for v in key], ensure_ascii=False)[:200]


def _ordered(side: StreamSide) -> Iterator[tuple[Any, ...]]:
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
                f"{side.name} rows do not come in key order at key {_key(key)} "
                f"(after {_key(last or ())}): "
                "the key must be unique and of one type",
                retryable=False,
            )
        last = key
        yield row


def merge(src: StreamSide, dst: StreamSide, diffs: Any, watch: Watch, progress: Progress) -> None:
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
                if not _identical(a, b) and not _same(src, a, b):
                    diffs.add(ka, "different")
                a, b = next(a_rows, None), next(b_rows, None)
        except TypeError:
            raise ActionFailed(
                f"keys of different types cannot be matched: source {_key(ka)}, target {_key(kb)}",
                retryable=False,
            ) from None
