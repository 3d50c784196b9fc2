"""The order of a runbook's steps by SPEC §2's rules, in plain Python (no networkx).

Nodes are step instances (``copy[pilot]``) plus one *barrier* per phase (``phase:ID``) and per
wave (``wave:PHASE.WAVE``): a barrier is done when everything before it is.  Barriers keep the
edge count linear: "every step of wave k+1 after every step of wave k" and "this phase after
that one" become one node each instead of |k| × |k+1| edges.

``validate``, ``show`` and ``diff`` use this module as it is: they must start fast, and
``import networkx`` alone costs 0.2-0.56 s (SPEC §11).  ``apply``, ``rollback``, ``plan`` and
``graph`` order with the networkx DiGraph that ``graph/dag.py`` builds from these edges.  The
two walks here (``topological`` and ``find_cycle``) are property-tested against networkx
(tests/engine/test_order.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from ..errors import Problem
from .model import Instance, Phase, Runbook, instance_id


def phase_node(phase_id: str) -> str:
    return f"phase:{phase_id}"


def wave_node(phase_id: str, wave_id: str) -> str:
    return f"wave:{phase_id}.{wave_id}"


def barrier_phase(node: str) -> str:
    """The phase a barrier node ends, or lies in: ``wave:rollout.pilot`` -> ``rollout``."""
    return node.split(":", 1)[1].split(".", 1)[0]


# -- the two walks, on any graph given as predecessor lists ----------------------------------
def successors(preds: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for n in preds}
    for node, ps in preds.items():
        for p in ps:
            out[p].append(node)
    return out


def topological(
    preds: Mapping[str, Sequence[str]],
    succs: Mapping[str, Sequence[str]],
    index: Mapping[str, int],
) -> list[str]:
    """Kahn's algorithm, ties broken by ``index`` (document order): every node whose
    predecessors all come before it.  On a graph with a cycle the nodes on or after the cycle
    are missing (that is how ``find_cycle`` knows)."""
    indeg = {n: len(p) for n, p in preds.items()}
    heap = [(index[n], n) for n, d in indeg.items() if d == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, n = heapq.heappop(heap)
        out.append(n)
        for s in succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, (index[s], s))
    return out


def find_cycle(
    preds: Mapping[str, Sequence[str]],
    succs: Mapping[str, Sequence[str]],
    index: Mapping[str, int],
) -> list[str] | None:
    """One cycle as ``[a, b, c, a]`` (each an edge to the next), or None."""
    done = topological(preds, succs, index)
    if len(done) == len(preds):
        return None
    finished = set(done)
    # every node left has a predecessor left: walking backwards must come round
    node = min((n for n in preds if n not in finished), key=index.__getitem__)
    path: list[str] = []
    seen: dict[str, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(p for p in preds[node] if p not in finished)
    cycle = path[seen[node] :]
    cycle.reverse()
    return [*cycle, cycle[0]]


@dataclass(frozen=True)
class NeedsProblem:
    node: str
    name: str
    index: int


class Order:
    """The edges of a runbook's DAG (steps and barriers), built in document order."""

    def __init__(self, runbook: Runbook) -> None:
        self.runbook = runbook
        self.instances: dict[str, Instance] = runbook.instances
        self.preds: dict[str, list[str]] = {}
        self._edges: set[tuple[str, str]] = set()  # membership test: preds lists can be long
        self.order_index: dict[str, int] = {}
        self.unknown_needs: list[NeedsProblem] = []
        self._build()
        self._edges.clear()  # only construction asks

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
        # barrier nodes follow every step in the order index
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
        return successors(self.preds)

    def edges(self) -> Iterator[tuple[str, str]]:
        """Every edge ``(before, after)``, grouped by ``after`` in document order."""
        for node, preds in self.preds.items():
            for p in preds:
                yield p, node

    def topological(self) -> list[str]:
        """Every node, dependencies first, ties broken by document order."""
        return topological(self.preds, self.succs, self.order_index)

    def find_cycle(self) -> list[str] | None:
        """One cycle, told from its first node in the file (``[a, b, c, a]``), or None."""
        cycle = find_cycle(self.preds, self.succs, self.order_index)
        if cycle is None:
            return None
        ring = cycle[:-1]
        start = min(range(len(ring)), key=lambda i: self.order_index[ring[i]])
        ring = ring[start:] + ring[:start]
        return [*ring, ring[0]]

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
                line = rb.source.at(rb.phase_by_id[barrier_phase(n)].path).line
            shown.append(f"{self.describe_node(n)} (line {line})")
        first = self.instances.get(cycle[0])
        path = first.step.path if first else rb.phase_by_id[barrier_phase(cycle[0])].path
        return rb.source.problem(path, "dependency cycle: " + " -> ".join(shown), code="cycle")
