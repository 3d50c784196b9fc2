"""Rollback in reverse dependency order: a step's rollback runs only after the rollbacks of
every step (in scope) that depended on it, in parallel where independent.  A failed rollback
is ``rollback_failed`` and the steps it protects stay as they are (nothing is rolled back past
it).  Checkpointed and resumable like apply."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from ..actions import registry
from ..errors import ActionFailed
from ..format.cohorts import call_cohort
from ..format.model import Instance
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


def scoped_succs(dag: Dag, node: str, scope: set[str]) -> set[str]:
    """The nearest steps in ``scope`` that depend on ``node`` (looking through barriers and
    steps outside the scope); farther ones are covered by those."""
    return dag.nearest(node, dag.succs, scope.__contains__)


def rollback_groups(dag: Dag, scope: set[str]) -> list[list[str]]:
    """Rollback order in parallel groups: the latest dependents first."""
    depth: dict[str, int] = {}
    for n in reversed(dag.topological()):
        if n in scope:
            after = [depth[d] + 1 for d in scoped_succs(dag, n, scope) if d in depth]
            depth[n] = max(after, default=0)
    out: dict[int, list[str]] = {}
    for n in sorted(scope, key=dag.order_index.__getitem__, reverse=True):
        out.setdefault(depth[n], []).append(n)
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

    # -- what and in which order ---------------------------------------------------------
    def expand(self, targets: set[str]) -> set[str]:
        """The targets plus every succeeded step that depends on them (undone first)."""
        live = {Status.SUCCEEDED, Status.ROLLING_BACK, Status.ROLLBACK_FAILED}
        grown = set(targets) | self.dag.descendants(targets)
        return {n for n in grown if self.status(n) in live}

    def undo(self, inst: Instance) -> Undo:
        return undo_for(inst)

    # -- running -------------------------------------------------------------------------
    def ready(self, node: str) -> bool:
        if self.status(node) is not Status.SUCCEEDED:
            return False
        return all(self.status(d) is Status.ROLLED_BACK for d in self._deps.get(node, set()))

    def run(self, targets: set[str]) -> list[str]:
        """Roll back ``targets`` (already expanded); returns the steps whose rollback failed."""
        self.scope = set(targets)
        self._deps = {n: scoped_succs(self.dag, n, self.scope) for n in self.scope}
        # who waits for whom: when d is rolled back, the steps in waiters[d] may be ready
        waiters: dict[str, set[str]] = {n: set() for n in self.scope}
        for n, deps in self._deps.items():
            for d in deps:
                waiters[d].add(n)
        for n in sorted(self.scope):
            if self.status(n) is Status.ROLLING_BACK:
                inst = self.rb.instances[n]
                rb_call = inst.step.rollback
                if rb_call is not None and self.idempotent(rb_call):
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
            elif self.status(n) is Status.ROLLBACK_FAILED:
                self.emit(
                    {"t": "step", "id": n, "status": "succeeded", "reason": "rollback retried"}
                )
        self.flush()
        heap: list[tuple[int, str]] = []
        order = {n: i for i, n in enumerate(reversed(self.dag.topological()))}

        def push(nodes: set[str]) -> None:
            for n in nodes:
                if self.ready(n):
                    heapq.heappush(heap, (order[n], n))

        push(self.scope)
        while True:
            started: list[Job] = []
            while (
                heap
                and self.interrupted_at is None
                and (len(self.running) + len(started) < self.max_parallel)
            ):
                _, node = heapq.heappop(heap)
                if not self.ready(node):
                    continue
                job = self.start(node)
                if job is None:
                    push(waiters[node])
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
                push(waiters[r.node])
        self.flush()
        undone = [n for n in self.scope if self.status(n) is Status.ROLLED_BACK]
        if undone:
            rcohorts.compensate(self.rb, self.s.store, undone, self.run_id, self.s.reporter.notice)
        return self.failed_nodes

    def start(self, node: str) -> Job | None:
        inst = self.rb.instances[node]
        undo = self.undo(inst)
        if undo.kind != "action":
            self.emit(
                {
                    "t": "step",
                    "id": node,
                    "status": "rolled_back",
                    "note": undo.description,
                    "phase": "rollback",
                }
            )
            if undo.kind == "missing":
                self.s.reporter.notice(f"warning: {node} has no rollback: its changes stay")
            return None
        call = inst.step.rollback
        assert call is not None
        ctx = self.template_context(inst)
        self.emit({"t": "step", "id": node, "status": "rolling_back", "phase": "rollback"})
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
        if r.outcome is Outcome.SUCCEEDED:
            self.emit(
                {
                    "t": "step",
                    "id": r.node,
                    "status": "rolled_back",
                    "phase": "rollback",
                    "rollback_outputs": r.outputs,
                    "duration": r.duration,
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
