"""``foreach``: a step's action run once per member of its wave (SPEC §7, §11).

The step's job runs ``Foreach.run`` in a worker thread like any action. It hands members out
to a bounded pool of ``concurrency`` threads, each call with the step's retries, its own
``ActionContext`` (``member`` in the templates, an idempotency key ``RUN/STEP/ATTEMPT/KEY``).

Durability: before a batch of members is called, their start is committed (one journal record
``{"t": "members", "started": [...]}``); results are committed in batches (``done``,
``failed``). A crash loses at most the calls in flight: on the next run those members are
called again when the action is idempotent (or sends the same idempotency key), else they
become ``unknown`` and the step waits for ``runbook resolve --member``. Members done in this
wave attempt are never called again; failed ones are, on a re-run of the step.

Members stop being handed out once more than ``max_failed`` failed, on the first interrupt
(Ctrl-C: the calls in flight finish, within the grace period), or on cancel.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ..actions import Action, ActionContext
from ..errors import ActionFailed, Waiting
from ..format.model import Foreach as Spec
from ..format.model import Retry

BATCH = 256  # results per durable record at most
FLUSH_EVERY = 0.25  # seconds: results are recorded at least this often
LISTED = 100  # failed members named in the outputs


@dataclass
class _Tally:
    done: int = 0
    failed: int = 0
    skipped: int = 0  # done in an earlier run of this attempt
    unknown: list[Any] = field(default_factory=list)
    failures: list[tuple[Any, str]] = field(default_factory=list)
    ok_keys: list[Any] = field(default_factory=list)


class Foreach:
    """An ``Action`` that runs ``inner`` once per member (built by the scheduler per step)."""

    def __init__(
        self,
        inner: Action,
        spec: Spec,
        retries: Retry,
        idempotent: bool,
        render: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        record: Callable[[dict[str, Any]], None],
        calls: Callable[[], Mapping[Any, str]],
        draining: threading.Event,
        only: Callable[[], set[Any]] | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.summary = inner.summary
        self.idempotent = True  # for the engine: the member records decide (see the module)
        self.changes = inner.changes
        self.spec = spec
        self.retries = retries
        self.member_idempotent = idempotent or getattr(inner, "keyed_idempotent", False)
        self.render = render
        self.record = record
        self.calls = calls
        self.draining = draining
        self.only_keys = only  # a rollback: the members done in the attempt it undoes

    @property
    def schema(self) -> Mapping[str, Any]:
        return self.inner.schema

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"per member of {self.spec.cohort}: {self.inner.describe(params)}"

    # -- the run --------------------------------------------------------------------------
    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        members = ctx.members
        if members is None:
            raise ActionFailed("foreach runs in a wave of its cohort only", retryable=False)
        if hasattr(members, "per_member"):
            members.per_member = True  # failed members are called again, and may recover
        rows = members.rows()
        if self.only_keys is not None:
            keep = self.only_keys()
            rows = [r for r in rows if r[0] in keep]
        earlier = dict(self.calls())
        tally = _Tally()
        todo: list[tuple[Any, dict[str, Any]]] = []
        cut: list[Any] = []
        for key, attrs, _state in rows:
            was = earlier.get(key)
            if was == "done":
                tally.skipped += 1
                tally.ok_keys.append(key)
            elif was == "unknown":
                tally.unknown.append(key)
            elif was == "started" and not self.member_idempotent:
                cut.append(key)  # its call may or may not have taken effect
            else:
                todo.append((key, attrs))
        if cut:
            self.record({"unknown": cut})
            tally.unknown.extend(cut)
        if tally.unknown:
            members.unknown(tally.unknown)
        limit = self._limit(len(rows))
        self._call_all(todo, ctx, tally, limit, len(rows))
        for key, error in tally.failures:
            members.fail(key, error)
        members.only(tally.ok_keys)
        outputs = {
            "members": len(rows),
            "done": tally.done + tally.skipped,
            "called": tally.done + tally.failed,
            "failed": tally.failed,
            "unknown": len(tally.unknown),
            "failed_members": [[k, e] for k, e in tally.failures[:LISTED]],
        }
        if ctx.cancel.is_set() or (self.draining.is_set() and self._left(rows, tally)):
            raise ActionFailed(
                f"foreach stopped: {outputs['done']} of {len(rows)} members done, "
                f"{tally.failed} failed; the rest are called on the next apply",
                outputs=outputs,
                retryable=False,
            )
        if tally.failed > limit:
            shown = ", ".join(f"{k}: {e}" for k, e in tally.failures[:5])
            raise ActionFailed(
                f"{tally.failed} of {len(rows)} members failed (max_failed "
                f"{self.spec.max_failed.text} = {limit}); first: {shown}",
                outputs=outputs,
                retryable=False,
            )
        if tally.unknown:
            keys = ", ".join(str(k) for k in tally.unknown[:10])
            raise Waiting(
                f"{len(tally.unknown)} member call(s) were cut by a crash and may or may not have "
                f"taken effect ({keys}): check them, then `runbook resolve FILE STEP --member KEY "
                "--as succeeded|failed|pending` (or --all-unknown)"
            )
        return outputs

    def _limit(self, total: int) -> int:
        m = self.spec.max_failed
        if m.kind == "share":
            return math.floor(total * m.value + 1e-9)
        return int(m.value)

    def _left(self, rows: list[Any], tally: _Tally) -> bool:
        return tally.done + tally.failed + tally.skipped + len(tally.unknown) < len(rows)

    def _call_all(
        self,
        todo: list[tuple[Any, dict[str, Any]]],
        ctx: ActionContext,
        tally: _Tally,
        limit: int,
        total: int,
    ) -> None:
        results: queue.SimpleQueue[tuple[Any, str | None]] = queue.SimpleQueue()
        pending_done: list[Any] = []
        pending_failed: list[list[Any]] = []
        last_flush = time.monotonic()
        start = time.monotonic()
        last_progress = 0.0
        in_flight = 0
        it = iter(todo)
        exhausted = False

        def flush() -> None:
            nonlocal last_flush
            if pending_done or pending_failed:
                self.record({"done": list(pending_done), "failed": list(pending_failed)})
                pending_done.clear()
                pending_failed.clear()
            last_flush = time.monotonic()

        def stopping() -> bool:
            return ctx.cancel.is_set() or self.draining.is_set() or tally.failed > limit

        with ThreadPoolExecutor(self.spec.concurrency, thread_name_prefix="member") as pool:
            while True:
                # hand out members up to the concurrency, their start durable first
                if not exhausted and not stopping() and in_flight < self.spec.concurrency:
                    batch: list[tuple[Any, dict[str, Any]]] = []
                    while in_flight + len(batch) < self.spec.concurrency:
                        nxt = next(it, None)
                        if nxt is None:
                            exhausted = True
                            break
                        batch.append(nxt)
                    if batch:
                        flush()
                        self.record({"started": [k for k, _ in batch]})
                        for key, attrs in batch:
                            pool.submit(self._one, key, attrs, ctx, results)
                        in_flight += len(batch)
                if in_flight == 0:
                    break
                try:
                    key, error = results.get(timeout=0.2)
                except queue.Empty:
                    continue
                in_flight -= 1
                if error is None:
                    tally.done += 1
                    tally.ok_keys.append(key)
                    pending_done.append(key)
                else:
                    tally.failed += 1
                    tally.failures.append((key, error))
                    pending_failed.append([key, error])
                now = time.monotonic()
                if (
                    len(pending_done) + len(pending_failed) >= BATCH
                    or now - last_flush > FLUSH_EVERY
                ):
                    flush()
                if now - last_progress >= 1.0:
                    last_progress = now
                    ctx.progress(self._progress(tally, total, now - start))
            flush()
        ctx.progress(self._progress(tally, total, time.monotonic() - start))

    @staticmethod
    def _progress(tally: _Tally, total: int, elapsed: float) -> str:
        done = tally.done + tally.skipped
        left = max(0, total - done - tally.failed - len(tally.unknown))
        rate = tally.done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {left / rate:.0f}s" if rate > 0 and left else ""
        return f"foreach: {done} done, {tally.failed} failed, {left} left ({rate:.0f}/s{eta})"

    def _one(
        self,
        key: Any,
        attrs: dict[str, Any],
        ctx: ActionContext,
        results: queue.SimpleQueue[tuple[Any, str | None]],
    ) -> None:
        """One member: render, call with the step's retries; the error text or None."""
        error: str | None = None
        try:
            member = {**attrs, "key": key}
            params = self.render(member)
            members = ctx.members
            attempt_no = members.attempt if members is not None else 1
            idem = f"{ctx.run_id}/{ctx.step_id}/{attempt_no}/{key}"
            delay = self.retries.delay
            for attempt in range(1, self.retries.attempts + 1):
                one = replace(
                    ctx,
                    attempt=attempt,
                    started=time.monotonic(),
                    idempotency_key=idem,
                    member=member,
                    template_context={**ctx.template_context, "member": member},
                )
                try:
                    self.inner.run(params, one)
                    error = None
                    break
                except Waiting as exc:
                    error = f"waiting is not possible per member: {exc.message}"
                    break
                except ActionFailed as exc:
                    error = exc.message
                    if not exc.retryable or attempt >= self.retries.attempts:
                        break
                    if ctx.cancel.wait(delay):
                        break
                    delay *= self.retries.backoff
        except ActionFailed as exc:  # rendering failed
            error = exc.message
        except Exception as exc:  # noqa: BLE001 - one member's bug fails that member only
            error = f"internal error: {type(exc).__name__}: {exc}"
        results.put((key, error))
