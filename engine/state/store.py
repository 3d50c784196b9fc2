"""The state of one runbook: the journal of ``STATE_DIR/NAME/state.db`` folded into a ``State``.

Writers hold the state's lease (``lease.py``), whose check runs inside each of their
transactions (``fence_with``); readers (``status``, ``plan``, ``report``) read
the database as it is (WAL: a reader never blocks the writer and sees whole commits only).
Every record is masked (no secret value reaches the disk) and stamped with the time before it
is written. A state of an earlier version (``journal.jsonl``) is imported into a new database
the first time a command writes to it, in the same step that creates the database.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import StateError, StateWriteError
from ..files import fsync_dir
from ..masking import Masker
from . import db as dbm
from . import journal, legacy, location
from .outbox import StepOutbox
from .status import State

# Fault injection for the crash tests (never set in use): RUNBOOK_FAULT=effects:N kills this
# process with SIGKILL inside the Nth transaction that carries ledger effects, after they ran
# and before COMMIT; effects-committed:N right after that COMMIT.
_FAULT = os.environ.get("RUNBOOK_FAULT", "")
_effects_seen = 0


def _fault(point: str) -> None:
    kind, _, n = _FAULT.partition(":")
    if kind == point and n.isdigit() and _effects_seen == int(n):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _count_effects() -> None:
    global _effects_seen
    _effects_seen += 1


def now() -> str:
    """UTC, ISO 8601 with milliseconds: the time format of the state."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def state_path(state_dir: str | os.PathLike[str], name: str) -> Path:
    """``STATE_DIR/NAME``; a name the schema would refuse never becomes a folder (exit 2)."""
    if not _NAME.fullmatch(name):
        raise StateError(f"invalid runbook name {name!r}: no state folder is made for it")
    return Path(state_dir) / name


def fold(
    name: str,
    records: Iterable[tuple[int, dict[str, Any]]],
    where: object,
    state: State | None = None,
) -> State:
    """The state the records say (folded into ``state`` when given); a record the fold cannot
    take is damage (exit 2)."""
    state = State(name) if state is None else state
    for seq, rec in records:
        try:
            state.apply(rec)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise StateError(
                f"{where}: journal record {seq} is not a valid state record ({type(exc).__name__}: "
                f"{exc}); the state was left untouched"
            ) from None
    return state


def _read(
    state_dir: str | os.PathLike[str], name: str
) -> tuple[list[tuple[int, dict[str, Any]]], object, str | None] | None:
    if location.is_postgres(state_dir):
        from . import pg

        url = str(state_dir)
        state_path(".", name)
        pdb = pg.open_db(url, name, write=False)
        if pdb is None:
            return None
        try:
            return journal.read(pdb), pdb.path, None
        finally:
            pdb.close()
    base = state_path(state_dir, name)
    path = base / dbm.FILE
    if path.exists():
        db = dbm.open_existing(path, name)
        try:
            return journal.read(db), path, None
        except sqlite3.DatabaseError as exc:
            raise dbm.damaged(path, exc) from None
        finally:
            db.close()
    old = base / legacy.FILE
    if old.exists():
        got = legacy.read(str(old), expect_name=name)
        return list(enumerate(got.records[1:], start=1)), old, got.notice
    return None


def read_state(state_dir: str | os.PathLike[str], name: str) -> tuple[State, str | None] | None:
    """The folded state, or None when the runbook has none; raises StateError on damage."""
    got = _read(state_dir, name)
    if got is None:
        return None
    records, where, notice = got
    return fold(name, records, where), notice


def opening_writes(state_dir: str | os.PathLike[str], name: str) -> bool:
    """Opening the state for writing would change it before anything is decided: a schema of
    an earlier version is migrated, a ``journal.jsonl`` imported (read only: nothing here
    writes). On PostgreSQL never: its schema is migrated by ``state init`` only."""
    if location.is_postgres(state_dir):
        return False
    base = state_path(state_dir, name)
    path = base / dbm.FILE
    if not path.exists():
        return (base / legacy.FILE).exists()
    db = dbm.open_reader(path, name)
    try:
        return dbm.needs_migration(db) or (base / legacy.FILE).exists()
    except sqlite3.DatabaseError as exc:
        raise dbm.damaged(path, exc) from None
    finally:
        db.close()


