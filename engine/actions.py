"""The action Protocol, what an action gets when it runs, and the registry.

Built-in actions sit in a plain mapping (``runbook_engine.plugins.BUILTINS``) and are imported on
first use; third-party actions come from the entry-point group ``runbook.actions``, loaded once,
on the first name that is not built in.  An entry point names a class (or a factory) whose
instances satisfy ``Action``.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from .errors import InvalidInput

if TYPE_CHECKING:
    from .format.model import Runbook

ENTRY_POINT_GROUP = "runbook.actions"


def late_keys(action: object) -> frozenset[str]:
    """The `with` keys an action renders itself (optional attribute of the Protocol)."""
    keys: frozenset[str] = getattr(action, "late_keys", frozenset())
    return keys


def expression_keys(action: object) -> frozenset[str]:
    """The `with` keys that hold a bare Jinja2 expression (check's `condition`)."""
    keys: frozenset[str] = getattr(action, "expression_keys", frozenset())
    return keys


def late_names(action: object) -> frozenset[str]:
    names: frozenset[str] = getattr(action, "late_names", frozenset())
    return names


def command_keys(action: object) -> frozenset[str]:
    """The `with` keys that are shell commands: every ``{{ }}`` in them renders shell-quoted."""
    keys: frozenset[str] = getattr(action, "command_keys", frozenset())
    return keys


def url_keys(action: object) -> frozenset[str]:
    """The `with` keys that are URLs: values in their path and query are percent-encoded."""
    keys: frozenset[str] = getattr(action, "url_keys", frozenset())
    return keys


def sql_keys(action: object) -> frozenset[str]:
    """The `with` keys that are SQL text (lint: outside data belongs in ``params``)."""
    keys: frozenset[str] = getattr(action, "sql_keys", frozenset())
    return keys


def template_mode(action: object, key: str) -> str:
    """How the templates of `with.KEY` render: "shell", "url" or "plain" (SPEC §9)."""
    if key in command_keys(action):
        return "shell"
    if key in url_keys(action):
        return "url"
    return "plain"


class Masker(Protocol):
    """Hides secrets in every form (``masking.Masker``); cut text with ``head``/``tail``,
    never by slicing first: a secret straddling the cut would leave a piece behind."""

    def mask(self, text: str) -> str: ...

    def head(self, text: str, limit: int) -> str: ...

    def tail(self, text: str, limit: int) -> str: ...


class Records(Protocol):
    """Durable key -> value records of one step, kept across crashes, resumes and runs.

    ``put`` returns only once the records are on disk (fsync): an action that must not repeat
    a side effect (``notify``) records its intent before acting and its outcome after.
    """

    def get(self, key: str) -> str | None: ...

    def items(self) -> Mapping[str, str]: ...

    def put(self, items: Mapping[str, str]) -> None: ...


class Members(Protocol):
    """The members of the wave a step works on (a step with ``cohort:``), from the ledger.

    An action reads them (``rows``), or lets its database select them (``ledger_path`` and
    ``select_sql``: attach the ledger to a SQLite connection when it is a file, else stream
    ``keys()`` into a temporary table), and says
    what happened to them: ``only`` (the members it handled, when not all), ``fail`` (a member
    that failed, with the reason). The engine commits those marks with the step's success.
    """

    cohort: str
    wave: str
    attempt: int  # the wave attempt (SPEC §11): part of idempotency and outbox keys
    key_column: str  # the cohort's key column in its source

    def rows(self) -> list[tuple[Any, dict[str, Any], str]]:
        """(key, attributes, journey state) of every member to work on, by rank."""
        ...

    def keys(self) -> list[Any]: ...

    @property
    def ledger_path(self) -> Path | None:
        """The ledger's SQLite file, or None when it is not a file (a PostgreSQL state)."""
        ...

    def select_sql(self, schema: str) -> tuple[str, tuple[Any, ...]]:
        """``SELECT key FROM SCHEMA.entity WHERE …`` and its parameters (``?`` style)."""
        ...

    def sample(self) -> tuple[list[Any], str, list[Any]]:
        """For a gate: this wave's members at or past `moved`; the baseline's name (`holdout`
        or `pending`) and its members' keys."""
        ...

    def only(self, keys: Iterable[Any]) -> None: ...

    def completed(self) -> None:
        """Every member was handled (those failed aside), even if the step then fails."""
        ...

    def fail(self, key: Any, reason: str) -> None: ...

    def unknown(self, keys: Iterable[Any]) -> None:
        """Members whose call was cut by a crash: `unknown` until the operator resolves them."""
        ...

    def messages(self, rows: Iterable[tuple[Any, str, str | None, str]]) -> None:
        """Record messages sent to members now: (key, channel, message id, state)."""
        ...


class OutboxRow(NamedTuple):
    """One message as the state's outbox table keeps it (SPEC §10): enough to deliver it again
    (the relay) or to write it as an ``.eml`` file (an export), by any process. A tuple in
    the order of the table's columns (thousands are built per second)."""

    recipient: str  # its key within the step: `member:ATTEMPT:KEY`, `to:ADDRESS` or `webhook`
    channel: str  # outbox | email | webhook
    message_id: str  # "<hex@runbook.runbook>": stable for (runbook, run, step, attempt, recipient)
    sender: str
    address: str
    name: str
    locale: str | None
    subject: str
    body: str
    headers: str  # the message's own headers (X-Runbook...) as a JSON object
    entity: Any = None  # the cohort member's key, when the message is to a member


class Outbox(Protocol):
    """The messages of one step (its run, step instance, and wave attempt or contingency
    firing) in the state's outbox table; ``ActionContext.outbox``.

    ``write`` is one transaction (one fsync): rows are added with ``ON CONFLICT DO NOTHING``
    (``replace``: a row found in the table takes the new state, for a message sent again), and
    ``changes`` set the state of rows already there (recipient -> (state, reason)). A member's
    message is recorded in the ledger in the same transaction once it is told (queued in the
    outbox, or sent by a direct channel). Returns how many rows were added.
    """

    run: str
    step: str
    attempt: str

    def states(self) -> dict[str, str]:
        """recipient -> state of every message of this step."""
        ...

    def rows(self) -> list[tuple[OutboxRow, str, str, str | None]]:
        """(row, state, queued_at, reason) of every message of this step, in queue order."""
        ...

    def counts(self) -> dict[str, int]:
        """state -> how many messages of this step."""
        ...

    def write(
        self,
        add: Sequence[OutboxRow] = (),
        *,
        state: str = "queued",
        at: str,
        replace: bool = False,
        changes: Mapping[str, tuple[str, str | None]] | None = None,
    ) -> int: ...


class Resources:
    """Objects shared by the steps of one run (SSH connections...), closed when the run ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._items:
                self._items[key] = factory()
            return self._items[key]

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for item in items:
            closer = getattr(item, "close", None)
            if callable(closer):
                with contextlib.suppress(Exception):  # closing must not hide the outcome
                    closer()


@dataclass
class ActionContext:
    """What one attempt of one step (or rollback, or contingency) gets from the engine."""

    step_id: str  # instance id, e.g. "copy[pilot]"
    run_id: str
    attempt: int  # 1-based
    timeout: float  # seconds allowed for this attempt
    runbook: Runbook
    state_dir: Path  # STATE_DIR/NAME: files the engine or an action keeps
    masker: Masker
    records: Records
    emit: Callable[[str, Mapping[str, Any]], None]  # a durable event in the journal
    progress: Callable[[str], None] = lambda _line: None  # a transient line for the console
    resources: Resources = field(default_factory=Resources)
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    # The run's template context (vars, secrets, steps, wave, run): for the parts of ``with``
    # an action renders itself (notify's per-recipient templates, check's condition).
    template_context: Mapping[str, Any] = field(default_factory=dict)
    # the wave's members, for a step with `cohort:` (or notify `to: {cohort}`); else None
    members: Members | None = None
    # foreach: the member this call is for (`member.key`, `member.*`) and its idempotency key
    # RUN/STEP/ATTEMPT/KEY (http sends it as `Idempotency-Key`)
    member: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    # the caller stops waiting for this call once ``cancel`` is set and leaves it behind (a
    # foreach member runs in a daemon thread): the action may block without watching cancel
    abandonable: bool = False
    # this step's messages in the state's outbox table (notify); None outside the engine
    outbox: Outbox | None = None
    # the plan the run is pinned to when the step starts (SPEC §8): ``digest`` (the runbook's),
    # ``vars`` (the digest of its vars as stored: ``format/approvals.py``). A person's decision
    # (an approval, a gate decision) counts only when it was given for this plan
    pinned: Mapping[str, Any] = field(default_factory=dict)

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    def remaining(self) -> float:
        """Seconds left before the attempt's timeout (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def sleep(self, seconds: float) -> bool:
        """Sleep unless cancelled or out of time; True when the full time passed."""
        wait = min(seconds, self.remaining())
        cancelled = self.cancel.wait(wait)
        return not cancelled and wait >= seconds


@runtime_checkable
class Action(Protocol):
    """What every action provides (built-in or plugin)."""

    name: str
    summary: str  # one line: what the action does in general
    idempotent: bool  # safe to re-run after a crash cut it short
    changes: bool  # changes something outside the engine (then a step should say `rollback`)

    @property
    def schema(self) -> Mapping[str, Any]:
        """JSON Schema of the action's ``with`` mapping."""
        ...

    def describe(self, params: Mapping[str, Any]) -> str:
        """One line for ``plan``: what this step will do, from its (unrendered) ``with``."""
        ...

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        """Do it; return the outputs. Raise ``ActionFailed`` (or ``Waiting``) otherwise."""
        ...


class BuiltinAction:
    """Shared plumbing of the built-in actions: the schema comes from ``schemas/actions``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    idempotent: ClassVar[bool]
    changes: ClassVar[bool]
    # `with` keys the engine leaves unrendered: the action renders them itself, later (per
    # recipient, per measurement), with the extra names below besides the run's context
    late_keys: ClassVar[frozenset[str]] = frozenset()
    late_names: ClassVar[frozenset[str]] = frozenset()
    # `with` keys holding a bare Jinja2 expression (no braces), checked as such by validate
    expression_keys: ClassVar[frozenset[str]] = frozenset()
    # `with` keys that are shell commands (each `{{ }}` shell-quoted), URLs (values in the path
    # and query percent-encoded) and SQL text (lint: outside data goes in `params`): SPEC §9
    command_keys: ClassVar[frozenset[str]] = frozenset()
    url_keys: ClassVar[frozenset[str]] = frozenset()
    sql_keys: ClassVar[frozenset[str]] = frozenset()

    @property
    def schema(self) -> Mapping[str, Any]:
        from .schemas import load_schema

        return load_schema(self.name)

    def describe(self, params: Mapping[str, Any]) -> str:
        return self.summary

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        raise NotImplementedError(f"action {self.name} cannot run yet")


class Registry:
    """Action names -> actions; built-ins first, then the ``runbook.actions`` entry points."""

    def __init__(self, builtins: Mapping[str, str]) -> None:
        self._specs = dict(builtins)
        self._loaded: dict[str, Action] = {}
        self._plugins: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _entry_points(self) -> dict[str, Any]:
        if self._plugins is None:
            from importlib.metadata import entry_points

            self._plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._plugins

    def names(self) -> list[str]:
        return sorted(set(self._specs) | set(self._entry_points()))

    def __contains__(self, name: str) -> bool:
        return name in self._specs or name in self._entry_points()

    def get(self, name: str) -> Action:
        with self._lock:
            action = self._loaded.get(name)
            if action is None:
                action = self._load(name)
                self._loaded[name] = action
            return action

    def _load(self, name: str) -> Action:
        if name in self._specs:
            module, _, attr = self._specs[name].partition(":")
            factory = getattr(importlib.import_module(module), attr)
        elif name in self._entry_points():
            try:
                factory = self._entry_points()[name].load()
            except Exception as exc:
                raise InvalidInput(f"action plugin {name!r} failed to load: {exc}") from exc
        else:
            raise InvalidInput(f"unknown action {name!r}; known: {', '.join(self.names())}")
        action = factory() if callable(factory) else factory
        missing = [
            attr
            for attr in ("name", "summary", "idempotent", "changes", "schema", "describe", "run")
            if not hasattr(action, attr)
        ]
        if missing:
            raise InvalidInput(
                f"action plugin {name!r} is not an action: it lacks {', '.join(missing)}"
            )
        result: Action = action
        return result


_REGISTRY: Registry | None = None


def registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        from runbook_engine.plugins import BUILTINS

        _REGISTRY = Registry(BUILTINS)
    return _REGISTRY
