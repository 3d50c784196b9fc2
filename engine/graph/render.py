"""The step DAG as mermaid, Graphviz dot, or node-link JSON (networkx ``node_link_data``).

The DAG has *barrier* nodes (``phase:ID`` at the end of each phase, ``wave:PHASE.WAVE`` at the
end of each wave, see ``format/order.py``).  They are never drawn as steps: in mermaid an edge from a
barrier leaves the phase's or wave's subgraph (``planning --> rollout``); in dot they are small
point nodes inside their cluster; in JSON they are nodes of kind ``phase`` or ``wave``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ..format.loader import Loaded
from ..format.model import instance_id
from ..format.order import phase_node, wave_node
from .dag import Dag


@dataclass(frozen=True)
class _Group:
    """A phase or one of its waves: a subgraph (mermaid) or a cluster (dot)."""

    barrier: str  # the barrier node that ends it
    label: str
    steps: tuple[str, ...]  # instance ids, in document order (empty for a wave phase)
    waves: tuple[_Group, ...] = ()


def _groups(loaded: Loaded) -> list[_Group]:
    out = []
    for phase in loaded.runbook.phases:
        waves = tuple(
            _Group(
                wave_node(phase.id, w.id),
                f"wave {w.id}",
                tuple(instance_id(s.id, w.id) for s in phase.steps),
            )
            for w in phase.waves
        )
        steps = () if waves else tuple(s.id for s in phase.steps)
        out.append(_Group(phase_node(phase.id), f"phase {phase.id}", steps, waves))
    return out


def _rollbacks(dag: Dag) -> Iterator[tuple[str, str]]:
    """(instance id, rollback action) of every step with a rollback action."""
    for iid, inst in dag.instances.items():
        if inst.step.rollback is not None:
            yield iid, inst.step.rollback.action


# -- mermaid ----------------------------------------------------------------------------------
def _mm_label(*lines: str) -> str:
    text = "<br/>".join(lines)
    for a, b in (("&", "#amp;"), ('"', "#quot;"), ("<br/>", "\0"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(a, b)
    return '"' + text.replace("\0", "<br/>") + '"'


def render_mermaid(loaded: Loaded, rollbacks: bool = False) -> str:
    dag = Dag(loaded.order)
    groups = _groups(loaded)
    ids: dict[str, str] = {}  # DAG node -> mermaid id (steps and subgraphs)
    for n, iid in enumerate(dag.instances):
        ids[iid] = f"s{n}"
    owner: dict[str, str] = {}  # step -> the barrier of its innermost group
    members: dict[str, tuple[str, ...]] = {}  # barrier -> its steps
    for p, g in enumerate(groups):
        ids[g.barrier] = f"p{p}"
        members[g.barrier] = g.steps
        for s in g.steps:
            owner[s] = g.barrier
        for w, wg in enumerate(g.waves):
            ids[wg.barrier] = f"p{p}w{w}"
            members[wg.barrier] = wg.steps
            for s in wg.steps:
                owner[s] = wg.barrier
    undo = dict(_rollbacks(dag)) if rollbacks else {}
    out = ["flowchart TD"]

    def node_lines(steps: tuple[str, ...], indent: str) -> Iterator[str]:
        for s in steps:
            yield f"{indent}{ids[s]}[{_mm_label(s, dag.instances[s].step.action)}]"
            if s in undo:
                yield f"{indent}{ids[s]}r[{_mm_label('undo ' + s, undo[s])}]:::rollback"

    for g in groups:
        out.append(f"  subgraph {ids[g.barrier]}[{_mm_label(g.label)}]")
        for wg in g.waves:
            out.append(f"    subgraph {ids[wg.barrier]}[{_mm_label(wg.label)}]")
            out.extend(node_lines(wg.steps, "      "))
            out.append("    end")
        out.extend(node_lines(g.steps, "    "))
        if not g.steps and not g.waves:
            out.append(f"    {ids[g.barrier]}e[{_mm_label('(no steps)')}]")
        out.append("  end")
    out.extend(_mm_edges(dag, ids, owner, members))
    for s in undo:
        out.append(f"  {ids[s]} -. rollback .-> {ids[s]}r")
    if undo:
        out.append("  classDef rollback stroke-dasharray: 5 5")
    return "\n".join(out)


def _mm_edges(
    dag: Dag, ids: dict[str, str], owner: dict[str, str], members: dict[str, tuple[str, ...]]
) -> Iterator[str]:
    """Edges between steps, and from/to subgraphs where a barrier stands."""
    parent = {b: b.split(".", 1)[0].replace("wave:", "phase:", 1) for b in members}
    succ_steps: dict[str, set[str]] = {}
    for a, b in dag.edges():
        if dag.is_step(b):
            succ_steps.setdefault(a, set()).add(b)
    seen: set[tuple[str, str]] = set()
    for a, b in dag.edges():
        if not dag.is_step(b) and (owner.get(a) == b or parent.get(owner.get(a, a)) == b):
            continue  # a step, or the last wave, ends its own group: drawn by containment
        src = ids[a]
        dst = ids[b]
        if dag.is_step(b):
            inside = members[owner[b]]
            if len(inside) > 1 and all(s in succ_steps[a] for s in inside):
                dst = ids[owner[b]]  # `a` precedes the whole group: one edge into it
        if src != dst and (src, dst) not in seen:
            seen.add((src, dst))
            yield f"  {src} --> {dst}"


# -- dot --------------------------------------------------------------------------------------
def _q(*lines: str) -> str:
    """A dot string; several lines are joined with dot's ``\\n``."""
    return '"' + "\\n".join(t.replace("\\", "\\\\").replace('"', '\\"') for t in lines) + '"'


