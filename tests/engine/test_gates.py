"""A gate that cannot tell waits for a person (SPEC §7, §8, §11): `approve` passes it,
`resolve --as failed` fails it; the decision is bound to the measurements it was made on,
survives a crash, and never applies to a later evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.engine.helpers import journal, runbook_yaml, sh, status_json

CALLS = "calls.txt"  # one line per measurement the gate's command took
METRIC = f"echo x >> {CALLS}; cat metric.txt"


def plain(**gate_with: Any) -> Path:
    """before -> gate (a command gate on metric.txt) -> after, the gate naming a risk."""
    doc = runbook_yaml(
        "g",
        risks=[
            {
                "id": "churn",
                "description": "customers leave",
                "likelihood": "low",
                "impact": "high",
                "mitigation": "gate",
                "owner": "cs",
                "contingencies": ["page"],
            }
        ],
        contingencies=[{"id": "page", "action": "shell", "with": {"command": "echo p >> paged"}}],
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("before", "true"),
                    {
                        "id": "gate",
                        "action": "check",
                        "risks": ["churn"],
                        "with": {"command": METRIC, "condition": "value < 5", **gate_with},
                    },
                    sh("after", "echo after > after.txt"),
                ],
            }
        ],
    )
    Path("metric.txt").write_text("")  # no output yet: an inconclusive measurement
    path = Path("g.yaml")
    path.write_text(doc)
    return path


def calls() -> int:
    return len(Path(CALLS).read_text().split()) if Path(CALLS).exists() else 0


def step(runbook: Any, sid: str, file: str = "g.yaml") -> dict[str, Any]:
    (got,) = [s for s in status_json(runbook, file)["steps"] if s["id"] == sid]
    doc: dict[str, Any] = got
    return doc


def test_an_inconclusive_gate_waits_with_its_measurements_everywhere(runbook: Any) -> None:
    plain(count=2, interval="0s")
    r = runbook("apply", "g.yaml", "--yes", "--format", "json")
    assert r.code == 3, r.output
    events = [json.loads(line) for line in r.out.splitlines()]
    measured = [e["data"] for e in events if e.get("kind") == "check.measured"]
    assert [m["outcome"] for m in measured] == ["inconclusive", "inconclusive"]
    assert measured[0]["reason"] == "command `echo x >> calls.txt; cat metric.txt` printed nothing"
    (waiting,) = [e for e in events if e.get("kind") == "check.waiting"]
    assert waiting["data"]["measurements"] == measured
    (paused,) = [e for e in events if e.get("event") == "step" and e.get("status") == "waiting"]
    assert paused["error"].startswith(
        "gate inconclusive: 0 passed, 0 failed, 2 inconclusive of 2 measurement(s) "
        "(failure_limit 0, inconclusive_limit 0): #1 —: inconclusive (command `echo x >> "
    )
    (summary,) = [e for e in events if e.get("event") == "summary"]
    assert "pass it with: runbook approve g.yaml gate [--comment TEXT]" in summary["message"]
    assert "fail it with: runbook resolve g.yaml gate --as failed" in summary["message"]
    # status: text and JSON
    text = runbook("status", "g.yaml").out
    assert "gate    waiting          1" in text and "inconclusive_limit 0):\n" in text
    assert "      #2 —: inconclusive (command `echo x >> calls.txt; cat metric.txt` printed" in text
    assert (
        "      decide: runbook approve g.yaml gate (pass) or runbook resolve g.yaml gate " in text
    )
    gate = step(runbook, "gate")["gate"]
    assert gate["measurements"] == measured and gate["decision"] is None
    assert (gate["inconclusive"], gate["outcome"], gate["attempt"]) == (2, "inconclusive", 1)
    # the report
    md = runbook("report", "g.yaml").out
    assert "| gate | value &lt; 5 | waiting | 0/2, 2 inconclusive | — | — ?, — ? |" in md
    assert "#### Waiting for a person's decision" in md
    assert "| gate | gate inconclusive: 0 passed, 0 failed, 2 inconclusive of 2" in md
    doc = json.loads(runbook("report", "g.yaml", "--format", "json").out)
    (g,) = [g for p in doc["phases"] for g in p["gates"]]
    assert g["status"] == "waiting" and g["waiting"] == paused["error"]
    assert [m["outcome"] for m in g["measurements"]] == ["inconclusive"] * 2
    assert "gate waits for a person: 2 of 2 measurement(s) inconclusive." in md
    html = runbook("report", "g.yaml", "--format", "html").out
    assert "<h4>Waiting for a person's decision</h4>" in html
    assert "no value inconclusive (command `echo x &gt;&gt; calls.txt; cat metric.txt`" in html
    assert not Path("after.txt").exists()


def test_approve_passes_the_gate_and_the_run_goes_on(runbook: Any) -> None:
    plain()
    assert runbook("apply", "g.yaml", "--yes").code == 3
    r = runbook("approve", "g.yaml", "gate", "--by", "maria", "--comment", "quiet week")
    assert r.code == 0, r.output
    run_id = status_json(runbook, "g.yaml")["run"]["id"]
    assert r.out == (
        f"gate: gate passed by root on behalf of maria for run {run_id}, on its 1 "
        "measurement(s); run `runbook apply g.yaml` to go on\n"
    )
    (rec,) = [x for x in journal(".runbook", "g") if x["t"] == "gate"]
    assert (rec["decision"], rec["by"], rec["on_behalf_of"], rec["comment"]) == (
        "passed",
        "root",
        "maria",
        "quiet week",
    )
    assert rec["run"] == run_id and rec["attempt"] == 1
    assert [m["outcome"] for m in rec["measurements"]] == ["inconclusive"]
    assert step(runbook, "gate")["gate"]["decision"]["by"] == "root"
    r = runbook("apply", "g.yaml", "--yes")
    assert r.code == 0, r.output
    assert "gate: gate passed (decided by root)" in r.out
    got = step(runbook, "gate")
    assert got["status"] == "succeeded" and got["outputs"]["outcome"] == "passed (decided by root)"
    assert got["outputs"]["decision"]["on_behalf_of"] == "maria"
    assert calls() == 1  # the decision ended it: nothing measured again
    assert Path("after.txt").read_text() == "after\n"
    md = runbook("report", "g.yaml").out
    assert "#### Decided by a person" in md
    assert "| gate | passed | root | maria | quiet week |" in md
    assert "gate gate passed by the decision of root (inconclusive)." in md


def test_resolve_failed_fails_the_gate_as_a_failed_measurement_would(runbook: Any) -> None:
    plain()
    assert runbook("apply", "g.yaml", "--yes").code == 3
    r = runbook("resolve", "g.yaml", "gate", "--as", "failed", "--comment", "no data, no go")
    assert r.code == 0, r.output
    r = runbook("apply", "g.yaml", "--yes")
    assert r.code == 1, r.output
    assert "✗ gate failed: failed by the decision of root on an inconclusive evaluation: no " in (
        r.out
    )
    assert "contingency page (risk churn, after gate) succeeded" in r.out
    assert Path("paged").read_text() == "p\n" and not Path("after.txt").exists()
    assert step(runbook, "gate")["outputs"]["outcome"] == "failed (decided by root)"
    # the next apply retries the failed gate: a fresh evaluation, not the old decision
    Path("metric.txt").write_text("1\n")
    r = runbook("apply", "g.yaml", "--yes")
    assert r.code == 1, r.output  # a contingency fired in this run: never a plain success
    assert step(runbook, "gate")["outputs"]["outcome"] == "passed"
    assert calls() == 2 and Path("after.txt").exists()


def test_a_decision_survives_a_crash_of_the_apply_that_uses_it(runbook: Any) -> None:
    plain()
    assert runbook("apply", "g.yaml", "--yes").code == 3
    assert runbook("approve", "g.yaml", "gate").code == 0
    # an apply killed (SIGKILL) right after the gate read the decision, before its end was
    # written: the state says the gate was running
    crash = (
        "import os, signal\n"
        "from runbook_engine.plugins import check\n"
        "read = check.Gate.decided\n"
        "def dies(self):\n"
        "    got = read(self)\n"
        "    if got is not None:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return got\n"
        "check.Gate.decided = dies\n"
        "from runbook_engine.cli import run\n"
        "raise SystemExit(run(['apply', 'g.yaml', '--yes']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", crash], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert step(runbook, "gate")["status"] == "running"
    r = runbook("apply", "g.yaml", "--yes")
    assert r.code == 0, r.output
    assert "· gate pending again (found running after a crash; idempotent: runs again)" in r.out
    assert step(runbook, "gate")["outputs"]["outcome"] == "passed (decided by root)"
    assert calls() == 1


def test_a_passed_decision_does_not_apply_to_a_replaced_gate(runbook: Any) -> None:
    plain()
    assert runbook("apply", "g.yaml", "--yes").code == 3
    token = step(runbook, "gate")["gate"]["token"]
    assert runbook("approve", "g.yaml", "gate").code == 0
    assert runbook("apply", "g.yaml", "--yes").code == 0
    r = runbook("apply", "g.yaml", "--yes", "--replace", "gate")
    assert r.code == 3, r.output  # measured again: still nothing to measure
    again = step(runbook, "gate")["gate"]
    assert again["token"] != token and again["decision"] is None
    assert calls() == 2


def test_who_may_decide_and_what_is_refused(runbook: Any) -> None:
    plain(approvers=["maria"])
    for args in (("approve", "g.yaml", "gate"), ("resolve", "g.yaml", "gate", "--as", "failed")):
        r = runbook(*args)
        assert r.code == 2 and "no run of g is in progress: start one with `runbook apply" in r.err
    assert not Path(".runbook").exists()  # refused before anything was written
    assert runbook("apply", "g.yaml", "--yes").code == 3
    before = len(journal(".runbook", "g"))
    r = runbook("approve", "g.yaml", "gate", "--by", "maria")
    assert r.code == 2, r.output
    assert "'root' may not decide gate: its approvers are maria" in r.err  # --by is not who
    for status in ("succeeded", "pending"):
        r = runbook("resolve", "g.yaml", "gate", "--as", status)
        assert r.code == 2
        assert "gate is a gate waiting for a decision: resolve takes only `--as failed`" in r.err
    assert len(journal(".runbook", "g")) == before  # nothing written


def test_only_a_waiting_gate_is_decided(runbook: Any) -> None:
    gate = {
        "id": "gate",
        "action": "check",
        "with": {"command": "echo 1", "condition": "value < 5"},
    }
    hold = {"id": "hold", "action": "approval"}
    phases = [{"id": "p", "parallel": True, "steps": [gate, hold, sh("other", "true")]}]
    Path("w.yaml").write_text(runbook_yaml("w", phases=phases))
    assert runbook("apply", "w.yaml", "--yes").code == 3  # the approval holds the run
    r = runbook("approve", "w.yaml", "gate")
    assert r.code == 2
    assert "gate is succeeded, not waiting for a decision: a gate is decided only while" in r.err
    r = runbook("approve", "w.yaml", "other")
    assert r.code == 2
    assert "'other' is not an approval step or a gate of w (approval steps: hold; gates: gate)" in (
        r.err
    )


def test_allow_self_false_refuses_the_operator_who_started_the_run(runbook: Any) -> None:
    plain(allow_self=False)
    assert runbook("apply", "g.yaml", "--yes").code == 3
    r = runbook("approve", "g.yaml", "gate")
    assert r.code == 2
    assert "'root' started run" in r.err and "may not decide gate (`allow_self: false`)" in r.err
    r = runbook("resolve", "g.yaml", "gate", "--as", "failed")
    assert r.code == 2 and "`allow_self: false`" in r.err


def test_a_changed_copy_and_a_second_decision_are_refused(runbook: Any) -> None:
    plain()
    assert runbook("apply", "g.yaml", "--yes").code == 3
    text = Path("g.yaml").read_text()
    Path("g.yaml").write_text(text.replace("value < 5", "value < 6"))
    r = runbook("approve", "g.yaml", "gate")
    assert r.code == 2 and "your copy of g.yaml differs from the runbook run " in r.err
    Path("g.yaml").write_text(text)
    assert runbook("approve", "g.yaml", "gate").code == 0
    before = len(journal(".runbook", "g"))
    for args in (("approve", "g.yaml", "gate"), ("resolve", "g.yaml", "gate", "--as", "failed")):
        r = runbook(*args)
        assert r.code == 2 and "gate was already decided (passed by root at " in r.err
    assert len(journal(".runbook", "g")) == before


def test_resolve_refuses_a_waiting_approval_step(runbook: Any) -> None:
    Path("a.yaml").write_text(
        runbook_yaml("a", phases=[{"id": "p", "steps": [{"id": "ok", "action": "approval"}]}])
    )
    assert runbook("apply", "a.yaml", "--yes").code == 3
    r = runbook("resolve", "a.yaml", "ok", "--as", "failed")
    assert r.code == 2
    assert "ok waits for an approval: resolve does not decide it" in r.err
