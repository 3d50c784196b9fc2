"""The outbox: one row per message of a ``notify`` step, in the state database (SPEC §10-§11).

Table ``outbox`` (schema version 3). A row's key is (run, step instance, wave attempt or
contingency firing, recipient): ``UNIQUE``, so that a message is queued once by constraint
(``ON CONFLICT DO NOTHING``), whatever a crash and a resume do. ``channel: outbox`` rows are
``queued`` in batches, one transaction each, and delivered later by the relay
(``delivery.py``): ``queued`` -> ``sending`` -> ``sent``, or ``uncertain`` (the relay stopped
mid-send), or ``failed`` (the server refused it), with the reason. The ``email`` and
``webhook`` channels send at once and keep their per-recipient record here too: ``sending``
before the send, ``sent`` or ``failed`` after it; a row found ``sending`` by a later run was cut
by a crash and becomes ``uncertain``.

A message to a cohort member is recorded in the ledger (``message``, pointing at its outbox
row) in the same transaction that tells it: queued (outbox) or sent (email, webhook), fenced
like every write of the lease holder; the ledger's ``message_once`` index keeps one record per
(member, step, wave attempt). The row's ``entity`` is the member's key as the ledger keeps it
(JSONB on PostgreSQL: 1 and '1' are two members), so the two join.

``StepOutbox`` is ``ActionContext.outbox``: the rows of one step, written by the step's own
thread under the state's lock. The SQL is portable (``?`` parameters, ``ON CONFLICT``); on
PostgreSQL (``pg.py``, schema version 4) one table ``runbook.outbox`` holds the messages of
every runbook, keyed by the runbook's name first (``scope``); what else differs is in
``dialect.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..actions import OutboxRow
from ..errors import ActionFailed, StateError
from . import dialect
from .db import Database

STATES = ("queued", "sending", "sent", "uncertain", "failed")
CHANNELS = ("outbox", "email", "webhook")

# Fault injection for the crash tests (never set in use): RUNBOOK_FAULT=outbox:N kills this
# process with SIGKILL inside the Nth outbox write, after its statements ran and before
# COMMIT; outbox-committed:N right after that COMMIT.
_FAULT = os.environ.get("RUNBOOK_FAULT", "")
_writes = 0


def _fault(point: str) -> None:
    kind, _, n = _FAULT.partition(":")
    if kind == point and n.isdigit() and _writes == int(n):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_ROW = (
    "recipient, channel, message_id, sender, address, name, locale, subject, body, headers, entity"
)
# a message sent again (a failed or uncertain one, on request) takes its new state and text
_REPLACE = (
    "DO UPDATE SET state = excluded.state, reason = NULL, subject = excluded.subject,"
    " body = excluded.body, updated_at = excluded.updated_at, claimed_by = NULL"
)
_KEY = "run = ? AND step = ? AND attempt = ?"


def _told(table: str, mine: str) -> str:
    """The ledger's record of the members told by rows of (run, step, attempt) of the outbox
    ``table``: one row per (member, step, wave attempt, state), pointing at the outbox row."""
    return (
        "INSERT INTO message (cohort, key, step, attempt, channel, message_id, state, at, outbox)"
        f" SELECT cohort, entity, step, ?, channel, message_id, 'sent', ?, id FROM {table}"
        f" WHERE {mine}{_KEY} AND entity IS NOT NULL AND cohort IS NOT NULL"
    )


def has_outbox(db: Database) -> bool:
    return dialect.has_table(db, "outbox")


def scope(db: Database) -> tuple[str, str, tuple[str, ...]]:
    """The outbox's table, the condition that keeps one runbook's rows (empty, or ending in
    ``AND``) and its parameters: on PostgreSQL one table holds every runbook's messages,
    keyed by the runbook's name first (``pg.py``)."""
    name = getattr(db, "runbook", None)
    if db.dialect == dialect.PG and isinstance(name, str):
        return "runbook.outbox", "runbook = ? AND ", (name,)
    return "outbox", "", ()


def db_errors(db: Database) -> tuple[type[BaseException], ...]:
    """The driver's errors: a write of the outbox that failed fails the step, never the run."""
    return dialect.errors(db)


def row_of(values: Sequence[Any]) -> OutboxRow:
    """An ``OutboxRow`` from the columns of ``_ROW``, in that order."""
    return OutboxRow(*values)


