"""The backend a command works on, chosen by its state location (``location.py``): the lock a
writer takes, the identity it records, and what the PostgreSQL backend does not hold yet.

- a directory: the ``flock`` of ``lock.py``, the OS user;
- PostgreSQL: the lease of ``pglease.py`` (its ``fence`` set on the store's connection, so
  that every journal write checks the epoch), ``session_user``.

``approve`` and ``resolve`` never take the lease on PostgreSQL (SPEC §11): their records are
serialised with the holder's by the journal's own lock (``pg.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from ..errors import InvalidInput
from ..format.model import Runbook
from . import location
from .lock import Lock
from .store import Store, os_user, state_path

UNSUPPORTED = "not supported on the PostgreSQL state backend yet"


def is_postgres(state: str | os.PathLike[str]) -> bool:
    return location.is_postgres(state)


def identity(state: str | os.PathLike[str]) -> str:
    """The real identity of whoever runs the command: ``session_user`` on PostgreSQL, the OS
    user on a directory."""
    if location.is_postgres(state):
        from . import pg

        return pg.session_user(str(state))
    return os_user()


@contextlib.contextmanager
def writer(
    state: str | os.PathLike[str],
    name: str,
    masker: Any,
    *,
    lease: float = 30.0,
    command: str | None = None,
) -> Iterator[tuple[Store, str | None]]:
    """The runbook's store under its lock (a directory) or lease (PostgreSQL), and the lock's
    notice (a lost holder taken over)."""
    if location.is_postgres(state):
        from .pglease import PgLease

        state_path(".", name)
        with PgLease(str(state), name, lease, command) as held:
            store = Store(state, name, masker)
            fence = held.fence
            store.db.fence = lambda db: fence(db)  # type: ignore[attr-defined]
            store.lease = held
            try:
                yield store, held.notice
            finally:
                store.close()
        return
    with Lock(state_path(state, name), command) as lock:
        store = Store(state, name, masker)
        try:
            yield store, lock.notice
        finally:
            store.close()


def decision_lock(state: str | os.PathLike[str], name: str) -> AbstractContextManager[object]:
    """What ``approve`` and ``resolve`` hold while they write a decision: the directory's
    lock; on PostgreSQL nothing (they never take the lease, SPEC §11)."""
    if location.is_postgres(state):
        return contextlib.nullcontext()
    return Lock(state_path(state, name))


def refuse_unsupported(rb: Runbook, state: str | os.PathLike[str], file: str) -> None:
    """Exit 2, before anything is written, for what the PostgreSQL backend does not hold yet:
    the cohort ledger, the outbox (every `notify` step writes it) and per-member records
    (`foreach`)."""
    if not location.is_postgres(state):
        return
    found: list[str] = []
    if rb.cohorts:
        found.append(f"cohorts ({', '.join(rb.cohorts)})")
    notify = [
        s.id
        for ph in rb.phases
        for s in ph.steps
        if any(c is not None and c.action.startswith("notify") for c in (s.call, s.rollback))
    ] + [c.id for c in rb.contingencies if c.call.action.startswith("notify")]
    if notify:
        found.append(f"notify steps, which write the outbox ({', '.join(notify[:5])})")
    each = [s.id for ph in rb.phases for s in ph.steps if s.foreach is not None]
    if each:
        found.append(f"foreach steps ({', '.join(each[:5])})")
    if found:
        raise InvalidInput(
            f"{file}: {'; '.join(found)}: {UNSUPPORTED} (the ledger, the outbox and member "
            f"records stay in a state directory this release); use --state DIR for "
            f"{rb.name}; nothing was written"
        )
