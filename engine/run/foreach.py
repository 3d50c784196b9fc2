"""``foreach``: a step's action run once per member of its wave (SPEC §7, §11).

The step's job runs ``Foreach.run`` in a worker thread like any action. It hands members out
to a bounded pool of ``concurrency`` threads, each call with the step's retries, its own
``ActionContext`` (``member`` in the templates, an idempotency key ``RUN/STEP/ATTEMPT/KEY``).

Durability: before members are called, their start is committed (a journal record
``{"t": "members", "started": [...]}``); their results (``done``, ``failed``) are committed in
the same record as the next starts, a group commit (``_call_all``). A crash loses at most the
calls in flight: on the next run those members are
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
from dataclasses import dataclass, field, replace
from typing import Any

from ..actions import Action, ActionContext
from ..errors import ActionFailed, Waiting
from ..format.model import Foreach as Spec
from ..format.model import Retry

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
        render: Callable[[Mapping[str, Any]], Mapping[str, Any]],  # context with member
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
        """Hand the members out to ``concurrency`` threads, each one's start durable before
        its call, in a group commit: every time the dispatcher wakes up, it takes every
        result come back meanwhile and commits them together with the start of as many next
        members, in one transaction, then queues those for the threads. A slot gets a new
        member only once its result is durable, so a crash leaves at most the calls in flight
        to call again (or `unknown`). (Letting the threads run ahead of the commits was
        measured: no faster on two cores, and a crash would cost twice as many calls.)

        The threads are daemons the dispatcher may leave behind: once the step is cancelled
        (a second Ctrl-C, the grace period over) it stops waiting for the calls in flight,
        whose members stay `started` in the journal, as after a crash. So a call need not
        watch the cancel itself (``ActionContext.abandonable``: ``http`` sends its request
        from the member's thread, without a helper thread per call)."""
        conc = self.spec.concurrency
        results: queue.SimpleQueue[tuple[Any, str | None]] = queue.SimpleQueue()
        work: queue.SimpleQueue[tuple[Any, dict[str, Any]] | None] = queue.SimpleQueue()
        threads = 0
        done: list[Any] = []
        failed: list[list[Any]] = []
        start = time.monotonic()
        last_progress = 0.0
        out = 0  # members queued or being called
        it = iter(todo)
        exhausted = not todo

        def serve() -> None:
            while (item := work.get()) is not None:
                self._one(item[0], item[1], ctx, results)

        def take(key: Any, error: str | None) -> None:
            if error is None:
                tally.done += 1
                tally.ok_keys.append(key)
                done.append(key)
            else:
                tally.failed += 1
                tally.failures.append((key, error))
                failed.append([key, error])

        try:
            while not ctx.cancel.is_set():
                # (a member queued is taken by a free thread at once: it is called)
                stopping = self.draining.is_set() or tally.failed > limit
                batch: list[tuple[Any, dict[str, Any]]] = []
                if not stopping and not exhausted and out < conc:
                    while out + len(batch) < conc:
                        nxt = next(it, None)
                        if nxt is None:
                            exhausted = True
                            break
                        batch.append(nxt)
                rec: dict[str, Any] = {}
                if done:
                    rec["done"] = done[:]
                if failed:
                    rec["failed"] = failed[:]
                if batch:
                    rec["started"] = [k for k, _ in batch]
                if rec:
                    self.record(rec)  # one commit: the results, then the next starts
                    done.clear()
                    failed.clear()
                for item in batch:
                    work.put(item)
                    if threads < conc:
                        threads += 1
                        name = f"member-{threads}"
                        threading.Thread(target=serve, name=name, daemon=True).start()
                out += len(batch)
                if out == 0:
                    break
                try:
                    got = [results.get(timeout=0.2)]
                except queue.Empty:
                    continue
                while True:  # every result come back meanwhile, in one go
                    try:
                        got.append(results.get_nowait())
                    except queue.Empty:
                        break
                for key, error in got:
                    take(key, error)
                out -= len(got)
                now = time.monotonic()
                if now - last_progress >= 1.0:
                    last_progress = now
                    ctx.progress(self._progress(tally, total, now - start))
            if done or failed:  # the last results (cancelled: the calls in flight stay started)
                self.record({"done": done[:], "failed": failed[:]})
        finally:
            while True:  # cancelled: members queued and not taken yet are not called
                try:
                    work.get_nowait()
                except queue.Empty:
                    break
            for _ in range(threads):
                work.put(None)
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
            context = {**ctx.template_context, "member": member}
            params = self.render(context)
            members = ctx.members
            attempt_no = members.attempt if members is not None else 1
            one = replace(
                ctx,
                attempt=1,
                started=time.monotonic(),
                idempotency_key=f"{ctx.run_id}/{ctx.step_id}/{attempt_no}/{key}",
                member=member,
                template_context=context,
                abandonable=True,  # a daemon thread: see _call_all
            )
            delay = self.retries.delay
            for attempt in range(1, self.retries.attempts + 1):
                if attempt > 1:
                    one = replace(one, attempt=attempt, started=time.monotonic())
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