class StepOutbox:
    """The messages of one step in the outbox table: ``ActionContext.outbox``."""

    def __init__(
        self,
        db: Database,
        run: str,
        step: str,
        attempt: str,
        *,
        cohort: str | None = None,
        ledger_attempt: int | None = None,
        failed: Callable[[BaseException], str] | None = None,
    ) -> None:
        self.db = db
        self.run, self.step, self.attempt = run, step, attempt
        self.key = (run, step, attempt)
        table, mine, args = scope(db)
        self._table = table
        self._where = mine + _KEY  # this runbook's rows of (run, step, attempt)
        self._args = (*args, *self.key)
        cols = "runbook, " if args else ""
        marks = ", ".join("?" * (len(self._args) + 15))
        self._insert = (
            f"INSERT INTO {table} ({cols}run, step, attempt, cohort, state, queued_at,"
            f" updated_at, {_ROW}) VALUES ({marks}) ON CONFLICT ({cols}run, step, attempt,"
            " recipient) "
        )
        self.cohort = cohort  # members' messages are recorded in this cohort's ledger
        self.ledger_attempt = ledger_attempt
        self._failed = failed
        self._told = _told(table, mine)

    @contextlib.contextmanager
    def _refused(self) -> Iterator[None]:
        """A role the database refuses (``pg.denied``): the step fails saying which grant is
        missing, never as an internal error."""
        try:
            yield
        except StateError as exc:
            raise ActionFailed(f"notify: {exc}", retryable=False) from None

    def states(self) -> dict[str, str]:
        with self._refused():
            return dict(
                self.db.query(
                    f"SELECT recipient, state FROM {self._table} WHERE {self._where}", self._args
                )
            )

    def rows(self) -> list[tuple[OutboxRow, str, str, str | None]]:
        with self._refused():
            got = self.db.query(
                f"SELECT {_ROW}, state, queued_at, reason FROM {self._table}"
                f" WHERE {self._where} ORDER BY id",
                self._args,
            )
        return [(row_of(r[:11]), r[11], r[12], r[13]) for r in got]

    def counts(self) -> dict[str, int]:
        with self._refused():
            got = self.db.query(
                f"SELECT state, count(*) FROM {self._table} WHERE {self._where} GROUP BY state",
                self._args,
            )
        return {s: int(n) for s, n in got}

    def write(
        self,
        add: Sequence[OutboxRow] = (),
        *,
        state: str = "queued",
        at: str,
        replace: bool = False,
        changes: Mapping[str, tuple[str, str | None]] | None = None,
    ) -> int:
        global _writes
        db = self.db
        added = 0
        tell = self.cohort is not None  # the ledger's record of the members told
        try:
            with self._refused(), db.transaction():
                before = 0
                if add and tell and state == "queued":
                    # the rows added below come after it (the outbox's ids only grow)
                    before = int(db.query(f"SELECT coalesce(max(id), 0) FROM {self._table}")[0][0])
                if add:
                    head = (*self._args, self.cohort, state, at, at)
                    cur = db.executemany(  # a row is a tuple in the order of _ROW
                        self._insert + (_REPLACE if replace else "DO NOTHING"),
                        dialect.with_key(db, [(*head, *r) for r in add]),
                    )
                    added = max(0, cur.rowcount)
                if changes:
                    db.executemany(
                        f"UPDATE {self._table} SET state = ?, reason = ?, updated_at = ?"
                        f" WHERE {self._where} AND recipient = ?",
                        [(s, why, at, *self._args, who) for who, (s, why) in changes.items()],
                    )
                if tell:
                    self._tell(add, state, changes, before, at)
                if _FAULT:
                    _writes += 1
                    _fault("outbox")
        except db_errors(db) as exc:
            message = self._failed(exc) if self._failed else f"{db.path}: {exc}"
            raise ActionFailed(message, retryable=False) from None
        if _FAULT:
            _fault("outbox-committed")
        return added

    def _tell(
        self,
        add: Sequence[OutboxRow],
        state: str,
        changes: Mapping[str, tuple[str, str | None]] | None,
        before: int,
        at: str,
    ) -> None:
        """The ledger's record of the members told by this write: queued now, or sent."""
        told = self.ledger_attempt
        if add and state == "queued":
            self.db.execute(
                self._told + " AND id > ? ON CONFLICT DO NOTHING", (told, at, *self._args, before)
            )
        sent = [who for who, (s, _) in (changes or {}).items() if s == "sent"]
        if add and state == "sent":
            sent += [r.recipient for r in add]
        if sent:
            self.db.executemany(
                self._told + " AND recipient = ? ON CONFLICT DO NOTHING",
                [(told, at, *self._args, who) for who in sent],
            )
