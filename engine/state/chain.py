"""The audit chain of a state's journal, recomputed (``runbook audit``, SPEC §8).

Each record's hash is ``journal.link(previous hash, seq, stored text)``; the first record of
the chain links to ``journal.GENESIS``. Records written before the chain existed (schema < 4)
have no hash and come first: the chain starts after them, and they are reported as not
covered (SPEC §11: exit 0). Where the chain starts is kept in the database's ``meta``
(``chain_from``: 1 for a database created with the chain, the next sequence number at the
migration to schema 4), so that a record after that point whose hash was removed is a break
(``unchained``), never "written before the chain existed". The first record that breaks the
chain is named by its sequence number, with what is wrong:

- ``missing``: a sequence number is absent (a deleted record; the chain goes from N to M);
- ``hash``: a record's hash is not the hash of its text over its predecessor's (a changed
  record, a record moved to another place, or one whose predecessor was changed);
- ``unchained``: a record without a hash at or after where the chain started (its hash was
  removed);
- ``columns``: the `at`/`kind` columns disagree with the record's own fields.

What a chain alone cannot show is a cut tail (the last records deleted) or a whole tail
rewritten with fresh hashes: that is what the head hash printed by ``audit`` is for, kept
elsewhere and given back with ``--head``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .db import Database
from .journal import GENESIS, link, select_all


@dataclass
class Broken:
    seq: int
    reason: str  # missing | hash | unchained | columns
    detail: str


@dataclass
class Audit:
    records: int = 0
    first: int | None = None  # the first sequence number
    last: int | None = None  # the head's sequence number
    unchained: int = 0  # records before the chain (written before it existed)
    chain_from: int | None = None  # the first chained record
    head: str | None = None  # the last good hash
    broken: Broken | None = None
    seen: set[str] = field(default_factory=set)  # hashes met, for --head (only when asked)

    @property
    def holds(self) -> bool:
        return self.broken is None


def has_chain(db: Database) -> bool:
    if db.dialect == "postgresql":
        return True  # the chain existed before the PostgreSQL backend
    return any(row[1] == "hash" for row in db.query("PRAGMA table_info(journal)"))


def chain_start(db: Database) -> int | None:
    """Where the chain starts by the database's own account (``meta.chain_from``), or None
    for a database that does not say (the first hashed record is then taken as the start).
    On PostgreSQL the chain starts at 1: every runbook's journal there is chained from its
    creation."""
    if db.dialect == "postgresql":
        return 1
    rows = db.query("SELECT value FROM meta WHERE key = 'chain_from'")
    try:
        return int(rows[0][0]) if rows else None
    except (TypeError, ValueError):
        return 1  # damaged: the strictest reading, every record is expected to be chained


def _columns_agree(at: str, kind: str, text: str) -> bool:
    try:
        rec: Any = json.loads(text)
    except (TypeError, ValueError, RecursionError):  # RecursionError: nested past bounds
        return True  # not a JSON record: the hash decides (a changed text breaks it)
    if not isinstance(rec, dict):
        return True
    return at == str(rec.get("at", "")) and kind == str(rec.get("t", ""))


def audit(db: Database, keep_hashes: bool = False) -> Audit:
    """Walk the journal in sequence order; stop checking at the first break (the records
    after it are still counted)."""
    out = Audit()
    chained = has_chain(db)
    start = chain_start(db) if chained else None
    sql, scope = select_all(db, chained)
    prev: str | None = None  # None: the chain has not started
    expected = 1
    cursor = db.execute(sql, scope)
    while True:
        rows = cursor.fetchmany(2000)
        if not rows:
            break
        for seq, at, kind, text, stored in rows:
            seq = int(seq)
            out.records += 1
            if out.broken is not None:
                continue
            if out.first is None:
                out.first = seq
            if seq != expected:
                gone = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
                out.broken = Broken(
                    expected,
                    "missing",
                    f"record {gone} is missing: the journal goes from {expected - 1} to {seq}",
                )
                continue
            expected = seq + 1
            if not _columns_agree(str(at), str(kind), str(text)):
                out.broken = Broken(
                    seq, "columns", f"record {seq}: its at/kind columns disagree with its content"
                )
                continue
            if stored is None:
                if prev is not None or (start is not None and seq >= start):
                    began = out.chain_from if prev is not None else start
                    out.broken = Broken(
                        seq,
                        "unchained",
                        f"record {seq} has no hash, but the chain started at {began}",
                    )
                    continue
                out.unchained += 1
                out.last = seq
                continue
            if prev is None:
                prev = GENESIS
                out.chain_from = seq
            want = link(prev, seq, str(text))
            if want != stored:
                out.broken = Broken(
                    seq,
                    "hash",
                    f"record {seq} does not match its hash: it was changed, moved, or the "
                    "record before it was",
                )
                continue
            prev = want
            out.head = want
            out.last = seq
            if keep_hashes:
                out.seen.add(want)
    return out
