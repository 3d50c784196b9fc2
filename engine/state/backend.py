"""The backend a command works on, chosen by its state location (``location.py``): the lease
a writer takes, and how anyone reads it.

- a directory: the lease of ``lease.py`` (a row of ``state.db``, a flocked file per epoch),
  the OS user (``identity.py``);
- PostgreSQL: the lease of ``pglease.py`` (a row of ``runbook.lease``, an advisory lock as
  proof of life), ``session_user``; the ledger and the outbox as rows of the schema
  ``runbook`` (``pg.py``).

Both leases have one shape (``HeldLease``): ``acquire``, ``fence`` (set on the store with
``Store.fence_with``: it runs first inside every write transaction), ``release``, ``probe``,
``notice``, ``took_over``, ``lost_error``, ``on_lost`` and ``on_renewal`` (a failed renewal
and its recovery, said to the reporter). ``approve`` and ``resolve`` never
take either (SPEC §11): ``decisions.py`` serialises their records with the holder's writes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Protocol

from ..errors import LeaseLost
from ..masking import Masker
from . import location
from .db import Database
from .holder import DEFAULT_SECONDS, Holder, Probe
from .store import Store, state_path


class HeldLease(Protocol):
    """What a run holds while it writes, on either backend."""

    notice: str | None
    took_over: Holder | None
    lost_error: LeaseLost | None

    def fence(self, db: Database) -> None: ...

    def on_lost(self, callback: Callable[[], None]) -> None: ...

    def on_renewal(self, callback: Callable[[str, str], None]) -> None: ...

    def probe(self) -> Probe: ...

    def release(self, db: Database | None = None) -> None: ...


def is_postgres(state: str | os.PathLike[str]) -> bool:
    return location.is_postgres(state)


@contextlib.contextmanager
def leased(
    state: str | os.PathLike[str],
    name: str,
    masker: Masker,
    seconds: float = DEFAULT_SECONDS,
) -> Iterator[tuple[Store, HeldLease]]:
    """The runbook's store under this process's lease, on a directory (``lease.leased``) or
    on PostgreSQL (``PgLease``): taken or refused with exit 4, renewed by its thread, checked
    inside every write (``Store.fence_with``), released at the end."""
    if not location.is_postgres(state):
        from .lease import leased as leased_dir

        with leased_dir(state, name, masker, seconds) as (store, lease):
            yield store, lease
        return
    from .pglease import PgLease

    state_path(".", name)  # a name the schema refuses never gets a state
    held = PgLease(str(state), name, seconds)
    held.acquire()
    try:
        store = Store(state, name, masker, fence=held.fence)
        try:
            yield store, held
        finally:
            store.close()
    finally:
        held.release()


def probe(state: str | os.PathLike[str], name: str) -> Probe:
    """The lease of runbook ``name``'s state as anyone reads it (``lock``, ``status``): a
    directory's (``holder.probe``) or PostgreSQL's (``pglease.read``)."""
    if location.is_postgres(state):
        from .pglease import read

        return read(str(state), name)
    from .holder import probe as probe_dir

    return probe_dir(state_path(state, name))
