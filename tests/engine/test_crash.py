"""Crash safety (SIGKILL at many instants), Ctrl-C/SIGTERM, and secrets never on disk/output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.engine.helpers import RUNBOOK, Output, ledger_lines, runbook_yaml, sh, wait_until

STEPS = 30


def _ledger_runbook(path: Path) -> None:
    steps = [sh(f"s{i:02d}", f"echo s{i:02d} >> ledger.txt; sleep 0.02") for i in range(STEPS)]
    path.write_text(runbook_yaml("crash", phases=[{"id": "p", "steps": steps}]))


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUNBOOK, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _crash_and_recover(cwd: Path, instant: tuple[int, float]) -> tuple[list[str], int]:
    """Kill the apply once ``done`` steps wrote their line, ``jitter`` seconds later."""
    done, jitter = instant
    _ledger_runbook(cwd / "r.yaml")
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ledger = cwd / "ledger.txt"
    wait_until(lambda: len(ledger_lines(ledger)) >= done, f"{done} steps ran", proc)
    time.sleep(jitter)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = _run(cwd, "status", "r.yaml", "--format", "json")
    assert status.returncode == 0, status.stderr  # the state always loads
    resolved = 0
    for _ in range(STEPS + 5):
        r = _run(cwd, "apply", "r.yaml", "--yes")
        if r.returncode == 0:
            break
        assert r.returncode == 3, r.stdout + r.stderr
        doc = json.loads(_run(cwd, "status", "r.yaml", "--format", "json").stdout)
        ledger = (cwd / "ledger.txt").read_text().split() if (cwd / "ledger.txt").exists() else []
        for step in doc["steps"]:
            if step["status"] == "unknown":
                # the operator checks the ledger and says what happened
                outcome = "succeeded" if step["id"] in ledger else "pending"
                rr = _run(cwd, "resolve", "r.yaml", step["id"], "--as", outcome)
                assert rr.returncode == 0, rr.stderr
                resolved += 1
    else:
        raise AssertionError("the run never finished")
    return (cwd / "ledger.txt").read_text().split(), resolved


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~200 runs of the CLI: minutes on a loaded machine
def test_sigkill_at_32_instants_never_runs_a_step_twice(tmp_path: Path) -> None:
    # spread over the run by its progress, not by a time measured on an earlier run (the
    # load of the machine may change in between): the Nth kill comes once N/32 of the steps
    # wrote their line, 0-30 ms later (each step sleeps 20 ms after its line)
    instants = [(STEPS * i // 32, (i % 4) * 0.01) for i in range(32)]
    dirs = []
    for i in range(32):
        d = tmp_path / f"kill{i:02d}"
        d.mkdir()
        dirs.append(d)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_crash_and_recover, dirs, instants))
    expected = [f"s{i:02d}" for i in range(STEPS)]
    for (ledger, _resolved), (done, jitter) in zip(results, instants, strict=True):
        assert ledger == expected, f"kill {jitter:.2f}s after {done} steps: {ledger}"
    # the kills landed at different points: some before any step, some mid-run
    assert sum(1 for _, resolved in results if resolved) >= 5


def test_sigterm_lets_running_step_finish_then_exit_130(tmp_path: Path) -> None:
    # `a` runs until the test has seen the SIGTERM taken (file `go`), then finishes
    wait_go = "while [ ! -e go ]; do sleep 0.05; done"
    steps = [
        sh("a", f"touch a.started; {wait_go}; echo a >> ledger.txt"),
        sh("b", "echo b >> ledger.txt"),
    ]
    (tmp_path / "r.yaml").write_text(runbook_yaml("sig", phases=[{"id": "p", "steps": steps}]))
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes", "--grace", "20"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = Output(proc)
    _wait_for(tmp_path / "a.started", proc)
    proc.send_signal(signal.SIGTERM)
    output.wait_for("interrupted: starting nothing new")
    (tmp_path / "go").touch()
    out, err = output.finish(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted: starting nothing new" in out
    assert "resume with: runbook apply r.yaml" in out
    assert (tmp_path / "ledger.txt").read_text().split() == ["a"]  # b never started
    r = _run(tmp_path, "apply", "r.yaml", "--yes")
    assert r.returncode == 0
    assert (tmp_path / "ledger.txt").read_text().split() == ["a", "b"]


def test_second_interrupt_stops_steps_unknown_unless_idempotent(tmp_path: Path) -> None:
    steps = [
        {"id": "pause", "action": "wait", "with": {"duration": "60s"}},
        sh("cmd", "touch cmd.started; sleep 60"),
    ]
    doc = runbook_yaml("sig2", phases=[{"id": "p", "parallel": True, "steps": steps}])
    (tmp_path / "r.yaml").write_text(doc)
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = Output(proc)
    _wait_for(tmp_path / "cmd.started", proc)
    proc.send_signal(signal.SIGINT)
    output.wait_for("interrupted: starting nothing new")  # the first one was taken
    proc.send_signal(signal.SIGINT)
    out, err = output.finish(timeout=60)
    assert proc.returncode == 130, out + err
    assert "stopping the running steps now" in out
    doc2 = json.loads(_run(tmp_path, "status", "r.yaml", "--format", "json").stdout)
    by = {s["id"]: s["status"] for s in doc2["steps"]}
    assert by == {"pause": "pending", "cmd": "unknown"}


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    wait_until(path.exists, f"{path.name} appears", proc)


CANARY = "canary-7f3a9-s3cret"
URL_CANARY = "canary-url-pw-41c"  # a password inside a URL variable, never declared secret


def test_canary_secret_never_reaches_disk_or_output(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(CANARY + "\n")
    steps = [
        sh("echo-it", "echo the token is {{ secrets.tok }}"),
        sh("dsn-it", "echo connecting to {{ vars.dsn }}"),
        sh(
            "fail-with-it",
            "echo {{ secrets.tok }} >&2; exit 1",
            risks=["leak"],
            on_failure="continue",
        ),
        sh(
            "env-it",
            "printenv TOKEN",
            **{"with": {"command": "printenv TOKEN", "env": {"TOKEN": "{{ secrets.tok }}"}}},
        ),
    ]
    doc = runbook_yaml(
        "sec",
        secrets={"tok": {"file": str(tmp_path / "token")}},
        vars={"dsn": f"postgresql://app:{URL_CANARY}@db.example:5432/erp"},
        risks=[{"id": "leak", "likelihood": "low", "impact": "low", "contingencies": ["tell"]}],
        contingencies=[
            {
                "id": "tell",
                "action": "shell",
                "with": {"command": "echo {{ secrets.tok }}; echo {{ failed_step.error }}"},
            }
        ],
        phases=[{"id": "p", "parallel": True, "steps": steps}],
    )
    work = tmp_path / "canary"
    work.mkdir()
    (work / "r.yaml").write_text(doc)
    outputs = []
    for args in (
        ["apply", "r.yaml", "--yes"],
        ["apply", "r.yaml", "--yes", "--format", "json"],
        ["status", "r.yaml", "--format", "json"],
        ["status", "r.yaml"],
        ["apply", "r.yaml", "--dry-run"],
    ):
        r = _run(work, *args)
        outputs += [r.stdout, r.stderr]
    assert "***" in "".join(outputs)  # the secret was used, and masked
    assert "postgresql://app:***@db.example" in "".join(outputs)
    for text in outputs:
        assert CANARY not in text and URL_CANARY not in text
    for path in (work / ".runbook").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert CANARY.encode() not in data and URL_CANARY.encode() not in data, path
    logs = Path(os.environ.get("XDG_STATE_HOME", "/nonexistent"))
    for path in logs.rglob("*") if logs.exists() else []:
        assert CANARY.encode() not in path.read_bytes()
