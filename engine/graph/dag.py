"""The execution DAG, built by SPEC §2's ordering rules.

Nodes are step instances (``copy[pilot]``) plus one *barrier* per phase (``phase:ID``) and per
wave (``wave:PHASE.WAVE``): a barrier is done when everything before it is.  Barriers keep the
edge count linear: "every step of wave k+1 after every step of wave k" and "this phase after
that one" become one node each instead of |k| × |k+1| edges.  Everything outside this module
asks about steps; barriers are an internal detail (``is_step``).

The edges are built here in plain Python (so that ``validate`` can find cycles without importing
networkx); ``graph`` gives the networkx ``DiGraph`` that orders execution and rollback.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..errors import Problem
from ..format.model import Instance, Phase, Runbook, instance_id

if TYPE_CHECKING:
    import networkx as nx


def phase_node(phase_id: str) -> str:
    return f"phase:{phase_id}"


def wave_node(phase_id: str, wave_id: str) -> str:
    return f"wave:{phase_id}.{wave_id}"


@dataclass(frozen=True)
class NeedsProblem:
    node: str
    name: str
    index: int


class Dag:
    def __init__(self, runbook: Runbook) -> None:
        self.runbook = runbook
        self.instances: dict[str, Instance] = runbook.instances
        self.preds: dict[str, list[str]] = {}
        self._edges: set[tuple[str, str]] = set()  # membership test: preds lists can be long
        self.order_index: dict[str, int] = {}
        self.unknown_needs: list[NeedsProblem] = []
        self._build()

    # -- construction -------------------------------------------------------------------
    def _add(self, node: str) -> None:
        if node not in self.preds:
            self.order_index[node] = len(self.order_index)
            self.preds[node] = []

    def _edge(self, before: str, after: str) -> None:
        if before != after and (before, after) not in self._edges:
            self._edges.add((before, after))
            self.preds[after].append(before)

    def _build(self) -> None:
        rb = self.runbook
        for node in self.instances:
            self._add(node)
        # barrier nodes follow their phase's steps in the order index
        for phase in rb.phases:
            for wave in phase.waves:
                self._add(wave_node(phase.id, wave.id))
            self._add(phase_node(phase.id))
        previous: Phase | None = None
        for phase in rb.phases:
            if phase.needs is None:
                deps = [phase_node(previous.id)] if previous else []
            else:
                deps = []
                for i, name in enumerate(phase.needs):
                    deps.extend(self._resolve(name, phase_node(phase.id), i, None))
            self._build_phase(phase, deps)
            previous = phase

    def _resolve(self, name: str, node: str, index: int, wave_id: str | None) -> list[str]:
        """What a ``needs`` entry names: a phase, a step, or every instance of a wave step."""
        rb = self.runbook
        if name in rb.phase_by_id:
            return [phase_node(name)]
        step = rb.steps.get(name)
        if step is None:
            self.unknown_needs.append(NeedsProblem(node, name, index))
            return []
        target = rb.phase_by_id[step.phase]
        if not target.waves:
            return [name]
        owner = self.instances.get(node)
        if wave_id is not None and owner is not None and owner.phase.id == target.id:
            return [instance_id(name, wave_id)]  # same phase: the same wave's instance
        return [instance_id(name, w.id) for w in target.waves]

    def _build_phase(self, phase: Phase, deps: list[str]) -> None:
        end = phase_node(phase.id)
        groups: list[tuple[str | None, list[str]]] = []
        if phase.waves:
            entry = deps
            for wave in phase.waves:
                nodes = [instance_id(s.id, wave.id) for s in phase.steps]
                self._chain(phase, nodes, entry, wave.id)
                barrier = wave_node(phase.id, wave.id)
                for n in nodes:
                    self._edge(n, barrier)
                if not nodes:
                    for d in entry:
                        self._edge(d, barrier)
                entry = [barrier]
                groups.append((wave.id, nodes))
            self._edge(wave_node(phase.id, phase.waves[-1].id), end)
        else:
            nodes = [s.id for s in phase.steps]
            self._chain(phase, nodes, deps, None)
            for n in nodes:
                self._edge(n, end)
            if not nodes:
                for d in deps:
                    self._edge(d, end)

    def _chain(self, phase: Phase, nodes: list[str], entry: list[str], wave_id: str | None) -> None:
        for i, (node, step) in enumerate(zip(nodes, phase.steps, strict=True)):
            if phase.parallel or i == 0:
                for d in entry:
                    self._edge(d, node)
            else:
                self._edge(nodes[i - 1], node)
            for j, name in enumerate(step.needs):
                for d in self._resolve(name, node, j, wave_id):
                    self._edge(d, node)

    # -- queries --------------------------------------------------------------------------
    def is_step(self, node: str) -> bool:
        return node in self.instances

    @cached_property
    def succs(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.preds}
        for node, preds in self.preds.items():
            for p in preds:
                out[p].append(node)
        return out

    def find_cycle(self) -> list[str] | None:
        """One cycle as ``[a, b, c, a]``, or None (plain Python: validate needs no networkx)."""
        indeg = {n: len(p) for n, p in self.preds.items()}
        ready = [n for n, d in indeg.items() if d == 0]
        seen = 0
        while ready:
            n = ready.pop()
            seen += 1
            for s in self.succs[n]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    ready.append(s)
        if seen == len(indeg):
            return None
        stuck = {n for n, d in indeg.items() if d > 0}
        # walk backwards through stuck predecessors until a node repeats
        node = min(stuck, key=self.order_index.__getitem__)
        path: list[str] = []
        index: dict[str, int] = {}
        while node not in index:
            index[node] = len(path)
            path.append(node)
            node = next(p for p in self.preds[node] if p in stuck)
        cycle = path[index[node] :]
        cycle.reverse()
        return [*cycle, cycle[0]]

    def topological(self) -> list[str]:
        """Every node, dependencies first, ties broken by document order."""
        indeg = {n: len(p) for n, p in self.preds.items()}
        heap = [(self.order_index[n], n) for n, d in indeg.items() if d == 0]
        heapq.heapify(heap)
        out: list[str] = []
        while heap:
            _, n = heapq.heappop(heap)
            out.append(n)
            for s in self.succs[n]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    heapq.heappush(heap, (self.order_index[s], s))
        return out

    def step_order(self) -> list[str]:
        return [n for n in self.topological() if self.is_step(n)]

    def generations(self, nodes: Iterable[str] | None = None) -> list[list[str]]:
        """Steps grouped by what can run side by side: group k holds the steps whose longest
        chain of steps before them has length k."""
        depth: dict[str, int] = {}
        for n in self.topological():
            d = max((depth[p] + (1 if self.is_step(p) else 0) for p in self.preds[n]), default=0)
            depth[n] = d
        wanted = set(nodes) if nodes is not None else None
        groups: dict[int, list[str]] = {}
        for n in self.topological():
            if self.is_step(n) and (wanted is None or n in wanted):
                groups.setdefault(depth[n], []).append(n)
        return [groups[k] for k in sorted(groups)]

    def _walk(self, start: Iterable[str], edges: dict[str, list[str]]) -> set[str]:
        seen: set[str] = set()
        stack = list(start)
        while stack:
            n = stack.pop()
            for m in edges[n]:
                if m not in seen:
                    seen.add(m)
                    stack.append(m)
        return seen

    def ancestors(self, nodes: Iterable[str]) -> set[str]:
        """Steps that must be done before any of ``nodes`` (steps only)."""
        return {n for n in self._walk(nodes, self.preds) if self.is_step(n)}

    def descendants(self, nodes: Iterable[str]) -> set[str]:
        """Steps that depend, directly or not, on any of ``nodes`` (steps only)."""
        return {n for n in self._walk(nodes, self.succs) if self.is_step(n)}

    def nearest(
        self, node: str, edges: dict[str, list[str]], stop: Callable[[str], bool]
    ) -> set[str]:
        """The first nodes met from ``node`` along ``edges`` for which ``stop`` holds, walking
        through the others (barriers, or steps outside a scope)."""
        out: set[str] = set()
        stack = list(edges[node])
        seen: set[str] = set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if stop(n):
                out.add(n)
            else:
                stack.extend(edges[n])
        return out

    def step_preds(self, node: str) -> set[str]:
        """The nearest steps before ``node``, looking through barriers."""
        return self.nearest(node, self.preds, self.is_step)

    def step_succs(self, node: str) -> set[str]:
        """The nearest steps after ``node``, looking through barriers."""
        return self.nearest(node, self.succs, self.is_step)

    def edges(self) -> Iterator[tuple[str, str]]:
        for node, preds in self.preds.items():
            for p in preds:
                yield p, node

    @cached_property
    def graph(self) -> nx.DiGraph[Any]:
        """The networkx DiGraph (barriers included, with ``kind`` = step|phase|wave)."""
        import networkx as nx

        g: nx.DiGraph[Any] = nx.DiGraph()
        for n in self.preds:
            inst = self.instances.get(n)
            if inst is not None:
                g.add_node(
                    n,
                    kind="step",
                    phase=inst.phase.id,
                    wave=inst.wave.id if inst.wave else None,
                    action=inst.step.action,
                )
            else:
                g.add_node(n, kind=n.split(":", 1)[0])
        g.add_edges_from(self.edges())
        return g

    def describe_node(self, node: str) -> str:
        """A node as a person reads it: the step id, or ``(end of phase X)``."""
        if self.is_step(node):
            return node
        kind, _, rest = node.partition(":")
        return f"(end of {kind} {rest})"

    def cycle_problem(self, cycle: list[str]) -> Problem:
        rb = self.runbook
        shown = []
        for n in cycle:
            inst = self.instances.get(n)
            if inst is not None:
                line = rb.source.at(inst.step.path).line
            else:
                pid = n.split(":", 1)[1].split(".", 1)[0]
                line = rb.source.at(rb.phase_by_id[pid].path).line
            shown.append(f"{self.describe_node(n)} (line {line})")
        first = self.instances.get(cycle[0])
        path = (
            first.step.path
            if first
            else rb.phase_by_id[cycle[0].split(":", 1)[1].split(".", 1)[0]].path
        )
        return rb.source.problem(path, "dependency cycle: " + " -> ".join(shown), code="cycle")
