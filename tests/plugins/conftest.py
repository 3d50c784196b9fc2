"""Helpers for calling actions directly: a real ActionContext for one step.

``records`` is a dict here, so that a test can set up and inspect an action's records directly;
the durable journal-backed records (``Store.records_for``) are exercised through ``runbook
apply``, crashes included, in ``test_notify_apply.py``. ``outbox`` is the real thing: the
outbox table of a state database in the test's folder (``make_ctx.states()`` reads it back).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.actions import ActionContext, Resources
from runbook_engine.format.loader import load_text
from runbook_engine.masking import Masker
from runbook_engine.state.store import Store

_MINIMAL = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: action-test}
phases:
  - id: only
    steps:
      - {id: s, action: wait, with: {duration: 0s}}
"""


class DictRecords:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def items(self) -> Mapping[str, str]:
        return dict(self.data)

    def put(self, items: Mapping[str, str]) -> None:
        with self.lock:
            self.data.update(items)


class NoMask:
    def mask(self, text: str) -> str:
        return text

    def head(self, text: str, limit: int) -> str:
        return text[:limit]

    def tail(self, text: str, limit: int) -> str:
        return text[-limit:] if limit else ""


@dataclass
class CtxFactory:
    tmp: Path
    events: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    records: DictRecords = field(default_factory=DictRecords)
    resources: Resources = field(default_factory=Resources)
    _store: Store | None = None

    @property
    def store(self) -> Store:
        """The state database whose outbox table the contexts write to."""
        if self._store is None:
            self._store = Store(self.tmp / "state-db", "action-test", Masker())
        return self._store

    def states(self, step: str = "s", run: str = "run-test") -> dict[str, str]:
        """recipient -> state of the step's messages in the outbox table."""
        return self.store.outbox_for(run, step, "1").states()

    def sql(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.store.db.transaction():
            return self.store.db.query(sql, params)

    def __call__(
        self, *, runbook_text: str = _MINIMAL, timeout: float = 60.0, step_id: str = "s", **kw: Any
    ) -> ActionContext:
        rb = load_text(runbook_text, "test.yaml").runbook
        outbox = kw.pop("outbox", None) or self.store.outbox_for("run-test", step_id, "1")

        def emit(k: str, d: Mapping[str, Any]) -> None:
            return self.events.append((k, d))

        return ActionContext(
            step_id=step_id,
            run_id="run-test",
            attempt=kw.pop("attempt", 1),
            timeout=timeout,
            runbook=rb,
            state_dir=self.tmp / "state",
            masker=kw.pop("masker", NoMask()),
            records=kw.pop("records", self.records),
            emit=emit,
            progress=self.lines.append,
            resources=self.resources,
            outbox=outbox,
            **kw,
        )


@pytest.fixture
def make_ctx(tmp_path: Path) -> Any:
    factory = CtxFactory(tmp_path)
    (tmp_path / "state").mkdir()
    yield factory
    factory.resources.close()
    if factory._store is not None:
        factory._store.close()
