"""``runbook show``: the canonical text (defaults applied, waves expanded, needs explicit)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import networkx as nx
import pytest
import yaml

from runbook_engine.format.loader import load_text
from runbook_engine.graph.dag import Dag
from runbook_engine.review.canonical import build_side, format_duration, nearest_preds
from tests.engine.diff_fixtures import BASE, REFORMATTED, edit, write


def _doc(runbook, *args: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    r = runbook("show", *args)
    assert r.code == 0, r.err
    return yaml.safe_load(r.out)  # type: ignore[no-any-return]


def _step(doc: dict, iid: str) -> dict:  # type: ignore[type-arg]
    for phase in doc["phases"]:
        for step in phase["steps"]:
            if step["id"] == iid:
                return step  # type: ignore[no-any-return]
    raise AssertionError(f"no step {iid} in {[s['id'] for p in doc['phases'] for s in p['steps']]}")


def test_defaults_applied_waves_expanded_needs_explicit(runbook) -> None:
    write("rb.yaml", BASE)
    doc = _doc(runbook, "rb.yaml")
    backup = _step(doc, "backup")
    assert backup["timeout"] == "10m"
    assert backup["retries"] == {"attempts": 3, "delay": "1s", "backoff": 2}
    assert backup["on_failure"] == "abort"
    assert backup["idempotent"] is False  # shell's own flag, made explicit
    assert backup["rollback"] == "none"
    rollout = doc["phases"][1]
    assert rollout["needs"] == ["prepare"]  # the previous phase, made explicit
    assert [s["id"] for s in rollout["steps"]] == [
        "copy[pilot]",
        "health[pilot]",
        "copy[early]",
        "health[early]",
        "copy[all]",
        "health[all]",
    ]
    pilot = _step(doc, "copy[pilot]")
    assert (pilot["step"], pilot["wave"], pilot["wave_vars"]) == ("copy", "pilot", {"percent": 1})
    assert pilot["needs"] == ["sign-off"]  # the last step of the phase before
    assert pilot["rollback"]["action"] == "shell"
    assert pilot["rollback"]["timeout"] == "10m"  # defaults apply to rollbacks too
    assert _step(doc, "copy[early]")["needs"] == ["health[pilot]"]  # wave after wave
    assert _step(doc, "verify")["needs"] == ["health[all]"]
    assert _step(doc, "health[all]")["idempotent"] is True  # check is idempotent


def test_key_order_is_fixed(runbook) -> None:
    write("rb.yaml", BASE)
    r = runbook("show", "rb.yaml")
    top = [line.split(":")[0] for line in r.out.splitlines() if line and line[0].isalpha()]
    assert top == [
        "apiVersion",
        "kind",
        "metadata",
        "vars",
        "secrets",
        "hosts",
        "defaults",
        "risks",
        "contingencies",
        "phases",
    ]
    step = _doc(runbook, "rb.yaml")["phases"][1]["steps"][0]
    assert list(step) == [
        "id",
        "step",
        "wave",
        "wave_vars",
        "needs",
        "action",
        "with",
        "timeout",
        "retries",
        "idempotent",
        "on_failure",
        "risks",
        "rollback",
    ]
    assert "#" not in r.out  # comments are gone


def test_reformatting_prints_the_same_text(runbook) -> None:
    write("a.yaml", BASE)
    write("b.yaml", REFORMATTED)
    a, b = runbook("show", "a.yaml"), runbook("show", "b.yaml")
    assert a.code == b.code == 0
    assert a.out == b.out
    assert Path("a.yaml").read_text() != Path("b.yaml").read_text()


def test_a_real_change_shows(runbook) -> None:
    write("a.yaml", BASE)
    write("b.yaml", edit(BASE, ("failure_limit: 1", "failure_limit: 2")))
    a, b = runbook("show", "a.yaml"), runbook("show", "b.yaml")
    changed = [
        (x, y) for x, y in zip(a.out.splitlines(), b.out.splitlines(), strict=True) if x != y
    ]
    assert changed == [("      failure_limit: 1", "      failure_limit: 2")] * 3  # one per wave


def test_json_format_is_the_same_document(runbook) -> None:
    write("rb.yaml", BASE)
    as_yaml = _doc(runbook, "rb.yaml")
    r = runbook("show", "--format", "json", "rb.yaml")
    assert r.code == 0
    assert json.loads(r.out) == as_yaml


def test_secrets_by_name_only(runbook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFF_TEST_TOKEN", "s3cr3t-value-42")
    write("rb.yaml", BASE)
    for fmt in ("yaml", "json"):
        r = runbook("show", "--format", fmt, "rb.yaml")
        assert r.code == 0
        assert "api_token" in r.out
        assert "s3cr3t-value-42" not in r.output
        assert "DIFF_TEST_TOKEN" not in r.output  # not even where the value comes from


def test_multiline_strings_are_blocks(runbook) -> None:
    write(
        "rb.yaml",
        edit(BASE, ('with: {command: "echo verify"}', 'with: {command: "echo one\\necho two\\n"}')),
    )
    r = runbook("show", "rb.yaml")
    assert "command: |\n        echo one\n        echo two\n" in r.out


def test_invalid_file_is_located_exit_2(runbook) -> None:
    write("bad.yaml", edit(BASE, ("  - id: rollout\n", "  - id: rollout\n    needs: [prepar]\n")))
    r = runbook("show", "bad.yaml")
    assert r.code == 2
    assert r.out == ""
    line = BASE.splitlines().index("  - id: rollout") + 2
    assert f"bad.yaml:{line}:13: phases[1].needs[0]: unknown step or phase 'prepar'" in r.err
    assert "Traceback" not in r.output


def test_raw_on_error_prints_the_file(runbook) -> None:
    text = BASE.replace("action: check", "action: chek")
    write("bad.yaml", text)
    r = runbook("show", "--raw-on-error", "bad.yaml")
    assert r.code == 0
    assert r.out == text
    assert "did you mean 'check'" in r.err


def test_missing_file_exit_2(runbook) -> None:
    r = runbook("show", "nope.yaml")
    assert r.code == 2
    assert "nope.yaml" in r.err


def test_help_teaches(runbook) -> None:
    r = runbook("show", "--help")
    assert r.code == 0
    assert "textconv" in r.out and "Examples" in r.out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (42, "42s"),
        (600, "10m"),
        (5400, "1h30m"),
        (3661.5, "1h1m1s500ms"),
    ],
)
def test_durations_are_exact(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def _random_runbook(rng: random.Random) -> str:
    lines = ["apiVersion: runbook/v1", "kind: Runbook", "metadata: {name: rnd}", "phases:"]
    ids: list[str] = []
    for p in range(rng.randint(2, 5)):
        lines.append(f"  - id: p{p}")
        if rng.random() < 0.5:
            lines.append("    parallel: true")
        if p and rng.random() < 0.3:
            lines.append(f"    needs: [p{rng.randrange(p)}]")
        if rng.random() < 0.4:
            lines.append("    waves: [{id: w1}, {id: w2}]")
        lines.append("    steps:")
        for s in range(rng.randint(1, 5)):
            sid = f"p{p}-s{s}"
            needs = rng.sample(ids, k=min(len(ids), rng.randint(0, 2)))
            lines.append(
                f"      - {{id: {sid}, action: wait, with: {{duration: 0s}}, needs: {needs}}}"
            )
            ids.append(sid)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(25))
def test_explicit_needs_keep_the_dag_order(seed: int) -> None:
    """The nearest-step needs describe exactly the DAG's order: same ancestors everywhere."""
    loaded = load_text(_random_runbook(random.Random(seed)), "rnd.yaml")
    dag = Dag(loaded.order)
    preds, order = nearest_preds(loaded.order)
    assert sorted(order) == sorted(dag.step_order())
    ancestors: dict[str, set[str]] = {}
    for node in order:  # a topological order: every predecessor comes first
        ancestors[node] = set(preds[node]).union(*(ancestors[p] for p in preds[node]))
        assert ancestors[node] == dag.ancestors([node]), node
        for p in preds[node]:  # nearest: a path from p to the node through barriers only
            through = [n for n in dag.graph if not dag.is_step(n)]
            assert nx.has_path(dag.graph.subgraph([*through, p, node]), p, node), (node, p)
    side = build_side(loaded)
    generations = dag.generations()
    for depth, group in enumerate(generations):
        for node in group:
            assert side.generation[node] == depth
