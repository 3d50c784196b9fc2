"""The state of one runbook: ``STATE_DIR/NAME/journal.jsonl`` folded into a ``State``.

Writers hold the runbook's lock (``lock.py``); readers (``status``, ``plan``, ``report``) read
the journal as it is.  Every record is masked (no secret value reaches the disk) and stamped
with the time before it is written.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import StateError
from ..masking import Masker
from . import journal
from .status import State

JOURNAL = "journal.jsonl"


def now() -> str:
    """UTC, ISO 8601 with milliseconds: the time format of the state."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def state_path(state_dir: str | os.PathLike[str], name: str) -> Path:
    """``STATE_DIR/NAME``; a name the schema would refuse never becomes a folder (exit 2)."""
    if not _NAME.fullmatch(name):
        raise StateError(f"invalid runbook name {name!r}: no state folder is made for it")
    return Path(state_dir) / name


def read_state(state_dir: str | os.PathLike[str], name: str) -> tuple[State, str | None] | None:
    """The folded state, or None when the runbook has none; raises StateError on damage."""
    path = state_path(state_dir, name) / JOURNAL
    if not path.exists():
        return None
    loaded = journal.read(str(path), expect_name=name)
    state = State(name)
    for rec in loaded.records[1:]:
        state.apply(rec)
    return state, loaded.notice


def read_records(state_dir: str | os.PathLike[str], name: str) -> list[dict[str, Any]]:
    """Every record of the journal (for ``report``); raises StateError when there is none."""
    path = state_path(state_dir, name) / JOURNAL
    if not path.exists():
        raise StateError(f"no state for runbook {name!r} in {state_dir}: it has not been applied")
    return journal.read(str(path), expect_name=name).records


class Store:
    """The writable state: fold + durable append. Open it only under the runbook's lock."""

    def __init__(self, state_dir: str | os.PathLike[str], name: str, masker: Masker) -> None:
        self.dir = state_path(state_dir, name)
        self.name = name
        self.masker = masker
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / JOURNAL
        self._lock = threading.RLock()
        self._staged: list[dict[str, Any]] = []
        self.notice: str | None = None
        self.state = State(name)
        good: int | None = None
        fresh = True
        if path.exists():
            loaded = journal.read(str(path), expect_name=name)
            self.notice = loaded.notice
            good = loaded.good_bytes
            fresh = not loaded.records
            for rec in loaded.records[1:]:
                self.state.apply(rec)
        self.writer = journal.Writer(str(path), good)
        if fresh:
            self.writer.append(
                [{"t": "header", "format": journal.FORMAT, "runbook": name, "at": now()}]
            )

    def stage(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Fold a record into the state now; it reaches the disk with the next ``flush``.
        Nothing may act on a staged record before that flush (the engine flushes before it
        starts anything). Returns the masked record as it will be written."""
        with self._lock:
            clean: dict[str, Any] = self.masker.mask_value(rec)
            clean.setdefault("at", now())
            self.state.apply(clean)
            self._staged.append(clean)
            return clean

    def flush(self) -> None:
        """Write every staged record with one write and one fsync."""
        with self._lock:
            if self._staged:
                staged, self._staged = self._staged, []
                self.writer.append(staged)

    def commit(self, *records: dict[str, Any]) -> list[dict[str, Any]]:
        """Stage and flush: durable when this returns."""
        out = [self.stage(r) for r in records]
        self.flush()
        return out

    def records_for(self, step: str) -> StepRecords:
        return StepRecords(self, step)

    def close(self) -> None:
        self.writer.close()


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
