"""Rollback in reverse dependency order: a step's rollback runs only after the rollbacks of
every step (in scope) that depended on it, in parallel where independent.  A failed rollback
is ``rollback_failed`` and the steps it protects stay as they are (nothing is rolled back past
it).  Checkpointed and resumable like apply.

The order is Kahn's algorithm on the reversed networkx DAG (``graph/countdown.py``): the steps
in scope are done when rolled back, every other node (barriers, steps outside the scope)
passes through; ties go to the latest step in the execution order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from ..actions import registry
from ..errors import ActionFailed
from ..format.cohorts import call_cohort
from ..format.model import Instance
from ..graph.countdown import Countdown
from ..graph.dag import Dag
from ..state.status import Status
from . import cohorts as rcohorts
from .executor import Job, Outcome, Result
from .runner import DEFAULT_GRACE, Runner, Session


@dataclass(frozen=True)
class Undo:
    """What rolling back one step means."""

    node: str
    kind: str  # "action" | "none" | "nothing" (gate/read) | "missing" (changes, no rollback)
    description: str


def undo_for(inst: Instance) -> Undo:
    """What rolling back ``inst`` runs (or why nothing)."""
    reg = registry()
    step = inst.step
    if step.rollback is not None:
        action = reg.get(step.rollback.action)
        desc = step.rollback.description or action.describe(step.rollback.params)
        return Undo(inst.id, "action", f"{step.rollback.action}: {desc}")
    if step.rollback_declared:
        return Undo(inst.id, "none", "nothing to undo (rollback: none)")
    if step.action in reg and not reg.get(step.action).changes:
        return Undo(inst.id, "nothing", f"nothing to undo ({step.action} changes nothing)")
    return Undo(inst.id, "missing", "NO ROLLBACK DEFINED: its changes stay")


def partial_effects(inst: Instance) -> bool:
    """A failed step that works on a wave's members and declares a rollback: it may have done
    part of its work (copied some batches), and undoing it is confined to those members."""
    from .cohorts import cohort_of

    return inst.step.rollback is not None and cohort_of(inst) is not None


def per_member_undo(inst: Instance) -> bool:
    """A ``foreach`` step with a rollback: undone once per member, each call recorded, so a
    crash mid-way is resumed member by member (the records decide, as for the step itself)."""
    return inst.step.foreach is not None and inst.step.rollback is not None


def rollback_left_unknown(state: Any, inst: Instance) -> bool:
    """``inst`` is `unknown` from a rollback whose members decide (cut by a crash)."""
    st = state.steps.get(inst.id)
    return (
        st is not None
        and st.status is Status.UNKNOWN
        and st.reason == "rollback"
        and per_member_undo(inst)
    )


def rollback_groups(dag: Dag, scope: set[str]) -> list[list[str]]:
    """Rollback order in parallel groups, the latest dependents first: group k holds the steps
    of ``scope`` with k steps of ``scope`` after them on their longest path (networkx order,
    reversed; nodes outside the scope count nothing)."""
    succ = dag.graph.succ
    chain: dict[str, int] = {}  # steps of scope on the longest path from the node, itself included
    for n in reversed(dag.topo):
        chain[n] = max((chain[s] for s in succ[n]), default=0) + (n in scope)
    out: dict[int, list[str]] = {}
    for n in sorted(scope, key=dag.rank.__getitem__, reverse=True):
        out.setdefault(chain[n] - 1, []).append(n)
    return [out[k] for k in sorted(out)]


class Rollback(Runner):
    def __init__(
        self,
        session: Session,
        max_parallel: int,
        grace: float = DEFAULT_GRACE,
        resources: object | None = None,
    ) -> None:
        super().__init__(session, max_parallel, grace)
        if resources is not None:
            self.resources = resources  # type: ignore[assignment]
        self.scope: set[str] = set()
        self.failed_nodes: list[str] = []
        # steps whose changes stay: no rollback declared (SPEC §11: they stay `succeeded`,
        # the rollback is not clean); the steps before them are still undone
        self.left_in_place: list[str] = []

    # -- what and in which order ---------------------------------------------------------
    def expand(self, targets: set[str]) -> set[str]:
        """The targets plus every succeeded step that depends on them (undone first)."""
        live = {Status.SUCCEEDED, Status.ROLLING_BACK, Status.ROLLBACK_FAILED}
        grown = set(targets) | self.dag.descendants(targets)
        return {
            n
            for n in grown
            if self.status(n) in live
            or (self.status(n) is Status.FAILED and partial_effects(self.rb.instances[n]))
            or rollback_left_unknown(self.s.state, self.rb.instances[n])
        }

    def undo(self, inst: Instance) -> Undo:
        return undo_for(inst)

    def undoable(self, node: str) -> bool:
        """Succeeded, or failed part way with its members touched and a rollback to undo what
        it did (a copy that failed after some batches: compensation needs it undone)."""
        status = self.status(node)
        if status is Status.SUCCEEDED:
            return True
        return status is Status.FAILED and partial_effects(self.rb.instances[node])

    # -- running -------------------------------------------------------------------------
    def run(self, targets: set[str]) -> list[str]:
        """Roll back ``targets`` (already expanded); returns the steps whose rollback failed."""
        self.scope = set(targets)
        for n in sorted(self.scope):
            if self.status(n) is Status.ROLLING_BACK:
                inst = self.rb.instances[n]
                rb_call = inst.step.rollback
                if per_member_undo(inst):
                    # its member records decide: members undone are not called again, the
                    # ones cut by the crash are called again when idempotent, else `unknown`
                    self.emit(
                        {
                            "t": "step",
                            "id": n,
                            "status": "succeeded",
                            "reason": "rollback resumed after a crash, member by member",
                        }
                    )
                elif rb_call is not None and self.idempotent(rb_call):
                    self.emit(
                        {
                            "t": "step",
                            "id": n,
                            "status": "succeeded",
                            "reason": "rollback resumed after a crash",
                        }
                    )
                else:
                    self.emit(
                        {
                            "t": "step",
                            "id": n,
                            "status": "unknown",
                            "reason": "rollback",
                            "error": "found rolling back after a crash and its rollback "
                            "is not idempotent",
                        }
                    )
            elif rollback_left_unknown(self.s.state, self.rb.instances[n]):
                # members left unknown by an earlier rollback: those resolved since are done
                # (or called again), those still unknown keep it waiting
                self.emit(
                    {
                        "t": "step",
                        "id": n,
                        "status": "succeeded",
                        "reason": "rollback resumed: its members decide",
                    }
                )
            elif self.status(n) is Status.ROLLBACK_FAILED:
                self.emit(
                    {"t": "step", "id": n, "status": "succeeded", "reason": "rollback retried"}
                )
        self.flush()
        countdown = Countdown(
            self.dag.graph.reverse(copy=False),
            reversed(self.dag.topo),
            self.scope.__contains__,
            lambda n: self.status(n) is Status.ROLLED_BACK,
        )
        heap: list[tuple[int, str]] = []

        def push(nodes: list[str]) -> None:
            for n in nodes:
                if self.undoable(n):
                    heapq.heappush(heap, (countdown.rank[n], n))

        def rolled_back(node: str) -> None:
            if self.status(node) is Status.ROLLED_BACK or node in self.left_in_place:
                push(countdown.finish(node))

        push(countdown.unblocked())
        while True:
            started: list[Job] = []
            while (
                heap
                and self.interrupted_at is None
                and (len(self.running) + len(started) < self.max_parallel)
            ):
                _, node = heapq.heappop(heap)
                if not self.undoable(node) or node in self.left_in_place:
                    continue
                job = self.start(node)
                if job is None:
                    rolled_back(node)
                else:
                    started.append(job)
            self.flush()
            for job in started:
                self.submit(job)
            if not self.running:
                if heap and self.interrupted_at is None:
                    continue
                break
            for r in self.wait_results():
                self.running.pop(r.node, None)
                self.finish(r)
                rolled_back(r.node)
        self.flush()
        return self.failed_nodes

    def compensate(self) -> None:
        """After the rollback: the members of each wave whose every member-touching step is
        undone are `compensated` (called once, by whoever ran this rollback)."""
        undone = [
            n
            for n in self.scope
            if self.status(n) is Status.ROLLED_BACK or per_member_undo(self.rb.instances[n])
        ]
        if undone:
            rcohorts.compensate(self.rb, self.s.store, undone, self.run_id, self.s.reporter.notice)

    def start(self, node: str) -> Job | None:
        inst = self.rb.instances[node]
        undo = self.undo(inst)
        if undo.kind == "missing":
            # nothing undoes it: it stays `succeeded`, and the rollback says so (exit 1)
            self.left_in_place.append(node)
            self.emit(
                {
                    "t": "event",
                    "id": node,
                    "kind": "rollback.left_in_place",
                    "data": {"reason": "no rollback declared: its changes stay"},
                }
            )
            self.s.reporter.notice(f"{node}: left in place: no rollback declared, its changes stay")
            return None
        if undo.kind != "action":
            self.emit(
                {
                    "t": "step",
                    "id": node,
                    "status": "rolled_back",
                    "note": undo.description,
                    "phase": "rollback",
                },
                rcohorts.revert_effect(self.rb, self.s.store, node),
            )
            return None
        call = inst.step.rollback
        assert call is not None
        ctx = self.template_context(inst)
        self.emit({"t": "step", "id": node, "status": "rolling_back", "phase": "rollback"})
        spec = inst.step.foreach
        if spec is not None and inst.wave is not None and inst.phase.cohort is not None:
            # undone once per member done in the attempt it undoes, each with its own key
            current = self.s.state.attempts.get((inst.phase.cohort, inst.wave.id))
            attempt = current.attempt if current is not None else 1
            store, c, wave, run = (
                self.s.store,
                self.rb.cohorts[spec.cohort],
                inst.wave.id,
                self.run_id,
            )
            undo_key = f"{node}#rollback"

            def members() -> Any:
                return rcohorts.WaveMembers(store, c, wave, attempt, undo_key, run, undoing=True)

            def done() -> set[Any]:
                calls = self.s.state.member_calls.get((node, attempt), {})
                return {k for k, v in calls.items() if v == "done"}

            return self.foreach_job(
                node, call, spec, ctx, members, attempt, records_key=undo_key, only=done
            )
        try:
            params = self.render_params(call, ctx)
        except ActionFailed as exc:
            self.finish(Result(node, Outcome.FAILED, 1, error=str(exc)))
            return None
        key = f"{node}#rollback"
        scope = (key, str(self.wave_attempt(inst)))
        return self.job(
            node, call, params, ctx, records_key=key, members=self.members(inst), scope=scope
        )

    def members(self, inst: Instance) -> Any:
        """The wave's members for a rollback that works on them (the attempt being undone)."""
        call = inst.step.rollback
        cohort = inst.phase.cohort
        if call is None or cohort is None or inst.wave is None or call_cohort(call) != cohort:
            return None
        current = self.s.state.attempts.get((cohort, inst.wave.id))
        if current is None:
            return None
        store, c, wave, run = self.s.store, self.rb.cohorts[cohort], inst.wave.id, self.run_id
        node = f"{inst.id}#rollback"
        return lambda: rcohorts.WaveMembers(
            store, c, wave, current.attempt, node, run, undoing=True
        )

    def finish(self, r: Result) -> None:
        failed_members = (r.outputs or {}).get("failed_members") or []
        failed_count = int((r.outputs or {}).get("failed") or 0)
        per_member = per_member_undo(self.rb.instances[r.node])
        if r.outcome is Outcome.SUCCEEDED and per_member and failed_count:
            # a per-member rollback whose members failed within max_failed: those members
            # are not undone, so the step is not rolled back (it is resumed for them)
            shown = ", ".join(f"{k}: {e}" for k, e in failed_members[:5])
            r = Result(
                r.node,
                Outcome.FAILED,
                r.attempts,
                error=f"{failed_count} member(s) not undone; first: {shown}",
                outputs=r.outputs,
            )
        if r.outcome is Outcome.SUCCEEDED:
            self.emit(
                {
                    "t": "step",
                    "id": r.node,
                    "status": "rolled_back",
                    "phase": "rollback",
                    "rollback_outputs": r.outputs,
                    "duration": r.duration,
                },
                rcohorts.revert_effect(self.rb, self.s.store, r.node),
            )
        elif r.outcome is Outcome.WAITING:
            # a per-member rollback with members cut by a crash: the operator decides each
            # (`resolve --member`), then `rollback` resumes it (exit 3 meanwhile)
            self.emit(
                {
                    "t": "step",
                    "id": r.node,
                    "status": "unknown",
                    "reason": "rollback",
                    "error": r.error,
                    "rollback_outputs": r.outputs,
                }
            )
        elif r.outcome is Outcome.CANCELLED:
            inst = self.rb.instances[r.node]
            call = inst.step.rollback
            if call is not None and self.idempotent(call):
                self.emit(
                    {
                        "t": "step",
                        "id": r.node,
                        "status": "succeeded",
                        "reason": "rollback interrupted; idempotent: runs again",
                    }
                )
            else:
                self.emit(
                    {
                        "t": "step",
                        "id": r.node,
                        "status": "unknown",
                        "reason": "rollback",
                        "error": "interrupted while rolling back",
                    }
                )
        else:
            self.failed_nodes.append(r.node)
            self.emit(
                {
                    "t": "step",
                    "id": r.node,
                    "status": "rollback_failed",
                    "phase": "rollback",
                    "error": r.error,
                    "details": r.details,
                }
            )

    def close(self, keep_resources: bool = False) -> None:
        if keep_resources:
            self.pool.shutdown(wait=True, cancel_futures=True)
        else:
            super().close()
