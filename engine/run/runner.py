"""What apply and rollback share: the session (runbook, state, vars, secrets, reporter), the
record buffer with its group commit, contexts for actions, rendering, and the worker pool."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..actions import Action, ActionContext, Resources, late_keys, registry, template_mode
from ..console.reporters import Reporter
from ..errors import ActionFailed, LeaseLost
from ..format.approvals import vars_digest
from ..format.model import Call, Instance, Retry, Runbook
from ..format.model import Foreach as ForeachSpec
from ..format.sandbox import secrets_view
from ..format.schema import check as schema_check
from ..format.templates import TemplateError, evaluate, iter_strings, parse, render
from ..graph.dag import Dag
from ..masking import Masker
from ..state.backend import HeldLease
from ..state.db import Database
from ..state.status import State, Status
from ..state.store import Store
from . import context as tctx
from .executor import Job, Outcome, Result, run_job
from .foreach import Foreach

DEFAULT_MAX_PARALLEL = 4
DEFAULT_GRACE = 30.0


@dataclass
class Session:
    """One command's hold on a runbook's state (under the lock)."""

    file: str  # as the user typed it, for messages
    runbook: Runbook
    dag: Dag
    store: Store
    variables: dict[str, Any]
    secrets: dict[str, str]
    masker: Masker
    reporter: Reporter
    workdir: Path = field(default_factory=Path.cwd)
    lease: HeldLease | None = None  # None for a session that holds no lease

    @property
    def state(self) -> State:
        return self.store.state


class Runner:
    """Shared machinery; ``scheduler.Apply`` and ``rollback.Rollback`` build on it."""

    def __init__(self, session: Session, max_parallel: int, grace: float = DEFAULT_GRACE) -> None:
        self.s = session
        self.rb = session.runbook
        self.dag = session.dag
        self.registry = registry()
        self.max_parallel = max(1, max_parallel)
        self.grace = grace
        self.buffer: list[dict[str, Any]] = []
        self.results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self.running: dict[str, Job] = {}
        self.resources = Resources()
        self.pool = ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="step")
        self.interrupted_at: float | None = None
        # set at the first interrupt: per-member steps stop handing out members
        self.draining = threading.Event()
        self.hard_stop = False
        # `secrets` as templates see them: each renders as itself, every form a template makes
        # of one is reported to the masker (format/sandbox.py)
        self.secret_view = secrets_view(session.secrets, session.masker.seen)
        if session.lease is not None:
            session.lease.on_lost(self.lease_lost)

    # -- records ------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        run = self.s.state.run
        return run.id if run else "none"

    def emit(self, rec: dict[str, Any], effect: Callable[[Database], None] | None = None) -> None:
        """Stage a record: the state sees it at once; it is durable after the next ``flush``,
        which comes before anything acts on it. ``effect`` (a step's marks on its members)
        commits in the same transaction."""
        if rec.get("t") == "step":
            rec.setdefault("run", self.run_id)
        self.buffer.append(self.s.store.stage(rec, effect))

    def flush(self) -> None:
        if not self.buffer:
            return
        recs, self.buffer = self.buffer, []
        try:
            self.s.store.flush()
        except LeaseLost:  # the fence refused the write: the lease was taken over
            self.stop_running("the lease of the state was lost")
            raise
        self.s.reporter.records(recs)

    def commit_now(self, rec: dict[str, Any]) -> None:
        """From a worker thread: durable at once, then shown."""
        self.s.reporter.records(self.s.store.commit(rec))

    def status(self, node: str) -> Status:
        return self.s.state.status_of(node)

    def pinned_plan(self) -> dict[str, Any]:
        """The plan the run is pinned to now (after any accept): what a person's decision
        must have been given for to count (``ActionContext.pinned``)."""
        run = self.s.state.run
        if run is None:
            return {}
        return {"digest": run.digest, "vars": vars_digest(run.vars)}

    def wave_attempt(self, inst: Instance) -> int:
        """The current attempt of ``inst``'s cohort wave (1 outside cohort waves)."""
        if inst.phase.cohort is None or inst.wave is None:
            return 1
        got = self.s.state.attempts.get((inst.phase.cohort, inst.wave.id))
        return got.attempt if got is not None else 1

    # -- actions ------------------------------------------------------------------------
    def action(self, call: Call) -> Action:
        return self.registry.get(call.action)

    def idempotent(self, call: Call) -> bool:
        return call.idempotent if call.idempotent is not None else self.action(call).idempotent

    def template_context(
        self, inst: Instance | None, failed_step: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        run = self.s.state.run
        return tctx.build(
            self.rb,
            self.s.state,
            self.s.variables,
            self.secret_view,
            {"id": run.id if run else None, "started_at": run.started_at if run else None},
            inst,
            failed_step,
        )

    def render_params(
        self,
        call: Call,
        ctx: Mapping[str, Any],
        only: frozenset[str] | None = None,
        rendered: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The rendered ``with``; raises ActionFailed naming the key that failed. With
        ``only``, just those keys are rendered and the others taken from ``rendered`` (a
        foreach step's keys that do not name ``member``, rendered once for all members)."""
        action = self.action(call)
        late = late_keys(action)
        out: dict[str, Any] = {}
        templated = False
        for key, value in call.params.items():
            if key in late:
                out[key] = value
                continue
            if only is not None and rendered is not None and key not in only:
                out[key] = rendered[key]
            else:
                out[key] = _render_key(action, key, value, ctx)
            templated = templated or next(iter_strings(value), None) is not None
        if templated:
            problems = schema_check(out, action.schema, self.rb.source, (*call.path, "with"))
            if problems:
                text = "; ".join(f"{p.path}: {p.message}" for p in problems)
                raise ActionFailed(f"after rendering, {text}", retryable=False)
        return out

    def member_renderer(
        self, call: Call, step_ctx: Mapping[str, Any]
    ) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
        """``render(context with member)`` for a foreach step: the ``with`` keys whose
        templates name ``member`` are rendered per member (and the whole ``with`` checked
        against the action's schema); the others once, for the first member, and kept:
        their templates see the same context for every member."""
        action = self.action(call)
        late = late_keys(action)
        varying = frozenset(
            key
            for key, value in call.params.items()
            if key not in late and any(_names_member(s) for _, s in iter_strings(value))
        )
        rest = [key for key in call.params if key not in late and key not in varying]
        lock = threading.Lock()
        fixed: dict[str, Any] = {}  # "params" (the keys not naming member) or "error"

        def render_fixed() -> dict[str, Any]:
            with lock:
                if not fixed:
                    try:
                        if varying:
                            fixed["params"] = {
                                k: _render_key(action, k, call.params[k], step_ctx) for k in rest
                            }
                        else:  # nothing depends on the member: all of it, checked, once
                            fixed["params"] = self.render_params(call, step_ctx)
                    except ActionFailed as exc:
                        fixed["error"] = exc
            if "error" in fixed:
                raise fixed["error"]
            params: dict[str, Any] = fixed["params"]
            return params

        def render_member(ctx: Mapping[str, Any]) -> Mapping[str, Any]:
            params = render_fixed()
            return self.render_params(call, ctx, varying, params) if varying else params

        return render_member

    def when_says_skip(self, when: str | bool | None, ctx: Mapping[str, Any]) -> bool:
        if when is None:
            return False
        if isinstance(when, bool):
            return not when
        return not evaluate(when, ctx)

    def job(
        self,
        node: str,
        call: Call,
        params: Mapping[str, Any],
        tctx_: Mapping[str, Any],
        records_key: str | None = None,
        members: Callable[[], Any] | None = None,
        action: Action | None = None,
        scope: tuple[str, str] | None = None,
    ) -> Job:
        """``scope``: (step, wave attempt or contingency firing) of the call's messages in the
        outbox (SPEC §11), with the run: default (the records key, "1")."""
        s = self.s
        key = records_key or node
        out_step, out_attempt = scope or (key, "1")

        def make_ctx(attempt: int, cancel: threading.Event) -> ActionContext:
            wave = members() if members is not None else None
            outbox = s.store.outbox_for(
                self.run_id,
                out_step,
                out_attempt,
                cohort=getattr(wave, "cohort", None),
                ledger_attempt=getattr(wave, "attempt", None),
            )
            return ActionContext(
                step_id=key,  # a rollback is `ID#rollback`: its own records and message ids
                run_id=self.run_id,
                attempt=attempt,
                timeout=call.timeout,
                runbook=self.rb,
                state_dir=s.store.dir,
                masker=s.masker,
                records=s.store.records_for(key),
                emit=lambda kind, data: self.commit_now(
                    {"t": "event", "id": node, "kind": kind, "data": dict(data)}
                ),
                progress=lambda line: s.reporter.progress(node, line),
                resources=self.resources,
                cancel=cancel,
                template_context=tctx_,
                members=wave,
                outbox=outbox,
                pinned=self.pinned_plan(),
                clock=s.store.db.clock,
            )

        def on_retry(n: str, attempt: int, error: str, delay: float) -> None:
            self.commit_now(
                {"t": "retry", "id": n, "attempt": attempt, "error": error, "delay": delay}
            )

        return Job(node, call, action or self.action(call), params, make_ctx, on_retry)

    def foreach_job(
        self,
        node: str,
        call: Call,
        spec: ForeachSpec,
        tctx_: Mapping[str, Any],
        members: Callable[[], Any],
        attempt: int,
        records_key: str | None = None,
        only: Callable[[], set[Any]] | None = None,
    ) -> Job:
        """A job that runs ``call`` once per member (``run/foreach.py``): its ``with`` is
        rendered per member (``member_renderer``), its retries apply to each member's call."""
        key = records_key or node

        def record(rec: dict[str, Any]) -> None:
            self.commit_now({"t": "members", "step": key, "attempt": attempt, **rec})

        def calls() -> Mapping[Any, str]:
            return dict(self.s.state.member_calls.get((key, attempt), {}))

        runner = Foreach(
            self.action(call),
            spec,
            call.retries,
            self.idempotent(call),
            self.member_renderer(call, tctx_),
            record,
            calls,
            self.draining,
            only,
        )
        whole = replace(call, retries=Retry(1, call.retries.delay, call.retries.backoff))
        return self.job(node, whole, {}, tctx_, records_key, members, runner)

    def submit(self, job: Job) -> None:
        lease = self.s.lease
        if lease is not None and lease.lost_error is not None:
            raise lease.lost_error  # found lost since the flush: this step does not start
        self.running[job.node] = job

        def work() -> None:
            try:
                result = run_job(job)
            except BaseException as exc:  # noqa: BLE001 - never lose a result
                result = Result(job.node, Outcome.FAILED, 1, error=f"{type(exc).__name__}: {exc}")
            self.results.put(result)

        self.pool.submit(work)

    def run_inline(self, job: Job) -> Result:
        """Run a job and wait for it (contingencies): still interruptible by a second Ctrl-C."""
        self.running[job.node] = job
        try:
            return run_job(job)
        finally:
            self.running.pop(job.node, None)

    def wait_results(self) -> list[Result]:
        """Block for at least one result (waking up to watch signals), then drain."""
        while True:
            self.watch_interrupt()
            try:
                first = self.results.get(timeout=0.2)
                break
            except queue.Empty:
                continue
        out = [first]
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    # -- signals ------------------------------------------------------------------------
    def on_signal(self, signum: int, _frame: object) -> None:
        if self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
            self.draining.set()
            names = ", ".join(sorted(self.running)) or "none"
            self.s.reporter.notice(
                f"interrupted: starting nothing new; waiting up to {self.grace:.0f}s for the "
                f"running steps ({names}); press Ctrl-C again to stop them now"
            )
        else:
            self.stop_running("second interrupt")

    def stop_running(self, why: str) -> None:
        if not self.hard_stop:
            self.hard_stop = True
            self.s.reporter.notice(f"{why}: stopping the running steps now")
        for job in list(self.running.values()):
            job.cancel.set()

    def lease_lost(self) -> None:
        """From the lease's renewal thread: the lease was taken over. Nothing new starts and
        the running actions are cancelled at once; the scheduler's thread raises at its next
        look (``watch_interrupt``) or write (the fence)."""
        self.draining.set()
        for job in list(self.running.values()):
            job.cancel.set()

    def watch_interrupt(self) -> None:
        lease = self.s.lease
        if lease is not None and lease.lost_error is not None:
            self.stop_running("the lease of the state was lost")
            raise lease.lost_error
        late = self.interrupted_at is not None and (
            time.monotonic() - self.interrupted_at > self.grace
        )
        if late and not self.hard_stop:
            self.stop_running(f"grace period of {self.grace:.0f}s over")

    @contextmanager
    def signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def close(self) -> None:
        for job in self.running.values():
            job.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.resources.close()


def _render_key(action: Action, key: str, value: Any, ctx: Mapping[str, Any]) -> Any:
    try:
        return render(value, ctx, template_mode(action, key))
    except TemplateError as exc:
        raise ActionFailed(f"template error in with.{key}: {exc}", retryable=False) from None


def _names_member(source: str) -> bool:
    """A template that refers to ``member`` (or cannot be parsed: rendered per member, where
    its error is reported)."""
    try:
        return "member" in parse(source).names
    except Exception:  # noqa: BLE001 - a syntax error shows when it is rendered
        return True
