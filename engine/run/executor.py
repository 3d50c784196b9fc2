"""One call (step, rollback or contingency) run to its end in a worker thread: attempts,
retries with delay and backoff, and the typed result the scheduler records."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..actions import Action, ActionContext
from ..errors import ActionFailed, Waiting
from ..format.model import Call


class Outcome(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WAITING = "waiting"
    CANCELLED = "cancelled"  # stopped by a hard interrupt: the result is not known


@dataclass
class Result:
    node: str
    outcome: Outcome
    attempts: int
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    details: str = ""
    duration: float = 0.0
    members: Any = None  # the last attempt's ``ActionContext.members``: what it did to them


@dataclass
class Job:
    """Everything a worker needs; built by the scheduler in the main thread."""

    node: str  # the instance id (or contingency id)
    call: Call
    action: Action
    params: Mapping[str, Any]
    make_ctx: Callable[[int, threading.Event], ActionContext]
    on_retry: Callable[[str, int, str, float], None]  # (node, next attempt, error, delay)
    cancel: threading.Event = field(default_factory=threading.Event)


def run_job(job: Job) -> Result:
    start = time.monotonic()
    retry = job.call.retries
    delay = retry.delay
    failure: ActionFailed | None = None
    attempt = 0

    ctx: ActionContext | None = None

    def result(outcome: Outcome, outputs: Any = None, error: str | None = None) -> Result:
        details = failure.details if failure is not None and outcome is Outcome.FAILED else ""
        return Result(
            job.node,
            outcome,
            attempt,
            dict(outputs or {}),
            error=error,
            details=details,
            duration=time.monotonic() - start,
            members=ctx.members if ctx is not None else None,
        )

    for attempt in range(1, retry.attempts + 1):
        ctx = job.make_ctx(attempt, job.cancel)
        try:
            return result(Outcome.SUCCEEDED, job.action.run(job.params, ctx))
        except Waiting as wait:
            return result(Outcome.WAITING, error=wait.message)
        except ActionFailed as exc:
            failure = exc
        except Exception as exc:  # noqa: BLE001 - a bug in an action fails the step, not the run
            failure = ActionFailed(
                f"internal error in action {job.call.action}: {type(exc).__name__}: {exc}",
                details=traceback.format_exc(limit=6),
                retryable=False,
            )
        if job.cancel.is_set():
            return result(Outcome.CANCELLED, failure.outputs, failure.message)
        if attempt >= retry.attempts or not failure.retryable:
            break
        job.on_retry(job.node, attempt + 1, failure.message, delay)
        if job.cancel.wait(delay):
            return result(Outcome.CANCELLED, failure.outputs, failure.message)
        delay *= retry.backoff
    assert failure is not None
    return result(Outcome.FAILED, failure.outputs, failure.message)
