"""The backend a command works on, chosen by its state location (``location.py``): the lease
a writer takes, the identity it records, and what the PostgreSQL backend does not hold yet.

- a directory: the lease of ``lease.py`` (a row of ``state.db``, a flocked file per epoch),
  the OS user (``identity.py``);
- PostgreSQL: the lease of ``pglease.py`` (a row of ``runbook.lease``, an advisory lock as
  proof of life), ``session_user``; the outbox as rows of ``runbook.outbox``.

Both leases have one shape (``HeldLease``): ``acquire``, ``fence`` (set on the store with
``Store.fence_with``: it runs first inside every write transaction), ``release``, ``probe``,
``notice``, ``took_over``, ``lost_error``, ``on_lost`` and ``on_renewal`` (a failed renewal
and its recovery, said to the reporter). ``approve`` and ``resolve`` never
take either (SPEC §11): ``decisions.py`` serialises their records with the holder's writes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from ..errors import InvalidInput, LeaseLost
from ..format.model import Call, Runbook
from ..masking import Masker
from . import location
from .db import Database
from .holder import DEFAULT_SECONDS, Holder, Probe
from .store import Store, state_path

UNSUPPORTED = "not supported on the PostgreSQL state backend yet"


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


def _to_cohort(call: Call | None) -> bool:
    """A `notify` call that addresses a cohort's members (`to: {cohort: NAME}`)."""
    if call is None or not call.action.startswith("notify"):
        return False
    to = call.params.get("to")
    return isinstance(to, Mapping) and "cohort" in to


def refuse_unsupported(rb: Runbook, state: str | os.PathLike[str], file: str) -> None:
    """Exit 2, before anything is written, for what the PostgreSQL backend does not hold yet:
    the ledger's record of the messages of `notify` steps to a cohort's members (the outbox,
    the ledger and foreach's member records are held there)."""
    if not location.is_postgres(state):
        return
    told = [
        s.id
        for ph in rb.phases
        for s in ph.steps
        if any(_to_cohort(c) for c in (s.call, s.rollback))
    ] + [c.id for c in rb.contingencies if _to_cohort(c.call)]
    if told:
        raise InvalidInput(
            f"{file}: notify steps to a cohort, whose messages the ledger records "
            f"({', '.join(told[:5])}): {UNSUPPORTED} (they stay in a state directory this "
            f"release); use --state DIR for {rb.name}; nothing was written"
        )
