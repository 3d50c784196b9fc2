"""``runbook graph``: mermaid, dot and node-link JSON of the step DAG.

Besides the exact mermaid text of one runbook, each format is read back and its order compared
with the DAG's: step B is after step A in the picture exactly when it is in the DAG.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runbook_engine.format.loader import load
from runbook_engine.graph.dag import Dag
from tests.conftest import ci_requires
from tests.engine.plan_fixtures import RUNBOOK

MERMAID = """\
flowchart TD
  subgraph p0["phase prepare"]
    s0["backup<br/>shell"]
    s1["schema<br/>sql.exec"]
  end
  subgraph p1["phase comms"]
    s2["announce<br/>notify"]
    s3["wait-a-bit<br/>wait"]
    s4["go-ahead<br/>approval"]
  end
  subgraph p2["phase rollout"]
    subgraph p2w0["wave pilot"]
      s5["copy[pilot]<br/>sql.copy"]
      s6["health[pilot]<br/>check"]
      s7["tidy[pilot]<br/>shell"]
    end
    subgraph p2w1["wave all"]
      s8["copy[all]<br/>sql.copy"]
      s9["health[all]<br/>check"]
      s10["tidy[all]<br/>shell"]
    end
  end
  s0 --> s1
  p0 --> p1
  s2 --> s4
  p1 --> s5
  s5 --> s6
  s6 --> s7
  p2w0 --> s8
  s8 --> s9
  s9 --> s10"""


@pytest.fixture
def graph_file() -> Path:
    path = Path("graph.yaml")
    path.write_text(RUNBOOK)
    return path


def dag_order(path: Path) -> set[tuple[str, str]]:
    """(a, b) for every pair of steps where b comes after a in the DAG."""
    dag = Dag(load(str(path)).order)
    return {(a, b) for a in dag.instances for b in dag.descendants([a])}


def closure(edges: set[tuple[str, str]], steps: set[str]) -> set[tuple[str, str]]:
    succ: dict[str, set[str]] = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    out = set()
    for s in steps:
        stack, seen = [s], set()
        while stack:
            for n in succ.get(stack.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        out |= {(s, t) for t in seen if t in steps}
    return out


def test_mermaid_text(runbook, graph_file: Path) -> None:
    r = runbook("graph", str(graph_file))
    assert r.code == 0, r.err
    assert r.out.rstrip("\n") == MERMAID
    assert not Path(".runbook").exists()


def test_mermaid_order_matches_the_dag(runbook, graph_file: Path) -> None:
    text = runbook("graph", "--format", "mermaid", str(graph_file)).out
    labels = dict(re.findall(r'^\s*(s\d+)\["([^<"]+)<br/>', text, re.M))
    assert sorted(labels.values()) == sorted(load(str(graph_file)).runbook.instances)
    assert not any(":" in v for v in labels.values())  # barriers are never steps
    # containment: a subgraph's "in" leads to its members, its members to its "out"
    edges: set[tuple[str, str]] = set()
    stack: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r"subgraph (\w+)\[", line):
            if stack:
                edges |= {(stack[-1] + ":in", m[1] + ":in"), (m[1] + ":out", stack[-1] + ":out")}
            stack.append(m[1])
        elif line == "end":
            stack.pop()
        elif m := re.match(r'(s\d+)\["', line):
            edges |= {(stack[-1] + ":in", m[1]), (m[1], stack[-1] + ":out")}
        elif m := re.match(r"(\w+) --> (\w+)$", line):
            a = m[1] if m[1] in labels else m[1] + ":out"
            b = m[2] if m[2] in labels else m[2] + ":in"
            edges.add((a, b))
    assert stack == []
    order = closure(edges, set(labels))
    assert {(labels[a], labels[b]) for a, b in order} == dag_order(graph_file)


def test_mermaid_rollbacks(runbook, graph_file: Path) -> None:
    text = runbook("graph", "--rollbacks", str(graph_file)).out
    assert '    s1r["undo schema<br/>sql.exec"]:::rollback' in text
    assert '      s5r["undo copy[pilot]<br/>sql.exec"]:::rollback' in text
    assert "  s8 -. rollback .-> s8r" in text
    assert "s0r" not in text  # `rollback: none` draws nothing
    assert text.rstrip().endswith("classDef rollback stroke-dasharray: 5 5")


def test_dot_is_valid_graphviz_and_keeps_the_order(runbook, graph_file: Path) -> None:
    text = runbook("graph", "--format", "dot", "--rollbacks", str(graph_file)).out
    assert text.startswith('digraph "plan-test" {')
    assert '"phase:prepare" [shape=point, width=0.08, label=""];' in text
    assert '"wave:rollout.pilot" [shape=point, width=0.08, label=""];' in text
    assert 'subgraph "cluster_wave:rollout.all" {' in text
    edges = {
        (a, b)
        for a, b, attrs in re.findall(r'^\s*"([^"]+)" -> "([^"]+)"( \[.*\])?;$', text, re.M)
        if not attrs
    }
    steps = set(load(str(graph_file)).runbook.instances)
    assert closure(edges, steps) == dag_order(graph_file)
    dot = shutil.which("dot")
    if dot is None:
        ci_requires("graphviz (dot)")
    svg = subprocess.run(
        [dot, "-Tsvg"], input=text, capture_output=True, text=True, check=False, timeout=60
    )
    assert svg.returncode == 0, svg.stderr
    titles = {html.unescape(t) for t in re.findall(r"<title>([^<]+)</title>", svg.stdout)}
    assert steps <= titles
    assert "rollback:copy[pilot]" in titles


def test_json_node_link(runbook, graph_file: Path) -> None:
    r = runbook("graph", "--format", "json", str(graph_file))
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["directed"] is True
    nodes = {n["id"]: n for n in doc["nodes"]}
    dag = Dag(load(str(graph_file)).order)
    assert set(nodes) == set(dag.graph)
    assert nodes["copy[pilot]"] == {
        "id": "copy[pilot]",
        "kind": "step",
        "step": "copy",
        "phase": "rollout",
        "wave": "pilot",
        "action": "sql.copy",
    }
    assert nodes["phase:comms"] == {
        "id": "phase:comms",
        "kind": "phase",
        "phase": "comms",
        "wave": None,
    }
    assert nodes["wave:rollout.all"]["kind"] == "wave"
    assert {n["kind"] for n in nodes.values()} == {"step", "phase", "wave"}
    assert {(e["source"], e["target"]) for e in doc["edges"]} == set(dag.edges())
    assert {"source": "phase:prepare", "target": "announce", "kind": "order"} in doc["edges"]


def test_json_rollbacks(runbook, graph_file: Path) -> None:
    doc = json.loads(runbook("graph", "--format", "json", "--rollbacks", str(graph_file)).out)
    undo = {n["of"]: n["action"] for n in doc["nodes"] if n["kind"] == "rollback"}
    assert undo == {"schema": "sql.exec", "copy[pilot]": "sql.exec", "copy[all]": "sql.exec"}
    assert {"source": "schema", "target": "rollback:schema", "kind": "rollback"} in doc["edges"]


def test_empty_phase_and_phase_needs(runbook) -> None:
    Path("g.yaml").write_text(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: g}\nphases:\n"
        "  - id: a\n    steps:\n      - {id: s1, action: wait, with: {duration: 0s}}\n"
        "      - {id: s2, action: wait, with: {duration: 0s}}\n"
        "  - id: empty\n    steps: []\n"
        "  - id: c\n    needs: [s1]\n    parallel: true\n    steps:\n"
        "      - {id: t1, action: wait, with: {duration: 0s}}\n"
        "      - {id: t2, action: wait, with: {duration: 0s}}\n"
    )
    r = runbook("graph", "g.yaml")
    assert r.code == 0, r.err
    assert '    p1e["(no steps)"]' in r.out
    assert "  p0 --> p1" in r.out  # the empty phase follows phase a
    assert "  s0 --> p2" in r.out  # both steps of c need s1 only: one edge into the subgraph
    assert "warning: phase 'empty' has no steps" in r.err


def test_help_teaches() -> None:
    from click.testing import CliRunner

    from runbook_engine.cli import cli

    out = CliRunner().invoke(cli, ["graph", "--help"]).output
    for words in ("--format", "mermaid", "dot", "json", "--rollbacks", "Examples:", "subgraph"):
        assert words in out, words
