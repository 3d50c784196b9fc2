"""``runbook rollback``: reverse dependency order, parallel groups, scope, a failed rollback
that protects what is before it, and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.engine.helpers import journal, ledger_lines, sh, status_json, statuses, write


def undoable(sid: str, undo: str | None = None, **extra: Any) -> dict[str, Any]:
    command = undo or f"echo undo-{sid} >> ledger.txt"
    return sh(
        sid,
        f"echo {sid} >> ledger.txt",
        rollback={"action": "shell", "with": {"command": command}},
        **extra,
    )


def two_phases(c_undo: str | None = None) -> None:
    """prep: a -> b -> c (in order); then spread: x, y side by side, after the whole of prep."""
    write(
        "r.yaml",
        phases=[
            {"id": "prep", "steps": [undoable("a"), undoable("b"), undoable("c", c_undo)]},
            {"id": "spread", "parallel": True, "steps": [undoable("x"), undoable("y")]},
        ],
    )


def test_plan_shows_groups_latest_first_and_writes_nothing(runbook) -> None:
    two_phases()
    assert runbook("apply", "r.yaml", "--yes").code == 0
    before = journal(".runbook", "t")
    r = runbook("rollback", "r.yaml", "--plan")
    assert r.code == 0, r.output
    assert r.out.splitlines() == [
        "rollback plan for t: 5 step(s), 4 group(s)",
        "(each group runs after the one above; steps in a group run in parallel)",
        "  group 1:",
        "    ↶ y: shell: run `echo undo-y >> ledger.txt`",
        "    ↶ x: shell: run `echo undo-x >> ledger.txt`",
        "  group 2:",
        "    ↶ c: shell: run `echo undo-c >> ledger.txt`",
        "  group 3:",
        "    ↶ b: shell: run `echo undo-b >> ledger.txt`",
        "  group 4:",
        "    ↶ a: shell: run `echo undo-a >> ledger.txt`",
    ]
    r = runbook("rollback", "r.yaml", "--plan", "--step", "b")
    assert "5 step(s)" not in r.out and "4 step(s), 3 group(s)" in r.out
    assert "↶ a:" not in r.out
    assert journal(".runbook", "t") == before


def test_step_rolls_back_its_dependents_first_in_reverse_order(runbook) -> None:
    two_phases()
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("rollback", "r.yaml", "--step", "b", "--yes", "--max-parallel", "1")
    assert r.code == 0, r.output
    assert ledger_lines()[5:] == ["undo-y", "undo-x", "undo-c", "undo-b"]
    assert statuses(runbook, "r.yaml") == {
        "a": "succeeded",
        "b": "rolled_back",
        "c": "rolled_back",
        "x": "rolled_back",
        "y": "rolled_back",
    }
    assert status_json(runbook, "r.yaml")["run"]["status"] != "rolled_back"  # a is still done


def test_independent_rollbacks_run_side_by_side(runbook) -> None:
    slow = {sid: f"sleep 0.4; echo undo-{sid} >> ledger.txt" for sid in ("x", "y")}
    write(
        "r.yaml",
        phases=[
            {"id": "prep", "steps": [undoable("a"), undoable("b"), undoable("c")]},
            {
                "id": "spread",
                "parallel": True,
                "steps": [undoable("x", slow["x"]), undoable("y", slow["y"])],
            },
        ],
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("rollback", "r.yaml", "--yes", "--max-parallel", "2")
    assert r.code == 0, r.output
    assert sorted(ledger_lines()[5:7]) == ["undo-x", "undo-y"]
    assert ledger_lines()[7:] == ["undo-c", "undo-b", "undo-a"]
    recs = [x for x in journal(".runbook", "t") if x["t"] == "step" and x["id"] in ("x", "y")]
    started = [x["at"] for x in recs if x["status"] == "rolling_back"]
    ended = [x["at"] for x in recs if x["status"] == "rolled_back"]
    assert len(started) == 2 and max(started) < min(ended)
    assert status_json(runbook, "r.yaml")["run"]["status"] == "rolled_back"


def test_failed_rollback_protects_what_is_before_it_and_resumes(runbook) -> None:
    two_phases(c_undo="test -e fixed && echo undo-c >> ledger.txt")
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert sorted(ledger_lines()[5:]) == ["undo-x", "undo-y"]
    assert "rollback FAILED: c" in r.out
    assert "left as they are (not rolled back past it): a, b" in r.out
    assert statuses(runbook, "r.yaml") == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "rollback_failed",
        "x": "rolled_back",
        "y": "rolled_back",
    }
    Path("fixed").touch()
    r = runbook("rollback", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines()[7:] == ["undo-c", "undo-b", "undo-a"]
    assert set(statuses(runbook, "r.yaml").values()) == {"rolled_back"}
    assert status_json(runbook, "r.yaml")["run"]["status"] == "rolled_back"