def read_records(
    state_dir: str | os.PathLike[str], name: str
) -> tuple[list[dict[str, Any]], str | None] | None:
    """Every journal record (for ``report``) and a notice, or None when there is no state."""
    got = _read(state_dir, name)
    if got is None:
        return None
    records, where, notice = got
    fold(name, records, where)  # damage is refused here too, not half-reported
    return [r for _, r in records], notice


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Store:
    """The writable state: fold + durable append. Open it only under the state's guard
    (``lease.guard``); a run writes under its lease, whose check is the ``fence``."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        name: str,
        masker: Masker,
        fence: Callable[[dbm.Database], None] | None = None,
    ) -> None:
        self.name = name
        self.masker = masker
        self._lock = threading.RLock()
        self._staged: list[dict[str, Any]] = []
        self._effects: list[Callable[[dbm.Database], None]] = []
        self._own: set[int] = set()  # own records written after another process's
        self.notice: str | None = None
        self.failed: str | None = None
        self.db: dbm.Database
        if location.is_postgres(state_dir):
            self._open_pg(str(state_dir), name)
            self.fence_with(fence)
            return
        self.dir = state_path(state_dir, name)
        dbm.private_dir(self.dir)
        path = self.dir / dbm.FILE
        old = self.dir / legacy.FILE
        if path.exists():
            self.db = dbm.open_existing(path, name)
            dbm.setup(self.db)
        else:
            imported: list[dict[str, Any]] = []
            if old.exists():
                got = legacy.read(str(old), expect_name=name)
                imported, self.notice = got.records[1:], got.notice
            self.db = dbm.create(
                path, name, now(), (lambda d: journal.append(d, imported)) if imported else None
            )
            if old.exists():
                self.notice = "\n".join(
                    filter(
                        None,
                        [self.notice, f"imported {len(imported)} records of {old} into {path}"],
                    )
                )
        if old.exists():
            os.replace(old, old.with_name(legacy.FILE + ".imported"))
            fsync_dir(self.dir)
        try:
            self.seq = 0
            records = journal.read(self.db)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise dbm.damaged(path, exc) from None
        except StateError:
            self.db.close()
            raise
        if records:
            self.seq = records[-1][0]
        try:
            self.state = fold(name, records, path)
        except StateError:
            self.db.close()
            raise
        self.fence_with(fence)

    def _open_pg(self, url: str, name: str) -> None:
        """The state in the PostgreSQL database at ``url`` (``pg.py``): registered there if
        new, its journal folded."""
        from . import pg

        state_path(".", name)  # a name the schema refuses never gets a state
        pgdb = pg.open_db(url, name, write=True)
        assert pgdb is not None
        self.db = pgdb
        self.dir = pg.marker_dir(url, name)
        try:
            records = journal.read(self.db)
            self.seq = records[-1][0] if records else 0
            self.state = fold(name, records, self.db.path)
        except BaseException:
            self.db.close()
            raise

    def fence_with(self, fence: Callable[[dbm.Database], None] | None) -> None:
        """Run ``fence`` first inside each write transaction from now on (the lease's epoch
        check: a write after the lease was lost commits nothing and raises)."""
        self.db.fence = fence

    def identity(self) -> str:
        """Who writes: ``session_user`` on PostgreSQL, the OS user on a directory."""
        session_user = getattr(self.db, "session_user", None)
        if callable(session_user):
            return str(session_user())
        from .identity import os_user

        return os_user()

    def uid(self) -> int | None:
        """The writer's uid, compared beside its name on a directory; None on PostgreSQL."""
        if callable(getattr(self.db, "session_user", None)):
            return None
        return os.getuid()

    def stage(
        self, rec: dict[str, Any], effect: Callable[[dbm.Database], None] | None = None
    ) -> dict[str, Any]:
        """Fold a record into the state now; it reaches the disk with the next ``flush``.
        Nothing may act on a staged record before that flush (the engine flushes before it
        starts anything). ``effect`` runs in the same transaction as the record (a step's
        marks on its members commit with its success). Returns the masked record as it will
        be written."""
        with self._lock:
            clean: dict[str, Any] = self.masker.mask_record(rec)
            clean.setdefault("at", now())
            self.state.apply(clean)
            self._staged.append(clean)
            if effect is not None:
                self._effects.append(effect)
            return clean

    def flush(self) -> None:
        """Write every staged record in one transaction (one fsync; on PostgreSQL one
        statement when there are no effects, ``Database.append_once``). A failed write (disk
        full, I/O error) commits nothing and every later write is refused: the state on disk
        stays as it was at the last checkpoint, and nothing acts on what was not written."""
        with self._lock:
            if not self._staged:
                return
            if self.failed is not None:
                raise StateWriteError(self.failed)
            staged, self._staged = self._staged, []
            effects, self._effects = self._effects, []
            once: int | None = None
            try:
                once = None if effects else self.db.append_once(staged)
            except self.db.write_errors as exc:
                self._fail(exc)
            if once is not None:  # fenced, chained and committed by one statement
                self._written(once, len(staged))
                return
            try:
                with self.db.transaction():
                    for effect in effects:
                        effect(self.db)
                    first = journal.append(self.db, staged)
                    if effects and _FAULT:
                        _count_effects()
                        _fault("effects")
            except self.db.write_errors as exc:  # the disk, the file: not our own values
                self._fail(exc)
            if effects and _FAULT:
                _fault("effects-committed")
            self._written(first, len(staged))

    def commit(
        self, *records: dict[str, Any], effect: Callable[[dbm.Database], None] | None = None
    ) -> list[dict[str, Any]]:
        """Write ``records`` (after anything staged), with ``effect`` in the same transaction:
        durable when this returns. ``effect`` runs first and may fill in the records (what it
        found). The records reach the folded state only once committed, so an effect that
        raises (a source that cannot be read) leaves no trace anywhere."""
        with self._lock:
            self.flush()
            if self.failed is not None:
                raise StateWriteError(self.failed)
            clean: list[dict[str, Any]] = []
            once: int | None = None
            if effect is None:
                for rec in records:
                    c: dict[str, Any] = self.masker.mask_record(rec)
                    c.setdefault("at", now())
                    clean.append(c)
                try:
                    once = self.db.append_once(clean)
                except self.db.write_errors as exc:
                    self._fail(exc)
                if once is not None:
                    for c in clean:
                        self.state.apply(c)
                    self._written(once, len(clean))
                    return clean
            try:
                with self.db.transaction():
                    if effect is not None:
                        effect(self.db)  # it may fill in the records: masked after it
                        for rec in records:
                            c = self.masker.mask_record(rec)
                            c.setdefault("at", now())
                            clean.append(c)
                    first = journal.append(self.db, clean)
                    if effect is not None and _FAULT:
                        _count_effects()
                        _fault("effects")
            except self.db.write_errors as exc:
                self._fail(exc)
            if effect is not None and _FAULT:
                _fault("effects-committed")
            for c in clean:
                self.state.apply(c)
            self._written(first, len(clean))
            return clean

    def _written(self, first: int, count: int) -> None:
        """Records ``first`` .. ``first + count - 1`` are this store's own (already folded)."""
        if not count:
            return
        if first == self.seq + 1:
            self.seq = first + count - 1
        else:  # another process (`approve`, `resolve`) wrote in between: read by `refresh`
            self._own.update(range(first, first + count))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One write transaction (fenced) under the store's lock, in the order its writers take
        them: what is read and written inside sees no other process's append between."""
        with self._lock, self.db.transaction():
            yield

    def refresh(self) -> set[str]:
        """Fold in the records another process appended since (the decisions ``approve`` and
        ``resolve`` write beside a running apply, never under its lock: SPEC §11); returns
        the steps they are about."""
        with self._lock:
            try:
                more = journal.read(self.db, after=self.seq)
            except sqlite3.DatabaseError as exc:
                raise dbm.damaged(self.db.path, exc) from None
            except self.db.write_errors as exc:  # the state database's connection lost
                self._fail(exc)
            steps: set[str] = set()
            for seq, rec in more:
                if seq in self._own:
                    continue
                fold(self.name, [(seq, rec)], self.db.path, self.state)
                sid = rec.get("step") if rec.get("t") != "step" else rec.get("id")
                if isinstance(sid, str):
                    steps.add(sid)
            if more:
                self.seq = more[-1][0]
                self._own = {s for s in self._own if s > self.seq}
            return steps

    def _fail(self, exc: BaseException) -> None:
        raise StateWriteError(self.write_failed(exc)) from None

    def write_failed(self, exc: BaseException) -> str:
        """A write that failed: every later write is refused; returns what to tell."""
        if self.db.connection_lost(exc):
            self.failed = (
                f"{self.db.path}: the connection to the state database was lost "
                f"({location.shown(_first_line(exc))}); "
                "nothing more is started and the state stays as it was at the last checkpoint. "
                "Run `runbook status` and `runbook apply` again to resume once the database is "
                "back"
            )
            return self.failed
        self.failed = (
            f"{self.db.path}: cannot write the state ({location.shown(str(exc))}); nothing "
            "more is started and the state stays as it was at the last checkpoint. Free the space or "
            "fix the disk, then run `runbook apply` again to resume"
        )
        return self.failed

    def records_for(self, step: str) -> StepRecords:
        return StepRecords(self, step)

    def outbox_for(
        self,
        run: str,
        step: str,
        attempt: str,
        cohort: str | None = None,
        ledger_attempt: int | None = None,
    ) -> StepOutbox:
        """``ActionContext.outbox``: the messages of (run, step, attempt or firing)."""
        return StepOutbox(
            self.db,
            run,
            step,
            attempt,
            cohort=cohort,
            ledger_attempt=ledger_attempt,
            failed=self.write_failed,
        )

    def close(self) -> None:
        self.db.close()


class StepRecords:
    """``ActionContext.records``: durable key -> value records of one step, across runs."""

    def __init__(self, store: Store, step: str) -> None:
        self.store = store
        self.step = step

    def get(self, key: str) -> str | None:
        return self.store.state.records.get(self.step, {}).get(key)

    def items(self) -> Mapping[str, str]:
        return dict(self.store.state.records.get(self.step, {}))

    def put(self, items: Mapping[str, str]) -> None:
        if items:
            self.store.commit({"t": "record", "step": self.step, "items": dict(items)})
