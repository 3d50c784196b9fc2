"""``apply``: run every step whose dependencies are done, in parallel, checkpointed.

What is ready comes from the networkx DAG and each step's stored status only (Kahn's algorithm,
``graph/countdown.py``): per node the count of predecessors not yet done, initialised from the
stored statuses when the loop starts; a step whose count reaches 0 starts if it is pending and
in scope, first in the lexicographical topological order (document order).  A step done
(succeeded, or skipped by ``when``) counts down its successors; barriers pass it on.
Transitions are buffered and committed with one fsync before the engine acts on them (a step's
success and the start of the steps it unblocks share a commit).
"""

from __future__ import annotations

import heapq
import os
import secrets as pysecrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import ActionFailed, Exit, InvalidInput
from ..format.model import Instance, OnFailure
from ..format.templates import TemplateError
from ..graph.countdown import Countdown
from ..graph.scope import select
from ..state import pinned
from ..state.status import DONE, RunStatus, Status
from ..state.store import Store
from . import cohorts as rcohorts
from . import pins
from .executor import Job, Outcome, Result
from .rollback import Rollback, partial_effects
from .runner import DEFAULT_GRACE, Runner, Session

_STRENGTH = {None: 0, "abort": 1, "rollback-wave": 2, "rollback": 3}
# how often a busy run reads the decisions written beside it (``Apply.read_decisions``)
DECISIONS_EVERY = 0.2


@dataclass
class ApplyOptions:
    max_parallel: int = 4
    only: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    grace: float = DEFAULT_GRACE
    accept_changes: bool = False


@dataclass
class ApplyOutcome:
    exit: Exit
    run_id: str
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    rollback_failed: list[str] = field(default_factory=list)
    left_in_place: list[str] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    unknown_in_rollback: list[str] = field(default_factory=list)  # found rolling_back
    changed: list[str] = field(default_factory=list)
    nothing_to_do: bool = False
    compensated: bool = False  # every step is done, but this run fired or rolled back
    rollbacks: int = 0  # steps rolled back in this run (re-run since or not)
    # per cohort: its entities by state, and finished waves with members short of their target
    cohorts: list[rcohorts.CohortOutcome] = field(default_factory=list)
    short: int = 0  # members of finished waves not at their wave's target: not clean (exit 1)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + pysecrets.token_hex(2)


