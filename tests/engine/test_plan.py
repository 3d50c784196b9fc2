"""``runbook plan``: execution groups, descriptions, risks, rollbacks, the risk register."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runbook_engine.actions import registry
from runbook_engine.format.loader import load
from runbook_engine.plan.build import ROLLBACK_MISSING, ROLLBACK_NONE, StepStatus, build_plan
from tests.engine.plan_fixtures import GROUPS, RUNBOOK


@pytest.fixture
def plan_file() -> Path:
    path = Path("plan.yaml")
    path.write_text(RUNBOOK)
    return path


def describe(action: str, params: dict[str, Any]) -> str:
    return registry().get(action).describe(params)


def test_json_groups_follow_the_dag(runbook, plan_file: Path) -> None:
    r = runbook("plan", "--format", "json", str(plan_file))
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert [[s["id"] for s in g["steps"]] for g in doc["groups"]] == GROUPS
    assert [g["index"] for g in doc["groups"]] == list(range(1, len(GROUPS) + 1))
    assert doc["runbook"] == "plan-test"
    assert doc["digest"].startswith("sha256:")
    assert doc["warnings"] == []
    assert not Path(".runbook").exists()


def test_each_step_has_its_description_risks_and_rollback(runbook, plan_file: Path) -> None:
    doc = json.loads(runbook("plan", "--format", "json", str(plan_file)).out)
    steps = {s["id"]: s for g in doc["groups"] for s in g["steps"]}
    assert steps["backup"]["does"] == describe("shell", {"command": "cp legacy.db legacy.bak"})
    assert steps["backup"]["rollback"] == ROLLBACK_NONE == "none"
    assert steps["wait-a-bit"]["rollback"] == ROLLBACK_MISSING == "no rollback"
    schema_sql = {"dsn": "sqlite:///new.db", "sql": "DROP TABLE customers"}
    assert steps["schema"]["rollback"] == describe("sql.exec", schema_sql)
    assert steps["schema"]["rollback_action"] == "sql.exec"
    # vars (their defaults here) and each wave's own values are filled in (issue 10)
    pilot = {
        "source": "sqlite:///legacy.db",
        "target": "sqlite:///new.db",
        "table": "customers",
        "key": "id",
        "where": "id % 100 < 1",
    }
    assert steps["copy[pilot]"]["does"] == describe("sql.copy", pilot)
    assert steps["copy[all]"]["does"] == describe("sql.copy", {**pilot, "where": "id % 100 < 100"})
    assert "id % 100 < 100" in steps["copy[all]"]["does"]
    undo_all = {"dsn": "sqlite:///new.db", "sql": "DELETE FROM customers WHERE id % 100 < 100"}
    assert steps["copy[all]"]["rollback"] == describe("sql.exec", undo_all)
    assert steps["copy[pilot]"]["risks"] == ["data-loss", "slow-copy"]
    assert (steps["copy[pilot]"]["phase"], steps["copy[pilot]"]["wave"]) == ("rollout", "pilot")
    assert steps["health[all]"]["on_failure"] == "rollback-wave"
    assert steps["tidy[all]"]["when"] == "{{ wave.id == 'all' }}"
    assert steps["copy[all]"]["idempotent"] is True
    assert steps["backup"]["idempotent"] is False
    assert all(s["status"] is None and s["changed"] is None for s in steps.values())


def test_risk_register(runbook, plan_file: Path) -> None:
    doc = json.loads(runbook("plan", "--format", "json", str(plan_file)).out)
    cells = doc["risk_matrix"]["cells"]
    assert list(cells) == ["low", "medium", "high"]
    assert all(list(row) == ["low", "medium", "high", "critical"] for row in cells.values())
    filled = {(lk, im): ids for lk, row in cells.items() for im, ids in row.items() if ids}
    assert filled == {
        ("low", "critical"): ["data-loss"],
        ("high", "medium"): ["slow-copy", "bad-health"],
    }
    risks = {r["id"]: r for r in doc["risks"]}
    assert risks["data-loss"]["mitigation"] == "backup first"
    assert risks["data-loss"]["owner"] == "dba"
    assert [c["id"] for c in risks["data-loss"]["contingencies"]] == ["restore", "page"]
    assert risks["data-loss"]["contingencies"][0]["does"] == describe(
        "shell", {"command": "cp legacy.bak legacy.db"}
    )
    assert risks["data-loss"]["named_by"] == ["backup", "copy"]
    assert risks["bad-health"]["owner"] == ""


def test_text_plan(runbook, plan_file: Path) -> None:
    r = runbook("plan", str(plan_file))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "Plan: plan-test (plan.yaml): 11 steps in 10 groups, 3 risks"
    assert "Group 3: 2 steps side by side" in lines
    i = lines.index("Group 5")
    assert lines[i + 1].startswith("  copy[pilot]  rollout/pilot  sql.copy: copy customers")
    assert lines[i + 2] == "    risks: data-loss, slow-copy"
    assert lines[i + 3].startswith("    rollback: sql.exec: ")
    j = lines.index("Risk register (likelihood x impact)")
    assert [ln.split(None, 1)[0] for ln in lines[j + 2 : j + 5]] == ["low", "medium", "high"]
    assert lines[j + 1].split()[-4:] == ["low", "medium", "high", "critical"]
    assert lines[j + 2].split()[1:] == [".", ".", ".", "data-loss"]
    assert lines[j + 4].split()[1:] == [".", "slow-copy,", "bad-health", ".", "."]
    assert "    contingencies:" in lines
    assert "    likelihood high, impact medium, no owner" in lines
    assert r.err == ""


def test_markdown_plan(runbook, plan_file: Path) -> None:
    r = runbook("plan", "--format", "markdown", str(plan_file))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "# Plan: plan-test"
    assert "> Move customers \\| carefully" in lines
    head = "| group | step | phase | wave | action | does | risks | rollback |"
    assert head in lines
    rows = [ln for ln in lines if ln.startswith("| 3 |")]
    assert len(rows) == 2 and rows[0].startswith("| 3 | `announce` | comms |  | notify |")
    assert "| low |  |  |  | data-loss |" in lines
    assert "| high |  | slow-copy, bad-health |  |  |" in lines
    assert any(
        ln.startswith("| `data-loss`: rows lost during copy | low | critical | dba |")
        for ln in lines
    )


def test_statuses_have_their_place(plan_file: Path) -> None:
    loaded = load(str(plan_file))
    plan = build_plan(
        loaded, {"backup": StepStatus("done"), "schema": StepStatus("done", changed=True)}
    )
    by_id = {s.id: s for s in plan.steps}
    assert by_id["backup"].status == StepStatus("done")
    assert by_id["schema"].as_json()["changed"] is True
    assert by_id["announce"].status is None
    from runbook_engine.plan.render import render_markdown, render_text

    assert "[done (changed since applied)] schema" in render_text(plan)
    assert "| 2 | `schema` | done (changed since applied) |" in render_markdown(plan)


def test_no_risks(runbook) -> None:
    Path("p.yaml").write_text(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: p}\n"
        "phases:\n  - id: a\n    steps:\n      - {id: s, action: wait, with: {duration: 0s}}\n"
    )
    r = runbook("plan", "p.yaml")
    assert r.code == 0, r.err
    assert r.out.rstrip().endswith("Risk register: no risks declared.")
    md = runbook("plan", "--format", "markdown", "p.yaml")
    assert md.out.rstrip().endswith("No risks declared.")


def test_lint_warnings_go_to_stderr_and_do_not_stop_the_plan(runbook) -> None:
    Path("p.yaml").write_text(RUNBOOK.replace("        rollback: none\n", "", 1))
    r = runbook("plan", "p.yaml")
    assert r.code == 0
    assert (
        "p.yaml:38:9: phases[0].steps[0]: warning: step 'backup' (shell) changes something" in r.err
    )
    doc = json.loads(runbook("plan", "--format", "json", "p.yaml").out)
    assert [w["code"] for w in doc["warnings"]] == ["no-rollback"]


@pytest.mark.parametrize("command", ["plan", "graph"])
def test_invalid_runbook_same_errors_as_validate(runbook, command: str, tmp_path: Path) -> None:
    Path("bad.yaml").write_text(
        RUNBOOK.replace("needs: [announce]", "needs: [anounce]").replace(
            "action: wait", "action: wiat"
        )
    )
    before = sorted(os.listdir(tmp_path))
    v = runbook("validate", "bad.yaml")
    r = runbook(command, "bad.yaml")
    assert v.code == r.code == 2
    located = [ln for ln in v.err.splitlines() if ln.startswith("bad.yaml:")][:-1]
    assert len(located) == 2
    assert [ln for ln in r.err.splitlines() if ln.startswith("bad.yaml:")] == located
    assert "runbook: bad.yaml: invalid (2 problem(s))" in r.err
    assert r.out == ""
    assert "Traceback" not in r.output
    assert sorted(os.listdir(tmp_path)) == before
    assert not Path(".runbook").exists()


def test_missing_file(runbook) -> None:
    r = runbook("plan", "nope.yaml")
    assert r.code == 2
    assert "nope.yaml:1:1: cannot read: No such file or directory" in r.err


def test_help_teaches() -> None:
    from click.testing import CliRunner

    from runbook_engine.cli import cli

    out = CliRunner().invoke(cli, ["plan", "--help"]).output
    for words in (
        "in groups",
        "risk register",
        "--format",
        "markdown",
        "Examples:",
        "runbook plan",
    ):
        assert words in out, words


def test_plan_shows_where_each_step_stands_against_the_state(runbook) -> None:
    from tests.engine.helpers import sh, write

    steps = [sh("a", "echo a"), sh("b", "exit 1"), sh("c", "echo c")]
    write("s.yaml", phases=[{"id": "p", "steps": steps}])
    r = runbook("plan", "s.yaml", "--format", "json")
    assert r.code == 0
    assert {s["id"]: s["status"] for g in json.loads(r.out)["groups"] for s in g["steps"]} == {
        "a": None,
        "b": None,
        "c": None,
    }
    assert runbook("apply", "s.yaml", "--yes").code == 1
    steps[0] = sh("a", "echo a, changed")
    write("s.yaml", phases=[{"id": "p", "steps": steps}])
    r = runbook("plan", "s.yaml", "--format", "json")
    got = {
        s["id"]: (s["status"], s["changed"])
        for g in json.loads(r.out)["groups"]
        for s in g["steps"]
    }
    assert got == {"a": ("done", True), "b": ("to run", False), "c": ("to run", False)}
    r = runbook("plan", "s.yaml")
    assert "[done (changed since applied)] a" in r.out and "[to run] b" in r.out
