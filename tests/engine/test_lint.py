"""Lint warnings of SPEC §6: printed, located, exit 0; errors (exit 2) under ``--strict``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HEAD = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: lint}
hosts:
  app1: {address: 127.0.0.1}
"""  # 5 lines

WITH = {
    "shell": "{command: 'true'}",
    "ssh": "{command: uptime, hosts: [app1]}",
    "sql.exec": "{dsn: 'sqlite:///x.db', sql: 'SELECT 1'}",
    "sql.copy": "{source: 'sqlite:///a.db', target: 'sqlite:///b.db', table: t, key: id}",
    "http": "{url: 'http://127.0.0.1:9/'}",
    "notify": "{channel: outbox, to: [a@example.org], message: hi}",
    "check": "{command: 'echo 1', condition: 'value == 1'}",
    "approval": "{message: go?}",
    "wait": "{duration: 0s}",
    "sql.query": "{dsn: 'sqlite:///x.db', query: 'SELECT 1'}",
    "sql.verify": "{source: 'sqlite:///a.db', target: 'sqlite:///b.db', table: t, key: id}",
}
CHANGING = ["shell", "ssh", "sql.exec", "sql.copy", "http", "notify"]
READING = ["check", "approval", "wait", "sql.query", "sql.verify"]


def one_step(action: str, extra: str = "") -> str:
    return HEAD + (
        "phases:\n"
        "  - id: only\n"
        "    steps:\n"
        "      - id: s\n"  # line 9
        f"        action: {action}\n"
        f"        with: {WITH[action]}\n" + extra
    )


def check(runbook, text: str, where: str, message: str, code: str) -> None:
    """One warning: exit 0 and the located line; exit 2 under --strict; in JSON too."""
    Path("lint.yaml").write_text(text)
    r = runbook("validate", "lint.yaml")
    assert r.code == 0, r.err
    assert r.err.splitlines() == [f"lint.yaml:{where}: warning: {message}"]
    assert r.out.strip() == "lint.yaml: valid (1 warning(s))"
    strict = runbook("validate", "--strict", "lint.yaml")
    assert strict.code == 2
    assert f"lint.yaml:{where}: warning: {message}" in strict.err
    assert "lint.yaml: invalid (1 problem(s))" in strict.err
    doc = json.loads(runbook("validate", "--strict", "--format", "json", "lint.yaml").out)
    assert doc["valid"] is False
    (problem,) = doc["files"][0]["problems"]
    assert (problem["severity"], problem["code"]) == ("warning", code)
    assert not Path(".runbook").exists()


@pytest.mark.parametrize("action", CHANGING)
def test_changing_step_without_rollback(runbook, action: str) -> None:
    check(
        runbook,
        one_step(action),
        "9:9: phases[0].steps[0]",
        f"step 's' ({action}) changes something but has no `rollback` "
        "(write `rollback: none` if there is nothing to undo)",
        "no-rollback",
    )


@pytest.mark.parametrize("action", CHANGING)
def test_rollback_none_or_an_action_silences_it(runbook, action: str) -> None:
    for extra in (
        "        rollback: none\n",
        "        rollback: {action: wait, with: {duration: 0s}}\n",
    ):
        Path("ok.yaml").write_text(one_step(action, extra))
        r = runbook("validate", "--strict", "ok.yaml")
        assert (r.code, r.err) == (0, ""), r.err


@pytest.mark.parametrize("action", READING)
def test_gates_and_reads_need_no_rollback(runbook, action: str) -> None:
    Path("ok.yaml").write_text(one_step(action))
    r = runbook("validate", "--strict", "ok.yaml")
    assert (r.code, r.err) == (0, ""), r.err
    assert r.out.strip() == "ok.yaml: valid"


RISKY = one_step("wait", "        risks: [slow]\n")  # the risk item is on line 14


def test_risk_without_contingency(runbook) -> None:
    text = RISKY + "risks:\n  - {id: slow, likelihood: low, impact: low}\n"
    check(runbook, text, "14:5: risks[0]", "risk 'slow' has no contingency", "risk-no-contingency")


@pytest.mark.parametrize("impact", ["high", "critical"])
def test_high_or_critical_risk_no_step_names(runbook, impact: str) -> None:
    text = (
        one_step("wait")
        + f"risks:\n  - {{id: outage, likelihood: low, impact: {impact}, contingencies: [page]}}\n"
        + "contingencies:\n  - {id: page, action: wait, with: {duration: 0s}}\n"
    )
    check(
        runbook,
        text,
        "13:5: risks[0]",
        f"{impact} risk 'outage' is named by no step: nothing would trigger its contingencies",
        "risk-unused",
    )


@pytest.mark.parametrize("impact", ["low", "medium"])
def test_lesser_risk_no_step_names_is_fine(runbook, impact: str) -> None:
    text = (
        one_step("wait")
        + f"risks:\n  - {{id: outage, likelihood: high, impact: {impact}, contingencies: [page]}}\n"
        + "contingencies:\n  - {id: page, action: wait, with: {duration: 0s}}\n"
    )
    Path("ok.yaml").write_text(text)
    r = runbook("validate", "--strict", "ok.yaml")
    assert (r.code, r.err) == (0, ""), r.err


def test_contingency_no_risk_names(runbook) -> None:
    text = one_step("wait") + "contingencies:\n  - {id: page, action: wait, with: {duration: 0s}}\n"
    check(
        runbook,
        text,
        "13:5: contingencies[0]",
        "contingency 'page' is named by no risk",
        "contingency-unused",
    )


def test_phase_without_waves_and_steps(runbook) -> None:
    text = one_step("wait") + "  - id: later\n"
    check(runbook, text, "12:5: phases[1]", "phase 'later' has no steps", "empty-phase")


def test_strict_reports_every_warning_of_every_file(runbook) -> None:
    Path("a.yaml").write_text(one_step("shell") + "  - id: later\n    steps: []\n")
    Path("b.yaml").write_text(one_step("wait"))
    r = runbook("validate", "--strict", "a.yaml", "b.yaml")
    assert r.code == 2
    warnings = [ln for ln in r.err.splitlines() if ": warning: " in ln]
    assert [w.split(": ", 2)[:2] for w in warnings] == [
        ["a.yaml:9:9", "phases[0].steps[0]"],
        ["a.yaml:12:5", "phases[1]"],
    ]
    assert "b.yaml: valid" in r.out
    assert runbook("validate", "a.yaml", "b.yaml").code == 0
