"""The journal: the append-only table of every event (who, what, when, outputs, errors) in
the state database. ``append`` adds records inside the caller's transaction (a group commit is
one transaction: one fsync); ``read`` returns them in commit order.

A record that is not valid JSON, or not a mapping with a kind, is damage: a ``StateError``
naming its sequence number (exit 2), and nothing is written.

The audit chain (SPEC §8, ``chain.py`` checks it): every record carries its sequence number
``seq`` and ``hash = sha256(PREV + "\n" + SEQ + "\n" + TEXT)`` in lowercase hex, where PREV
is the previous record's hash (64 zeros for the first record of the chain), SEQ the decimal
sequence number and TEXT the record's JSON exactly as stored (UTF-8). The stored text is the
canonical form: it is written once by ``encode`` (compact separators, non-ASCII kept, keys in
the order the engine wrote them) and never re-serialised, so a verifier hashes the bytes it
reads; a backend must keep them byte for byte (text, never a JSON type that reorders keys).
The previous hash is read inside the writer's transaction, so a record appended by another
process (``approve``, ``resolve``) links in the same chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ..errors import StateError
from .db import Database


def encode(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)


GENESIS = "0" * 64  # the previous hash of a chain's first record


def link(prev: str, seq: int, text: str) -> str:
    """The chain hash of record ``seq`` whose stored JSON is ``text``."""
    return hashlib.sha256(f"{prev}\n{seq}\n{text}".encode()).hexdigest()


def append(db: Database, records: Sequence[dict[str, Any]]) -> int:
    """Insert ``records`` (already masked and stamped), chained to the last record; the caller
    holds a transaction (one indexed read of the last record per transaction, one sha256 per
    record: the checkpoint's cost does not grow with the journal). Returns the sequence
    number of the first record written (0 when there is none)."""
    if not records:
        return 0
    db.before_append()  # PostgreSQL: appenders serialised (the lease fence took it already)
    table, where, scope = _scope(db)
    last = db.query(f"SELECT seq, hash FROM {table}{where} ORDER BY seq DESC LIMIT 1", scope)
    seq, prev = (int(last[0][0]), last[0][1] or GENESIS) if last else (0, GENESIS)
    first = seq + 1
    rows = [(*scope, *row) for row in chained(seq, prev, records)]
    if scope:  # PostgreSQL: one statement per 5,000 records (under its 65,535 parameters)
        for start in range(0, len(rows), 5000):
            chunk = rows[start : start + 5000]
            values = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in chunk)
            db.execute(
                f"INSERT INTO {table} (runbook, seq, at, kind, rec, hash) VALUES {values}",
                [v for row in chunk for v in row],
            )
        db.appended(first + len(rows) - 1, str(rows[-1][-1]))  # the next append_once's base
        return first
    db.executemany("INSERT INTO journal (seq, at, kind, rec, hash) VALUES (?, ?, ?, ?, ?)", rows)
    return first


def chained(
    seq: int, prev: str, records: Sequence[dict[str, Any]]
) -> list[tuple[int, str, str, str, str]]:
    """(seq, at, kind, stored text, chain hash) of ``records`` appended after record ``seq``
    whose hash is ``prev``: the text encoded once, each hash over the text as stored."""
    rows = []
    for r in records:
        seq += 1
        text = encode(r)
        prev = link(prev, seq, text)
        rows.append((seq, str(r.get("at", "")), str(r.get("t", "")), text, prev))
    return rows


def _scope(db: Database) -> tuple[str, str, tuple[str, ...]]:
    """The journal's table, the filter to one runbook's records, and its parameters: on
    PostgreSQL one table holds the journals of many runbooks."""
    name = getattr(db, "runbook", None)
    if db.dialect == "postgresql" and isinstance(name, str):
        return "runbook.journal", " WHERE runbook = ?", (name,)
    return "journal", "", ()


def texts_of(db: Database, kinds: Sequence[str]) -> list[tuple[int, str]]:
    """(seq, stored text) of every record of ``kinds``, in commit order (no fold)."""
    table, where, scope = _scope(db)
    marks = ", ".join("?" for _ in kinds)
    cond = f"{where} AND" if where else " WHERE"
    return [
        (int(seq), str(t))
        for seq, t in db.query(
            f"SELECT seq, rec FROM {table}{cond} kind IN ({marks}) ORDER BY seq",
            (*scope, *kinds),
        )
    ]


def select_all(db: Database, chained: bool = True) -> tuple[str, tuple[str, ...]]:
    """The statement and its parameters that walk the journal for the audit."""
    table, where, scope = _scope(db)
    cols = "seq, at, kind, rec, hash" if chained else "seq, at, kind, rec, NULL"
    return f"SELECT {cols} FROM {table}{where} ORDER BY seq", scope


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
    table, where, scope = _scope(db)
    cond = f"{where} AND" if where else " WHERE"
    for seq, text in db.query(
        f"SELECT seq, rec FROM {table}{cond} seq > ? ORDER BY seq", (*scope, after)
    ):
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
