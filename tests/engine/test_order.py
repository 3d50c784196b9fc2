"""The plain-Python graph walks that validate, show and diff keep (SPEC §11), against networkx.

Random graphs (DAGs and graphs with cycles) and random runbooks (phases, waves, ``parallel``,
phase and step ``needs``, some of them pointing forward so that cycles appear): the cycle
search of ``format/order.py`` finds a cycle exactly when networkx does and prints a real one;
its document-order walk is networkx's ``lexicographical_topological_sort``; the canonical walk
of ``review/canonical.py`` and the ancestor test of ``review/rules.py`` agree with networkx;
and the scheduler's readiness (``graph/countdown.py``, and ``apply`` itself) starts the steps
in a topological order.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_engine.format.loader import Loaded
from runbook_engine.format.order import Order, find_cycle, successors, topological
from runbook_engine.format.parse import Builder
from runbook_engine.format.yamlsource import parse
from runbook_engine.graph.countdown import Countdown
from runbook_engine.graph.dag import Dag
from runbook_engine.review.canonical import build_side, nearest_preds
from runbook_engine.review.rules import _reaches
from tests.conftest import RUNBOOK_BIN
from tests.engine.helpers import journal, runbook_yaml

# -- random graphs ----------------------------------------------------------------------------


@st.composite
def graphs(draw: st.DrawFn, acyclic: bool) -> dict[str, list[str]]:
    """Predecessor lists of a random graph; node names in a shuffled document order."""
    n = draw(st.integers(1, 12))
    names = [f"n{i}" for i in draw(st.permutations(range(n)))]
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    preds: dict[str, list[str]] = {name: [] for name in names}
    for a, b in draw(st.lists(pairs, max_size=3 * n, unique=True)):
        if acyclic and a >= b:
            continue  # only forward in a hidden order: a DAG
        preds[f"n{b}"].append(f"n{a}")
    return preds


def nx_graph(preds: dict[str, list[str]]) -> nx.DiGraph[str]:
    g: nx.DiGraph[str] = nx.DiGraph()
    g.add_nodes_from(preds)
    g.add_edges_from((p, n) for n, ps in preds.items() for p in ps)
    return g


def assert_real_cycle(cycle: list[str], g: nx.DiGraph[str]) -> None:
    assert len(cycle) >= 2 and cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1  # simple: no node twice
    for a, b in itertools.pairwise(cycle):
        assert g.has_edge(a, b), (a, b, cycle)


def assert_topological(order: list[str], g: nx.DiGraph[str]) -> None:
    pos = {n: i for i, n in enumerate(order)}
    assert len(pos) == len(order)
    for a, b in g.edges():
        if a in pos and b in pos:
            assert pos[a] < pos[b], (a, b)


@settings(max_examples=400, deadline=None)
@given(st.booleans().flatmap(graphs))
def test_find_cycle_agrees_with_networkx(preds: dict[str, list[str]]) -> None:
    g = nx_graph(preds)
    index = {n: i for i, n in enumerate(preds)}
    cycle = find_cycle(preds, successors(preds), index)
    try:
        nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        assert cycle is None
    else:
        assert cycle is not None
        assert_real_cycle(cycle, g)
    assert (cycle is None) == nx.is_directed_acyclic_graph(g)


@settings(max_examples=300, deadline=None)
@given(graphs(acyclic=True))
def test_topological_walk_is_networkx_lexicographical_order(preds: dict[str, list[str]]) -> None:
    g = nx_graph(preds)
    index = {n: i for i, n in enumerate(preds)}
    order = topological(preds, successors(preds), index)
    assert_topological(order, g)
    assert sorted(order) == sorted(g)
    assert order == list(nx.lexicographical_topological_sort(g, key=index.__getitem__))


@settings(max_examples=300, deadline=None)
@given(graphs(acyclic=False))
def test_topological_walk_is_complete_exactly_on_a_dag(preds: dict[str, list[str]]) -> None:
    g = nx_graph(preds)
    index = {n: i for i, n in enumerate(preds)}
    order = topological(preds, successors(preds), index)
    assert (len(order) == len(preds)) == nx.is_directed_acyclic_graph(g)
    assert_topological(order, g)


# -- random runbooks ------------------------------------------------------------------------


@st.composite
def runbooks(draw: st.DrawFn, acyclic: bool) -> str:
    """A runbook of `wait 0s` steps; with ``acyclic`` every `needs` looks backwards only."""
    layout = []
    for p in range(draw(st.integers(1, 4))):
        waves = draw(st.sampled_from([0, 0, 1, 2]))
        layout.append((f"p{p}", waves, [f"p{p}s{i}" for i in range(draw(st.integers(1, 3)))]))
    names = [s for _, _, steps in layout for s in steps]
    phase_ids = [pid for pid, _, _ in layout]
    phases: list[dict[str, Any]] = []
    for i, (pid, waves, steps) in enumerate(layout):
        phase: dict[str, Any] = {"id": pid, "parallel": draw(st.booleans())}
        if waves:
            phase["waves"] = [{"id": f"w{k}"} for k in range(waves)]
        pool = phase_ids[:i] if acyclic else [x for x in phase_ids if x != pid]
        if pool and draw(st.booleans()):
            phase["needs"] = draw(st.lists(st.sampled_from(pool), max_size=2, unique=True))
        phase["steps"] = []
        for sid in steps:
            step: dict[str, Any] = {"id": sid, "action": "wait", "with": {"duration": "0s"}}
            pool = names[: names.index(sid)] if acyclic else [x for x in names if x != sid]
            if pool and draw(st.integers(0, 2)) == 0:
                step["needs"] = draw(st.lists(st.sampled_from(pool), max_size=2, unique=True))
            if draw(st.integers(0, 5)) == 0:
                step["when"] = False
            phase["steps"].append(step)
        phases.append(phase)
    return runbook_yaml("rnd", phases)


def order_of(text: str) -> Order:
    """The order of a runbook, cycles and all (the loader would refuse a cycle)."""
    data, smap = parse(text, "rnd.yaml")
    return Order(Builder(data, smap, "rnd.yaml").build())


def graph_of(order: Order) -> nx.DiGraph[str]:
    g: nx.DiGraph[str] = nx.DiGraph()
    g.add_nodes_from(order.preds)
    g.add_edges_from(order.edges())
    return g


@settings(max_examples=150, deadline=None)
@given(st.booleans().flatmap(runbooks))
def test_runbook_order_agrees_with_networkx(text: str) -> None:
    order = order_of(text)
    g = graph_of(order)
    dag = nx.is_directed_acyclic_graph(g)
    cycle = order.find_cycle()
    assert (cycle is None) == dag
    canonical = nearest_preds(order)[1]
    assert (len(canonical) == len(order.instances)) == dag
    if cycle is not None:
        assert_real_cycle(cycle, g)
        assert min(cycle, key=order.order_index.__getitem__) == cycle[0]  # told from the first
        return
    assert order.topological() == list(
        nx.lexicographical_topological_sort(g, key=order.order_index.__getitem__)
    )
    assert order.topological() == Dag(order).topo
    steps = g.subgraph(order.instances)  # the canonical walk orders steps through barriers
    reach = nx.transitive_closure_dag(g)
    assert sorted(canonical) == sorted(order.instances)
    pos = {n: i for i, n in enumerate(canonical)}
    for a in steps:
        for b in reach.successors(a):
            if b in pos:
                assert pos[a] < pos[b], (a, b)


@settings(max_examples=100, deadline=None)
@given(runbooks(acyclic=True))
def test_diff_ancestor_test_agrees_with_networkx(text: str) -> None:
    order = order_of(text)
    side = build_side(Loaded(order.runbook, order, ()))
    g = graph_of(order)
    for a in order.instances:
        below = nx.descendants(g, a)
        for b in order.instances:
            if a != b:
                assert _reaches(side, a, b) == (b in below), (a, b)


# -- the scheduler's readiness --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(graphs(acyclic=True), st.randoms(use_true_random=False), st.data())
def test_countdown_starts_in_a_topological_order(
    preds: dict[str, list[str]], rnd: random.Random, data: st.DataObject
) -> None:
    """Nodes finish in any order the workers like (several run at once); barriers pass
    through; nodes done before the run (a resume) count as done; every owned node starts,
    and only after everything before it is done."""
    g = nx_graph(preds)
    barriers = set(data.draw(st.sets(st.sampled_from(sorted(g)))))
    topo = list(nx.topological_sort(g))
    # a resumed run: a prefix of some topological order was done before
    before = {n for n in topo[: data.draw(st.integers(0, len(topo)))] if n not in barriers}
    cd = Countdown(g, topo, lambda n: n not in barriers, before.__contains__)
    finished = set(before)
    running: list[str] = []
    started: list[str] = []
    ready = [n for n in cd.unblocked()]
    while ready or running:
        while ready and len(running) < 3:  # --max-parallel 3
            n = ready.pop(rnd.randrange(len(ready)))
            assert all(a in finished or a in barriers for a in nx.ancestors(g, n)), n
            started.append(n)
            running.append(n)
        done = running.pop(rnd.randrange(len(running)))
        finished.add(done)
        ready.extend(cd.finish(done))
    owned = set(g) - barriers
    assert sorted(started) == sorted(owned - before)
    assert_topological(started, g.subgraph(owned - before))


def test_countdown_waits_for_everything_behind_a_barrier_and_resumes() -> None:
    """a1, a2 -> phase:a -> b1 -> b2: b1 waits for both a's through the barrier; a resume with
    a1 done starts a2 only; rollback's reversed walk passes through steps outside its scope."""
    g: nx.DiGraph[str] = nx.DiGraph(
        [("a1", "phase:a"), ("a2", "phase:a"), ("phase:a", "b1"), ("b1", "b2")]
    )
    topo = ["a1", "a2", "phase:a", "b1", "b2"]
    steps = {"a1", "a2", "b1", "b2"}
    cd = Countdown(g, topo, steps.__contains__, lambda n: False)
    assert cd.unblocked() == ["a1", "a2"]
    assert cd.finish("a2") == []
    assert cd.finish("a1") == ["b1"] and "phase:a" in cd.done
    assert cd.finish("b1") == ["b2"] and cd.finish("b1") == []
    resumed = Countdown(g, topo, steps.__contains__, {"a1"}.__contains__)
    assert resumed.unblocked() == ["a2"] and resumed.left["phase:a"] == 1
    # rollback of {a1, b2}: b2 first; b1 (not in scope) and the barrier pass through
    back = Countdown(g.reverse(copy=False), topo[::-1], {"a1", "b2"}.__contains__, lambda n: False)
    assert back.unblocked() == ["b2"]
    assert back.finish("b2") == ["a1"]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(runbooks(acyclic=True), st.sampled_from(["1", "4"]))