def render_dot(loaded: Loaded, rollbacks: bool = False) -> str:
    dag = Dag(loaded.order)
    undo = dict(_rollbacks(dag)) if rollbacks else {}
    out = [
        f"digraph {_q(loaded.runbook.name)} {{",
        f"  graph [rankdir=TB, fontname=Helvetica, label={_q(loaded.runbook.name)}, labelloc=t];",
        "  node [shape=box, style=rounded, fontname=Helvetica];",
        "  edge [fontname=Helvetica];",
    ]

    def cluster(g: _Group, indent: str) -> Iterator[str]:
        yield f"{indent}subgraph {_q('cluster_' + g.barrier)} {{"
        yield f"{indent}  label={_q(g.label)};"
        for wg in g.waves:
            yield from cluster(wg, indent + "  ")
        for s in g.steps:
            yield f"{indent}  {_q(s)} [label={_q(s, dag.instances[s].step.action)}];"
            if s in undo:
                label = _q("undo " + s, undo[s])
                yield f'{indent}  {_q("rollback:" + s)} [label={label}, style="rounded,dashed"];'

        yield f'{indent}  {_q(g.barrier)} [shape=point, width=0.08, label=""];'
        yield f"{indent}}}"

    for g in _groups(loaded):
        out.extend(cluster(g, "  "))
    for a, b in _dot_edges(dag):
        out.append(f"  {_q(a)} -> {_q(b)};")
    for s in undo:
        out.append(
            f'  {_q(s)} -> {_q("rollback:" + s)} [style=dashed, label="rollback", constraint=false];'
        )
    out.append("}")
    return "\n".join(out)


def _dot_edges(dag: Dag) -> Iterator[tuple[str, str]]:
    """Every edge, but a step's edge to the end of its own group when a later step of the
    group follows it: that step leads there anyway (the picture stays readable)."""
    owner = {s: s for s in dag.instances}  # step -> the barrier that ends its innermost group
    for a, b in dag.edges():
        if dag.is_step(a) and not dag.is_step(b):
            owner[a] = b
    succ = dag.graph.succ
    for a, b in dag.edges():
        if (
            dag.is_step(a)
            and owner[a] == b
            and any(dag.is_step(n) and owner[n] == b for n in succ[a])
        ):
            continue
        yield a, b


# -- json -------------------------------------------------------------------------------------
def graph_json(loaded: Loaded, rollbacks: bool = False) -> dict[str, Any]:
    """networkx node-link data: ``directed``, ``multigraph``, ``graph`` (runbook, file),
    ``nodes`` (``id``, ``kind`` step|phase|wave|rollback, ...) and ``edges`` (``source``,
    ``target``, ``kind`` order|rollback)."""
    dag = Dag(loaded.order)
    g = dag.graph.copy()
    nx.set_node_attributes(g, {n: dag.attributes(n) for n in g})
    nx.set_edge_attributes(g, dict.fromkeys(g.edges, "order"), "kind")
    if rollbacks:
        for s, action in _rollbacks(dag):
            g.add_node(f"rollback:{s}", kind="rollback", of=s, action=action)
            g.add_edge(s, f"rollback:{s}", kind="rollback")
    doc: dict[str, Any] = nx.node_link_data(g, edges="edges")
    return doc


def render_json(loaded: Loaded, rollbacks: bool = False) -> str:
    return json.dumps(graph_json(loaded, rollbacks), indent=2, ensure_ascii=False)


RENDERERS = {"mermaid": render_mermaid, "dot": render_dot, "json": render_json}
