"""Readiness during a run: Kahn's algorithm on the DAG, driven by what the run finishes.

Per node, ``left`` counts its predecessors not yet done.  The run *owns* some nodes (apply: the
steps; rollback: the steps in its scope): an owned node is done when the run says so
(``finish``).  Every other node (a barrier, a step outside the rollback scope) passes through:
it is done as soon as its count reaches 0, and passes that on.  An owned node whose count
reaches 0 is *unblocked*: the run decides, by its status, whether it starts.

The counts are initialised from the stored statuses (``done``) in a topological order, so a
resumed run starts where the last one stopped.  Apply walks ``Dag.graph`` in ``Dag.topo``;
rollback walks the reversed graph in the reversed order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import networkx as nx


class Countdown:
    def __init__(
        self,
        graph: nx.DiGraph[Any],
        order: Iterable[str],
        owned: Callable[[str], bool],
        done: Callable[[str], bool],
    ) -> None:
        """``order``: every node of ``graph``, predecessors first; ``owned(n)``: the run decides
        when ``n`` is done; ``done(n)``: an owned node is done already (its stored status)."""
        self._pred = graph.pred
        self._succ = graph.succ
        self.owned = owned
        self.rank: dict[str, int] = {}
        self.left: dict[str, int] = {}
        self.done: set[str] = set()
        for n in order:
            self.rank[n] = len(self.rank)
            left = sum(1 for p in self._pred[n] if p not in self.done)
            self.left[n] = left
            if done(n) if owned(n) else left == 0:
                self.done.add(n)

    def unblocked(self) -> list[str]:
        """The owned nodes not done whose predecessors are all done, in ``order``."""
        return [n for n, k in self.left.items() if k == 0 and n not in self.done and self.owned(n)]

    def finish(self, node: str) -> list[str]:
        """``node`` is done: the owned nodes this unblocks, through any pass-through nodes."""
        if node in self.done:
            return []
        self.done.add(node)
        out: list[str] = []
        stack = [node]
        while stack:
            for s in self._succ[stack.pop()]:
                self.left[s] -= 1
                if self.left[s] == 0 and s not in self.done:
                    if self.owned(s):
                        out.append(s)
                    else:
                        self.done.add(s)
                        stack.append(s)
        return out