class Apply(Runner):
    def __init__(self, session: Session, options: ApplyOptions) -> None:
        super().__init__(session, options.max_parallel, options.grace)
        self.options = options
        self.scope: set[str] = select(self.rb, options.only)
        self.ready: list[tuple[int, str]] = []
        self.stopping: str | None = None
        self._decisions_read = float("-inf")  # monotonic time of the last read
        self.wave_rollbacks: list[tuple[str, str]] = []  # (phase, wave)
        self.failures: list[tuple[str, str]] = []
        self.first_attempt: dict[str, int] = {}
        self.undo_first: list[str] = []  # found rolling_back after a crash
        self.left_in_place: list[str] = []  # no rollback declared: their changes stay

    # -- start of a run -----------------------------------------------------------------
    def check_only(self) -> None:
        if not self.options.only:
            return
        missing = sorted(
            n for n in self.dag.ancestors(self.scope) - self.scope if self.status(n) not in DONE
        )
        if missing:
            shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
            raise InvalidInput(
                f"--only {' '.join(self.options.only)}: these steps must be done first: {shown}"
            )

    def begin(self) -> bool:
        """Open or resume the run; False when there is nothing to do."""
        state = self.s.state
        run = state.run
        for rid in self.options.replace:
            if rid not in self.rb.instances:
                raise InvalidInput(
                    f"--replace {rid}: no such step (instance ids: copy[pilot], ...)"
                )
        resume = run is not None and not run.finished
        # `--replace` after a run that succeeded stays inside that run (SPEC §11): its id and
        # its waves' attempts do not change, so idempotency keys and outbox keys stay the same
        reopen = (
            run is not None and bool(self.options.replace) and run.status is RunStatus.SUCCEEDED
        )
        cohorts = rcohorts.used_cohorts(self.rb, self.scope)
        rcohorts.check_frozen(self.rb, self.s.store, cohorts)
        todo = [
            n
            for n in self.scope
            if self.status(n) is not Status.SUCCEEDED
            # a step skipped by `when` is done: a finished run does not start a new one for
            # it, unless the variables changed since (then `when` may say otherwise)
            and not (
                self.status(n) is Status.SKIPPED
                and state.steps[n].reason == "when"
                and (resume or self._same_vars())
            )
        ]
        if not resume and not todo and not self.options.replace:
            return False
        # a run applies what it started with (SPEC §8 "Pinned runs"): refused (exit 2) here,
        # before anything is written, when a change affects steps not yet done
        accepted = (
            pins.repin(self.s, run, self.options.accept_changes)
            if (resume or reopen) and run is not None
            else []
        )
        drawn = rcohorts.draw_missing(
            self.rb, self.s.store, cohorts, self.s.variables, self.secret_view
        )  # may refuse (exit 2) before anything is written
        if resume or reopen:
            assert run is not None
            for rec in accepted:
                self.emit(rec)
            self.emit(
                {
                    "t": "run",
                    "run": run.id,
                    "status": "running",
                    "digest": self.rb.digest,
                    "resumed": True,
                    "pid": os.getpid(),
                }
            )
        else:
            self.emit(
                {
                    "t": "run",
                    "run": new_run_id(),
                    "status": "running",
                    "digest": self.rb.digest,
                    "file": self.s.file,
                    "vars": self.s.variables,
                    "pid": os.getpid(),
                    "user": _user(self.s.store),
                    "uid": self.s.store.uid(),
                    "pins": pins.pins_of(self.rb, self.s.dag.order),
                    # keyed digests of the vars' raw values (none of a secret's: state/pinned.py)
                    "var_hmacs": pinned.var_hmacs(
                        pinned.ensure_key(self.s.store.db), self.s.variables, self.s.masker
                    ),
                    "context": pins.context_pins(self.rb),
                }
            )
        self.flush()
        rcohorts.freeze_drawn(self.s.store, drawn, self.run_id, self.s.reporter.notice)
        if not self.s.state.pending_decisions():
            self._fixups(new_run=not (resume or reopen))
        self.flush()
        return True

    def step_idempotent(self, inst: Instance) -> bool:
        """Safe to run again after a crash cut it: a foreach step always is (its member
        records decide which members are called again, SPEC §11)."""
        return inst.step.foreach is not None or self.idempotent(inst.step.call)

    def _same_vars(self) -> bool:
        run = self.s.state.run
        if run is None or run.vars is None:
            return False
        return bool(run.vars == self.s.masker.mask_value(self.s.variables))

    def _fixups(self, new_run: bool) -> None:
        """Statuses left by earlier runs, crashes and failures -> what this run does.

        In the order steps run, so that a step skipped by `when` after one that runs again (a
        rolled-back wave's next attempt) is evaluated again too, instead of counting as done
        and letting the steps after it run before the ones before it."""
        for node in self.dag.step_order():
            st = self.s.state.steps.get(node)
            if node in self.options.replace:
                self.emit(
                    {
                        "t": "step",
                        "id": node,
                        "status": "pending",
                        "reason": "replace",
                        "reset_attempts": True,
                    }
                )
                continue
            if st is None or node not in self.scope:
                continue
            inst = self.rb.instances[node]
            status = st.status
            if status is Status.RUNNING:
                if self.step_idempotent(inst):
                    self.emit(
                        {
                            "t": "step",
                            "id": node,
                            "status": "pending",
                            "reason": "found running after a crash; idempotent: runs again",
                        }
                    )
                else:
                    self.emit(
                        {
                            "t": "step",
                            "id": node,
                            "status": "unknown",
                            "reason": "apply",
                            "error": "found running after a crash and its action is not "
                            "idempotent: it may or may not have taken effect",
                        }
                    )
            elif status is Status.ROLLING_BACK:
                self.undo_first.append(node)  # its rollback is finished before anything runs
            elif status in (Status.FAILED, Status.ROLLED_BACK, Status.WAITING):
                self.emit(
                    {
                        "t": "step",
                        "id": node,
                        "status": "pending",
                        "reason": f"was {status.value}",
                        "reset_attempts": True,
                    }
                )
            elif status is Status.SKIPPED and (
                st.reason != "when"
                or new_run
                or any(self.status(p) not in DONE for p in self.dag.ancestors([node]))
            ):
                self.emit(
                    {
                        "t": "step",
                        "id": node,
                        "status": "pending",
                        "reason": f"was skipped ({st.reason})",
                    }
                )

    # -- the loop -------------------------------------------------------------------------
    def push_ready(self, nodes: list[str]) -> None:
        """Queue the unblocked steps that this run is to start (pending, in scope)."""
        for n in nodes:
            if n in self.scope and self.status(n) is Status.PENDING:
                heapq.heappush(self.ready, (self.countdown.rank[n], n))

    def done(self, node: str) -> None:
        """``node`` succeeded or was skipped by ``when``: what it unblocks may start."""
        self.push_ready(self.countdown.finish(node))

    def loop(self) -> None:
        self.countdown = Countdown(
            self.dag.graph, self.dag.topo, self.dag.is_step, lambda n: self.status(n) in DONE
        )
        self.push_ready(self.countdown.unblocked())
        while True:
            self.read_decisions()
            started: list[Job] = []
            while (
                self.ready
                and self.stopping is None
                and self.interrupted_at is None
                and len(self.running) + len(started) < self.max_parallel
            ):
                _, node = heapq.heappop(self.ready)
                if self.status(node) is not Status.PENDING:
                    continue  # skipped as `upstream` since it was queued
                job = self.prepare(self.rb.instances[node])
                if job is not None:
                    started.append(job)
            self.flush()
            for job in started:
                self.submit(job)
            if not self.running:
                if self.ready and self.stopping is None and self.interrupted_at is None:
                    continue
                break
            for result in self.wait_results():
                self.running.pop(result.node, None)
                self.handle(result)

    def read_decisions(self) -> bool:
        """The decisions written beside this run since it last looked (``approve`` and
        ``resolve`` never take its lock: SPEC §11): a waiting step that got one is evaluated
        again (an approval step counts its approvals, a gate reads its decision); a step
        left unknown that was resolved goes on as resolved."""
        if self.stopping is not None or self.interrupted_at is not None:
            return False
        # while steps are queued or running, at most every DECISIONS_EVERY seconds: a decision
        # is about a step that waits, which a few milliseconds do not change, and a read of
        # the state per step is a round trip on PostgreSQL. Before the loop would end (nothing
        # queued, nothing running) always, so that no decision is left unread
        now = time.monotonic()
        if (self.ready or self.running) and now - self._decisions_read < DECISIONS_EVERY:
            return False
        self._decisions_read = now
        decided = sorted(self.s.store.refresh())
        for node in decided:
            if node not in self.scope or node in self.running:
                continue
            status = self.status(node)
            if status is Status.WAITING:
                self.emit(
                    {
                        "t": "step",
                        "id": node,
                        "status": "pending",
                        "reason": "a decision was recorded while the run went on",
                    }
                )
                if self.countdown.left.get(node, 0) == 0:
                    self.push_ready([node])
            elif status in DONE:
                self.done(node)
            elif status is Status.PENDING and self.countdown.left.get(node, 0) == 0:
                self.push_ready([node])
        return bool(decided)

    def prepare(self, inst: Instance) -> Job | None:
        """when, render, validate: a Job to run, or None when the step ended here."""
        node = inst.id
        ctx = self.template_context(inst)
        try:
            if self.when_says_skip(inst.step.when, ctx):
                self.emit({"t": "step", "id": node, "status": "skipped", "reason": "when"})
                self.done(node)
                return None
            members = self.wave_members(inst, ctx)
            # a foreach step's `with` is rendered per member, with `member` bound
            params = {} if inst.step.foreach else self.render_params(inst.step.call, ctx)
        except (ActionFailed, TemplateError) as exc:
            self.emit(
                {"t": "step", "id": node, "status": "running", "attempt": 1, "digest": inst.digest}
            )
            self.failed(inst, Result(node, Outcome.FAILED, 1, error=str(exc)))
            return None
        st = self.s.state.steps.get(node)
        attempt = (st.attempts if st else 0) + 1
        self.first_attempt[node] = attempt
        self.emit(
            {
                "t": "step",
                "id": node,
                "status": "running",
                "attempt": attempt,
                "digest": inst.digest,
            }
        )
        spec = inst.step.foreach
        if spec is not None and members is not None:
            attempt_no = ctx["wave"]["attempt"]
            return self.foreach_job(node, inst.step.call, spec, ctx, members, attempt_no)
        scope = (node, str(self.wave_attempt(inst)))
        return self.job(node, inst.step.call, params, ctx, members=members, scope=scope)

    def wave_members(self, inst: Instance, ctx: dict[str, Any]) -> Callable[[], Any] | None:
        """Start the cohort wave of ``inst`` when it has not started in this run (its attempt
        in the template context), and the members its step works on."""
        if inst.phase.cohort is None or inst.wave is None:
            return None
        try:
            attempt, note = rcohorts.begin_wave(
                self.rb, self.s.store, inst, self.run_id, self.s.variables, self.secret_view
            )
        except InvalidInput as exc:
            raise ActionFailed(f"wave {inst.wave.id} cannot start: {exc.message}") from None
        if note:
            self.s.reporter.notice(note)
        ctx["wave"] = {**ctx["wave"], "attempt": attempt}
        name = rcohorts.cohort_of(inst)
        if name is None:
            return None
        cohort = self.rb.cohorts[name]
        store, wave, node, run = self.s.store, inst.wave.id, inst.id, self.run_id
        return lambda: rcohorts.WaveMembers(store, cohort, wave, attempt, node, run)

    def marks(self, inst: Instance, r: Result, succeeded: bool) -> Callable[[Any], None] | None:
        if r.members is None:
            return None
        # a foreach step's members done are marked whatever the step's outcome: each of them
        # was called (moved) for real; under `continue`, the members the action handled
        keep_going = inst.step.on_failure is OnFailure.CONTINUE or inst.step.foreach is not None
        return rcohorts.mark_effect(r.members.mark(inst.step.marks, succeeded, keep_going))

    def handle(self, r: Result) -> None:
        inst = self.rb.instances[r.node]
        attempts = self.first_attempt.get(r.node, 1) - 1 + r.attempts
        if r.outcome is Outcome.SUCCEEDED:
            self.emit(
                {
                    "t": "step",
                    "id": r.node,
                    "status": "succeeded",
                    "attempt": attempts,
                    "outputs": r.outputs,
                    "digest": inst.digest,
                    "duration": r.duration,
                },
                self.marks(inst, r, succeeded=True),
            )
            self.done(r.node)
        elif r.outcome is Outcome.WAITING:
            self.emit(
                {
                    "t": "step",
                    "id": r.node,
                    "status": "waiting",
                    "attempt": attempts,
                    "error": r.error,
                },
                self.marks(inst, r, succeeded=False),
            )
        elif r.outcome is Outcome.CANCELLED:
            if self.step_idempotent(inst):
                self.emit(
                    {
                        "t": "step",
                        "id": r.node,
                        "status": "pending",
                        "attempt": attempts,
                        "reason": "interrupted; idempotent: runs again",
                    }
                )
            else:
                self.emit(
                    {
                        "t": "step",
                        "id": r.node,
                        "status": "unknown",
                        "reason": "apply",
                        "attempt": attempts,
                        "error": "interrupted while running: it may or may not have taken effect",
                    }
                )
        else:
            self.failed(
                inst,
                Result(
                    r.node,
                    r.outcome,
                    attempts,
                    r.outputs,
                    r.error,
                    r.details,
                    r.duration,
                    r.members,
                ),
            )

    # -- failures ------------------------------------------------------------------------
    def failed(self, inst: Instance, r: Result) -> None:
        self.emit(
            {
                "t": "step",
                "id": r.node,
                "status": "failed",
                "attempt": r.attempts,
                "error": r.error,
                "details": r.details,
                "outputs": r.outputs,
                "duration": r.duration,
            },
            self.marks(inst, r, succeeded=False),
        )
        policy = inst.step.on_failure
        # the decision is durable with the failure itself: a crash between them would lose
        # the rollback, and a resume would retry the step instead
        if policy is OnFailure.ROLLBACK_WAVE and inst.wave is not None:
            self.decide("rollback-wave", inst.phase.id, inst.wave.id, r.node)
        elif policy is OnFailure.ROLLBACK:
            self.decide("rollback", None, None, r.node)
        self.flush()
        self.failures.append((r.node, r.error or "failed"))
        self.fire_contingencies(inst, r)
        if policy is OnFailure.CONTINUE:
            for d in sorted(self.dag.descendants([r.node]) & self.scope):
                if self.status(d) in (Status.PENDING, Status.WAITING):
                    self.emit(
                        {
                            "t": "step",
                            "id": d,
                            "status": "skipped",
                            "reason": "upstream",
                            "error": f"{r.node} failed",
                        }
                    )
        else:
            if policy is OnFailure.ROLLBACK_WAVE and inst.wave is not None:
                self.wave_rollbacks.append((inst.phase.id, inst.wave.id))
            want = policy.value
            if _STRENGTH[want] > _STRENGTH[self.stopping]:
                self.stopping = want
        self.flush()

    def decide(self, policy: str, phase: str | None, wave: str | None, node: str) -> None:
        """Journal an on-failure decision before acting on it: a crash or Ctrl-C before the
        rollback is done leaves it pending, and the next apply finishes it first."""
        self.emit(
            {
                "t": "decision",
                "run": self.run_id,
                "policy": policy,
                "phase": phase,
                "wave": wave,
                "step": node,
                "status": "pending",
            }
        )

    def fire_contingencies(self, inst: Instance, r: Result) -> None:
        failed_step = {
            "id": inst.id,
            "error": r.error,
            "phase": inst.phase.id,
            "wave": inst.wave.id if inst.wave else None,
            "action": inst.step.action,
            "outputs": r.outputs,
        }
        for rid in inst.step.risks:
            risk = self.rb.risk_by_id.get(rid)
            if risk is None:
                continue
            for cid in risk.contingencies:
                run = self.s.state.run
                c = self.rb.contingency_by_id.get(cid)
                attempt = self.wave_attempt(inst)
                if c is None or run is None or (cid, inst.id, attempt) in run.firings:
                    continue  # once per (contingency, step instance, wave attempt)
                base = {
                    "t": "contingency",
                    "id": cid,
                    "risk": rid,
                    "step": inst.id,
                    "run": run.id,
                    "attempt": attempt,
                }
                self.emit({**base, "status": "running"})
                self.flush()
                ctx = self.template_context(None, failed_step)
                # its records (a page, a message) are this firing's: the next firing, in this
                # run or another, sends again, with Message-IDs of its own
                firing = f"{cid}@{run.id}/{inst.id}/{attempt}"
                try:
                    params = self.render_params(c.call, ctx)
                    scope = (cid, f"{inst.id}/{attempt}")  # the firing
                    job = self.job(cid, c.call, params, ctx, firing, scope=scope)
                    result = self.run_inline(job)
                except ActionFailed as exc:
                    result = Result(cid, Outcome.FAILED, 1, error=str(exc))
                status = "succeeded" if result.outcome is Outcome.SUCCEEDED else "failed"
                self.emit(
                    {
                        **base,
                        "status": status,
                        "error": result.error,
                        "outputs": result.outputs,
                        "duration": result.duration,
                    }
                )
                self.flush()

    # -- the end --------------------------------------------------------------------------
    def after(self) -> list[str]:
        """Carry out the journaled on-failure decisions of this run (made now, or left pending
        by a crash or an interrupt); returns the steps that failed to roll back."""
        if self.interrupted_at is not None:
            return []
        pending = self.s.state.pending_decisions()
        if not pending:
            return []
        live = (Status.SUCCEEDED, Status.ROLLING_BACK)

        def undo(n: str) -> bool:
            return self.status(n) in live or (
                self.status(n) is Status.FAILED and partial_effects(self.rb.instances[n])
            )

        if any(policy == "rollback" for policy, _, _ in pending):
            self.stopping = "rollback"
            targets = {n for n in self.rb.instances if undo(n)}
        else:
            self.stopping = "rollback-wave"
            waves = {(phase, wave) for _, phase, wave in pending}
            targets = {
                n
                for n, inst in self.rb.instances.items()
                if inst.wave is not None and (inst.phase.id, inst.wave.id) in waves and undo(n)
            }
        self.s.reporter.notice(f"on_failure: {self.stopping}: rolling back {len(targets)} step(s)")
        rb = Rollback(self.s, self.max_parallel, self.grace, resources=self.resources)
        try:
            failures = rb.run(targets)
        finally:
            rb.close(keep_resources=True)
        self.left_in_place = sorted(rb.left_in_place)
        if rb.interrupted_at is None:
            # members are compensated by what the state says is undone, whoever undid it (a
            # crash may have come between the last rollback and the compensation)
            waves_done = {(phase, wave) for _, phase, wave in pending}
            nodes = [
                n
                for n, inst in self.rb.instances.items()
                if inst.wave is not None
                and (self.stopping == "rollback" or (inst.phase.id, inst.wave.id) in waves_done)
            ]
            rcohorts.compensate(self.rb, self.s.store, nodes, self.run_id, self.s.reporter.notice)
            for policy, phase, wave in pending:
                self.emit(
                    {
                        "t": "decision",
                        "run": self.run_id,
                        "policy": policy,
                        "phase": phase,
                        "wave": wave,
                        "status": "done",
                    }
                )
            self.flush()
        return failures

    def outcome(self, rollback_failures: list[str]) -> ApplyOutcome | None:
        state = self.s.state
        run = state.run
        assert run is not None
        counts: dict[str, int] = {}
        for n in self.rb.instances:
            counts[self.status(n).value] = counts.get(self.status(n).value, 0) + 1
        out = ApplyOutcome(Exit.OK, run.id, counts)
        for n in self.rb.instances:
            st = state.steps.get(n)
            if st is None:
                continue
            if st.status is Status.FAILED:
                out.failed.append((n, st.error or ""))
            elif st.status is Status.WAITING:
                out.waiting.append((n, st.error or ""))
            elif st.status is Status.UNKNOWN:
                out.unknown.append(n)
                if st.reason == "rollback":
                    out.unknown_in_rollback.append(n)
            elif st.status is Status.ROLLED_BACK and st.run == run.id:
                out.rolled_back.append(n)
            elif st.status is Status.ROLLBACK_FAILED:
                out.rollback_failed.append(n)
            elif (
                st.status is Status.SUCCEEDED
                and st.digest
                and st.digest != self.rb.instances[n].digest
            ):
                out.changed.append(n)
        out.fired = sorted(run.fired)
        out.left_in_place = list(self.left_in_place)
        out.rollbacks = run.rollbacks
        for node, error in self.failures:
            if (node, error) not in out.failed and self.status(node) is not Status.FAILED:
                out.failed.append((node, error))
        skipped_upstream = any(
            st.status is Status.SKIPPED and st.reason == "upstream" for st in state.steps.values()
        )
        if self.interrupted_at is not None:
            status, out.exit = RunStatus.INTERRUPTED, Exit.INTERRUPTED
        elif self.failures or out.failed or rollback_failures or skipped_upstream:
            everything_undone = (
                self.stopping == "rollback" and not rollback_failures and not self.left_in_place
            )
            status = RunStatus.ROLLED_BACK if everything_undone else RunStatus.FAILED
            out.exit = Exit.FAILED
        elif out.waiting or out.unknown or self._blocked():
            status, out.exit = RunStatus.PAUSED, Exit.PAUSED
        else:
            status, out.exit = RunStatus.SUCCEEDED, Exit.OK
            if run.fired or run.rollbacks:
                out.compensated, out.exit = True, Exit.FAILED  # SPEC §4: never a plain success
        if self.options.only and status is RunStatus.SUCCEEDED:
            pending_elsewhere = any(
                self.status(n) not in DONE for n in self.rb.instances if n not in self.scope
            )
            if pending_elsewhere:
                status = RunStatus.PAUSED  # the run goes on with the next apply
        closing = {"t": "run", "run": run.id, "status": status.value}
        if status is RunStatus.PAUSED:
            # a decision committed before this record must not be left unread behind it: the
            # read and the write in one transaction, which `approve` and `resolve` wait for
            # (their writes take the same lock); None: one came in, the run goes on with it
            with self.s.store.exclusive():
                self.flush()
                self._decisions_read = float("-inf")
                if self.read_decisions():
                    return None
                self.emit(closing)
                self.flush()
        else:
            self.emit(closing)
            self.flush()
        out.cohorts = rcohorts.outcomes(self.rb, self.s.store)
        out.short = sum(s.count for c in out.cohorts for s in c.short)
        if out.short and out.exit is Exit.OK:
            out.exit = Exit.FAILED  # SPEC §7: a finished wave needs every member at its target
        return out

    def _blocked(self) -> bool:
        return any(self.status(n) is Status.PENDING for n in self.scope)

    def execute(self) -> ApplyOutcome:
        self.check_only()
        if not self.begin():
            run = self.s.state.run
            return ApplyOutcome(
                Exit.OK, run.id if run else "", nothing_to_do=True, changed=self._changed()
            )
        with self.signals():
            if self.s.state.pending_decisions():
                # a rollback decided before a crash or an interrupt: finish it, then stop as
                # that apply would have (the next apply goes on)
                self.s.reporter.notice(
                    "a rollback decided before the run stopped is not finished: finishing it first"
                )
            else:
                if self.undo_first:
                    self.finish_undo()
                self.loop()
            failures = self.after()
        out = self.outcome(failures)
        while out is None:  # decisions recorded as it was pausing: it goes on with them
            with self.signals():
                self.loop()
                failures = self.after()
            out = self.outcome(failures)
        return out

    def finish_undo(self) -> None:
        """Steps found rolling back after a crash: their rollback is finished (re-run when it
        is idempotent, else they become `unknown`) before the run goes on (SPEC §6)."""
        nodes = set(self.undo_first)
        self.s.reporter.notice(
            f"finishing the rollback of {len(nodes)} step(s) cut by a crash: "
            + ", ".join(sorted(nodes))
        )
        rb = Rollback(self.s, self.max_parallel, self.grace, resources=self.resources)
        try:
            rb.run(nodes)
        finally:
            rb.close(keep_resources=True)
        self._fixups(new_run=False)
        self.flush()

    def _changed(self) -> list[str]:
        out = []
        for n, inst in self.rb.instances.items():
            st = self.s.state.steps.get(n)
            if st and st.status is Status.SUCCEEDED and st.digest and st.digest != inst.digest:
                out.append(n)
        return out


def _user(store: Store) -> str:
    """Who starts the run: the OS user from the user database (``session_user`` on
    PostgreSQL), as ``approve`` records it (``allow_self: false`` compares the two), never
    ``$USER``/``$LOGNAME``."""
    return store.identity()