def test_apply_starts_steps_in_a_topological_order(runbook: Any, text: str, parallel: str) -> None:
    """``apply`` itself: every step starts after every step before it in the DAG is done
    (skipped by ``when`` counts as done: its dependents still run); one at a time, the order
    is networkx's lexicographical topological order."""
    here = Path(tempfile.mkdtemp(dir="."))  # one per example: a fresh state
    file, state = str(here / "rnd.yaml"), str(here / "state")
    Path(file).write_text(text)
    r = runbook("--state-dir", state, "apply", file, "--yes", "--max-parallel", parallel)
    assert r.code == 0, r.output
    dag = Dag(order_of(text))
    recs = [x for x in journal(state, "rnd") if x["t"] == "step"]
    started = [x["id"] for x in recs if x["status"] in ("running", "skipped")]
    assert sorted(started) == sorted(dag.instances)
    finished_at: dict[str, int] = {}
    for i, x in enumerate(recs):
        if x["status"] in ("succeeded", "skipped"):
            finished_at[x["id"]] = i
    for i, x in enumerate(recs):
        if x["status"] in ("running", "skipped"):
            for a in dag.ancestors([x["id"]]):
                assert finished_at[a] < i, (a, x["id"])
    if parallel == "1":
        assert started == dag.step_order()


# -- who pays for networkx ------------------------------------------------------------------


def imports_of(*args: str) -> tuple[int, set[str]]:
    """Exit code and every module a whole ``runbook`` process imported (``-X importtime``)."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", RUNBOOK_BIN, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("import time:")]
    return r.returncode, {ln.rsplit("|", 1)[1].strip() for ln in lines}


def test_validate_show_and_diff_never_import_networkx_apply_plan_and_graph_do() -> None:
    wait = {"id": "s", "action": "wait", "with": {"duration": "0s"}}
    Path("one.yaml").write_text(runbook_yaml("one", [{"id": "p", "steps": [wait]}]))
    for args in (["validate", "one.yaml"], ["show", "one.yaml"], ["diff", "one.yaml", "one.yaml"]):
        code, names = imports_of(*args)
        assert code == 0, args
        assert "runbook_engine.format.order" in names, args  # the order was built
        assert not any(n.split(".")[0] == "networkx" for n in names), args
    for args in (
        ["--state-dir", "st", "apply", "one.yaml", "--yes"],
        ["plan", "one.yaml"],
        ["graph", "one.yaml"],
    ):
        code, names = imports_of(*args)
        assert code == 0, args
        assert {"networkx", "runbook_engine.graph.dag"} <= names, args
