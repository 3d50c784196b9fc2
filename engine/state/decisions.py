"""A person's decision written beside a running ``apply``, never under its lock (SPEC §11:
"``approve`` and ``resolve`` never wait for or take the run's lease: they write decision records
that the running ``apply`` reads").

``decide`` folds the state, then, inside one write transaction (SQLite's ``BEGIN IMMEDIATE``
serialises it with the apply's own commits), folds what was appended since, asks ``check`` for
the records to append (``check`` refuses with ``InvalidInput``: the transaction is rolled back
and nothing is written), and appends them to the same audit chain with ``effect`` (ledger
rows) in the same transaction. What is checked is what is on disk at the instant of the write:
two approvals by one identity at once cannot both pass. A state of an earlier schema is never
migrated here: the decision is refused (exit 2) and nothing is written.

On PostgreSQL the same: the transaction first takes the runbook's appenders' lock
(``Database.before_append``, the lock the holder's fenced writes take with their epoch check,
``pg.py``), then reads what was committed since, checks and appends; it never takes the lease.
A holder stalled inside a write (stopped before its COMMIT) keeps that lock: each try waits at
most ``LOCK_WAIT`` (``SET LOCAL lock_timeout``), a notice says so, and after ``TRIES`` tries the
decision is refused with exit 4 naming the holder the lease row names; nothing is written.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidInput
from ..masking import Masker
from . import db as dbm
from . import journal, legacy, location
from .status import State
from .store import fold, now, state_path

Check = Callable[[State], tuple[Sequence[dict[str, Any]], Callable[[dbm.Database], None] | None]]
Notice = Callable[[str], None]

LOCK_WAIT = 5  # seconds one try waits for the appenders' lock on PostgreSQL
TRIES = 3  # tries before exit 4


def _refuse_older_schema(state_dir: str | os.PathLike[str], name: str, check: Check) -> None:
    """A decision never migrates a state of an earlier schema (nor does a refused one write
    anything): on such a state the decision is checked on a read-only fold (its refusal said
    as usual), and an accepted one is refused too, asking for one ``apply`` first."""
    from .store import opening_writes, read_state

    if not opening_writes(state_dir, name):
        return
    got = read_state(state_dir, name)
    if got is not None:
        check(got[0])  # refused here (exit 2) with its own reason, nothing written
    raise InvalidInput(
        f"the state of {name} was written by an earlier version of runbook: run `runbook "
        "apply` once with this version first (it migrates the state; approve and resolve "
        "never do); nothing was recorded"
    )


def decide(
    state_dir: str | os.PathLike[str],
    name: str,
    masker: Masker,
    check: Check,
    notice: Notice | None = None,
) -> list[dict[str, Any]]:
    """Append the records ``check(state)`` returns (masked, stamped), with their effect, in one
    transaction checked against the state as it is at that instant; returns them as written.
    ``notice`` hears of a wait for a holder stalled inside a write (PostgreSQL)."""
    if location.is_postgres(state_dir):
        from . import pg

        state_path(".", name)  # a name the schema refuses is exit 2, as on a directory
        pgdb = pg.open_db(str(state_dir), name, write=False)
        if pgdb is None:
            raise InvalidInput(
                f"no state of {name} in {location.shown(str(state_dir))}: nothing to decide on"
            )
        try:
            return _decide_pg(pgdb, name, masker, check, notice)
        finally:
            pgdb.close()
    base = state_path(state_dir, name)
    path = base / dbm.FILE
    if not path.exists():
        if (base / legacy.FILE).exists():
            raise InvalidInput(
                f"{base / legacy.FILE} is a state of an earlier version: `runbook apply` "
                "imports it (a decision is recorded once it is); nothing was recorded"
            )
        raise InvalidInput(f"no state at {base}: nothing to decide on")
    _refuse_older_schema(state_dir, name, check)
    from .lease import guard

    with guard(base):  # opened as every opener does: never beside a migration (not the lease)
        db = dbm.open_existing(path, name)
        try:
            dbm.setup(db)
        except BaseException:
            db.close()
            raise
    try:
        try:
            return _decide(db, name, masker, check, path)
        except sqlite3.DatabaseError as exc:
            raise dbm.damaged(path, exc) from None
    finally:
        db.close()


def _decide_pg(
    db: Any, name: str, masker: Masker, check: Check, notice: Notice | None
) -> list[dict[str, Any]]:
    """``_decide`` on PostgreSQL, each try bounded by ``LOCK_WAIT``; exit 4 after ``TRIES``."""
    from . import pg, pglease

    psycopg = pg._psycopg()
    for attempt in range(1, TRIES + 1):
        try:
            return _decide(db, name, masker, check, db.path, lock_wait=LOCK_WAIT)
        except psycopg.errors.LockNotAvailable:
            who = pglease.writer(db.pcon, name)
            if attempt == TRIES:
                raise pglease.busy_error(
                    name, who, f"waited {LOCK_WAIT * TRIES}s; nothing was recorded"
                ) from None
            if notice is not None:
                notice(
                    f"the state of {name} is busy: {who} is inside a write; waited "
                    f"{LOCK_WAIT * attempt}s, waiting again (try {attempt + 1} of {TRIES})"
                )
    raise AssertionError("unreachable")


def _decide(
    db: dbm.Database,
    name: str,
    masker: Masker,
    check: Check,
    path: object,
    lock_wait: int | None = None,
) -> list[dict[str, Any]]:
    records = journal.read(db)
    state = fold(name, records, path)
    seen = records[-1][0] if records else 0
    with db.transaction(fenced=False):
        if lock_wait is not None:  # PostgreSQL: a bounded wait for the appenders' lock
            db.execute(f"SET LOCAL lock_timeout = '{int(lock_wait)}s'")
        # serialised with every other appender first (SQLite: BEGIN IMMEDIATE already;
        # PostgreSQL: the appenders' lock), then what was committed since (an apply goes on
        # beside this command) is folded in
        db.before_append()
        state = fold(name, journal.read(db, after=seen), path, state)
        wanted, effect = check(state)
        clean: list[dict[str, Any]] = []
        for rec in wanted:
            c: dict[str, Any] = masker.mask_record(rec)
            c.setdefault("at", now())
            state.apply(c)  # refused here (ValueError) if the fold would refuse it
            clean.append(c)
        if effect is not None:
            effect(db)
        journal.append(db, clean)
    return clean
