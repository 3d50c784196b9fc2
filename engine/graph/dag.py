"""The execution DAG as one networkx ``DiGraph``: what orders apply, rollback, plan and graph.

Nodes are the step instances and the barriers (``phase:ID``, ``wave:PHASE.WAVE``) of
``format/order.py``, with their edges in the same order (``attributes`` describes a node for
the JSON renderer).  Outside this package the questions are about steps; barriers are an
internal detail (``is_step``).

networkx does the graph work: the order is ``lexicographical_topological_sort`` keyed by
document order (its ``rank`` is the scheduler's priority), ancestors and descendants are
multi-source ``edge_bfs`` traversals, a cycle is ``find_cycle``.  Readiness during a run is
``countdown.Countdown`` on this graph (or its reverse, for rollback).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import networkx as nx

from ..errors import ValidationFailed
from ..format.order import Order, barrier_phase


class Dag:
    def __init__(self, order: Order) -> None:
        self.order = order
        self.runbook = order.runbook
        self.instances = order.instances
        rb = order.runbook
        g: nx.DiGraph[str] = nx.DiGraph(runbook=rb.name, file=rb.file)
        g.add_nodes_from(order.preds)  # no attributes: apply needs none (see ``attributes``)
        g.add_edges_from(order.edges())
        self.graph = g
        try:
            topo = list(nx.lexicographical_topological_sort(g, key=order.order_index.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = self.find_cycle()
            assert cycle is not None
            raise ValidationFailed([order.cycle_problem(cycle)]) from None
        self.topo: list[str] = topo  # every node, dependencies first, then document order
        self.rank: dict[str, int] = {n: i for i, n in enumerate(topo)}

    def attributes(self, node: str) -> dict[str, str | None]:
        """What ``graph --format json`` says of a node: ``kind`` step|phase|wave, ``phase``,
        ``wave``; a step's ``step`` id and ``action`` too."""
        inst = self.instances.get(node)
        if inst is not None:
            return {
                "kind": "step",
                "step": inst.step.id,
                "phase": inst.phase.id,
                "wave": inst.wave.id if inst.wave else None,
                "action": inst.step.action,
            }
        kind, _, rest = node.partition(":")
        _, _, wave = rest.partition(".")
        return {"kind": kind, "phase": barrier_phase(node), "wave": wave or None}

    def find_cycle(self) -> list[str] | None:
        """One cycle as ``[a, b, c, a]`` (networkx), or None.  The loader refuses cycles
        before a Dag is built; this is the Dag's own check."""
        try:
            edges = nx.find_cycle(self.graph)
        except nx.NetworkXNoCycle:
            return None
        nodes = [u for u, _v in edges]
        return [*nodes, nodes[0]]

    def is_step(self, node: str) -> bool:
        return node in self.instances

    def step_order(self) -> list[str]:
        """The steps in execution order (the lexicographical topological order)."""
        return [n for n in self.topo if n in self.instances]

    def edges(self) -> Iterator[tuple[str, str]]:
        """Every edge ``(before, after)``, grouped by ``after`` in document order (stable text
        for the renderers)."""
        pred = self.graph.pred
        for node in self.graph:
            for p in pred[node]:
                yield p, node

    def generations(self) -> list[list[str]]:
        """Steps grouped by what can run side by side: group k holds the steps whose longest
        chain of steps before them has length k (barriers add nothing), in execution order."""
        pred = self.graph.pred
        depth: dict[str, int] = {}
        groups: dict[int, list[str]] = {}
        for n in self.topo:
            d = max((depth[p] + (p in self.instances) for p in pred[n]), default=0)
            depth[n] = d
            if n in self.instances:
                groups.setdefault(d, []).append(n)
        return [groups[k] for k in sorted(groups)]

    def ancestors(self, nodes: Iterable[str]) -> set[str]:
        """Steps that must be done before any of ``nodes`` (one traversal for all of them)."""
        found = nx.edge_bfs(self.graph, list(nodes), orientation="reverse")
        return {u for u, _v, _dir in found if u in self.instances}

    def descendants(self, nodes: Iterable[str]) -> set[str]:
        """Steps that depend, directly or not, on any of ``nodes`` (one traversal)."""
        found: Iterator[Any] = nx.edge_bfs(self.graph, list(nodes))
        return {e[1] for e in found if e[1] in self.instances}

    def describe_node(self, node: str) -> str:
        return self.order.describe_node(node)
