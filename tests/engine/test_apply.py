"""apply: order, parallelism, when, retries, timeouts, policies, contingencies, summaries."""

from __future__ import annotations

import time
from pathlib import Path

from tests.engine.helpers import journal, ledger_lines, sh, status_json, statuses, write


def test_sequential_phase_runs_in_document_order_and_records_everything(runbook) -> None:
    write(
        "r.yaml",
        phases=[{"id": "p", "steps": [sh(f"s{i}", f"echo s{i} >> ledger.txt") for i in range(5)]}],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == [f"s{i}" for i in range(5)]
    assert "succeeded — 5 succeeded" in r.out
    doc = status_json(runbook, "r.yaml")
    assert doc["run"]["status"] == "succeeded"
    step = doc["steps"][0]
    assert set(step) >= {
        "id",
        "phase",
        "wave",
        "status",
        "attempts",
        "started_at",
        "finished_at",
        "error",
        "outputs",
    }
    assert step["outputs"]["exit_code"] == 0 and step["attempts"] == 1
    kinds = [(rec["t"], rec.get("status")) for rec in journal(".runbook", "t")]
    assert kinds[0] == ("run", "running")
    assert kinds.count(("step", "running")) == 5 and kinds.count(("step", "succeeded")) == 5


def test_without_terminal_and_yes_apply_refuses_and_writes_nothing(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a >> ledger.txt")]}])
    r = runbook("apply", "r.yaml")
    assert r.code == 2
    assert "pass --yes" in r.err
    assert not Path(".runbook").exists() and not Path("ledger.txt").exists()


def test_parallel_phase_overlaps_and_respects_needs(runbook) -> None:
    steps = [sh(f"s{i}", f"sleep 0.3; echo s{i} >> ledger.txt") for i in range(3)]
    steps.append(sh("last", "echo last >> ledger.txt", needs=["s0", "s1", "s2"]))
    write("r.yaml", phases=[{"id": "p", "parallel": True, "steps": steps}])
    r = runbook("apply", "r.yaml", "--yes", "--max-parallel", "3")
    assert r.code == 0, r.output
    lines = ledger_lines()
    assert lines[-1] == "last" and sorted(lines[:3]) == ["s0", "s1", "s2"]
    recs = [x for x in journal(".runbook", "t") if x["t"] == "step"]
    started = [x["at"] for x in recs if x["status"] == "running" and x["id"] != "last"]
    finished = [x["at"] for x in recs if x["status"] == "succeeded" and x["id"] != "last"]
    assert max(started) < min(finished)  # all three were running at once


def test_when_skips_and_dependents_still_run(runbook) -> None:
    write(
        "r.yaml",
        vars={"go": False},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt", when="vars.go"),
                    sh("b", "echo b >> ledger.txt"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["b"]
    doc = status_json(runbook, "r.yaml")
    assert doc["steps"][0]["status"] == "skipped" and doc["steps"][0]["reason"] == "when"
    r = runbook("apply", "r.yaml", "--yes", "--var", "go=true")
    assert r.code == 0
    assert "nothing to do" not in r.out  # a new run re-evaluates `when`
    assert ledger_lines() == ["b", "a"]


def test_retries_with_backoff_count_attempts(runbook) -> None:
    cmd = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; test $n -ge 3"
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [sh("flaky", cmd, retries={"attempts": 3, "delay": "10ms", "backoff": 2})],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert Path("n").read_text().strip() == "3"
    assert status_json(runbook, "r.yaml")["steps"][0]["attempts"] == 3
    retries = [x for x in journal(".runbook", "t") if x["t"] == "retry"]
    assert [x["attempt"] for x in retries] == [2, 3]
    assert retries[1]["delay"] == 0.02  # 10ms then x2


def test_timeout_kills_the_whole_process_group(runbook) -> None:
    cmd = "sleep 30 & echo $! > child.pid; sleep 30"
    # 2 s: time enough for the shell to write child.pid on a loaded machine
    write("r.yaml", phases=[{"id": "p", "steps": [sh("slow", cmd, timeout="2s")]}])
    started = time.monotonic()
    r = runbook("apply", "r.yaml", "--yes")
    assert time.monotonic() - started < 20
    assert r.code == 1
    assert "timed out after 2s" in r.out
    stat = Path(f"/proc/{int(Path('child.pid').read_text())}/stat")

    def dead() -> bool:  # killed: gone, or a zombie until init reaps it
        try:
            return stat.read_text().split(") ", 1)[1].startswith("Z")
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 60
    while not dead() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dead(), "the background child survived the timeout"


def test_abort_stops_new_steps_and_resume_retries_failed(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo a >> ledger.txt"),
                    sh("b", "test -e fixed && echo b >> ledger.txt"),
                    sh("c", "echo c >> ledger.txt"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1
    assert "failed: b: `test -e fixed && echo b >> ledger.txt` exited with status 1" in r.out
    assert "resume with: runbook apply r.yaml" in r.out
    assert ledger_lines() == ["a"]
    run_id = status_json(runbook, "r.yaml")["run"]["id"]
    Path("fixed").touch()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["a", "b", "c"]  # a was not run again
    doc = status_json(runbook, "r.yaml")
    assert doc["run"]["id"] == run_id and doc["run"]["status"] == "succeeded"


def test_continue_skips_downstream_and_runs_independent_work(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    sh("bad", "exit 3", on_failure="continue"),
                    sh("after-bad", "echo after >> ledger.txt", needs=["bad"]),
                    sh("later", "echo later2 >> ledger.txt", needs=["after-bad"]),
                    sh("free", "echo free >> ledger.txt"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1
    assert ledger_lines() == ["free"]
    st = status_json(runbook, "r.yaml")["steps"]
    by = {s["id"]: s for s in st}
    assert by["bad"]["status"] == "failed"
    assert by["after-bad"]["status"] == "skipped" and by["after-bad"]["reason"] == "upstream"
    assert by["later"]["status"] == "skipped"
    assert "FAILED" in r.out


def test_contingencies_fire_once_in_order_then_rollback_policy(runbook) -> None:
    write(
        "r.yaml",
        risks=[
            {
                "id": "loss",
                "likelihood": "low",
                "impact": "critical",
                "contingencies": ["first", "second"],
            }
        ],
        contingencies=[
            {
                "id": "first",
                "action": "shell",
                "with": {"command": "echo first {{ failed_step.id }} >> ledger.txt"},
            },
            {"id": "second", "action": "shell", "with": {"command": "echo second >> ledger.txt"}},
        ],
        phases=[
            {
                "id": "p",
                "steps": [
                    sh(
                        "a",
                        "echo a >> ledger.txt",
                        rollback={
                            "action": "shell",
                            "with": {"command": "echo undo-a >> ledger.txt"},
                        },
                    ),
                    sh(
                        "b",
                        "echo b >> ledger.txt",
                        rollback={
                            "action": "shell",
                            "with": {"command": "echo undo-b >> ledger.txt"},
                        },
                    ),
                    sh("c", "exit 1", risks=["loss"], on_failure="rollback"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1
    assert ledger_lines() == ["a", "b", "first c", "second", "undo-b", "undo-a"]
    assert "contingencies fired in this run: first, second" in r.out
    assert "rolled back: a, b" in r.out
    doc = status_json(runbook, "r.yaml")
    assert doc["run"]["status"] == "rolled_back"
    assert {s["id"]: s["status"] for s in doc["steps"]} == {
        "a": "rolled_back",
        "b": "rolled_back",
        "c": "failed",
    }


def test_rollback_wave_undoes_only_that_wave(runbook) -> None:
    undo = {"action": "shell", "with": {"command": "echo undo-{{ wave.id }} >> ledger.txt"}}
    write(
        "r.yaml",
        phases=[
            {
                "id": "roll",
                "waves": [{"id": "w1"}, {"id": "w2"}],
                "steps": [
                    sh("copy", "echo copy-{{ wave.id }} >> ledger.txt", rollback=undo),
                    sh("gate", "test {{ wave.id }} != w2", on_failure="rollback-wave"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1
    assert ledger_lines() == ["copy-w1", "copy-w2", "undo-w2"]
    assert statuses(runbook, "r.yaml") == {
        "copy[w1]": "succeeded",
        "gate[w1]": "succeeded",
        "copy[w2]": "rolled_back",
        "gate[w2]": "failed",
    }


def test_template_error_at_run_time_fails_the_step_with_its_key(runbook) -> None:
    write(
        "r.yaml", vars={"n": 1}, phases=[{"id": "p", "steps": [sh("a", "echo {{ vars.n / 0 }}")]}]
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1
    assert "template error in with.command" in r.out
    assert "Traceback" not in r.output


def test_outputs_flow_to_later_templates(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("count-rows", "echo 42"),
                    sh(
                        "use", "echo got-{{ steps.count_rows.outputs.stdout | trim }} >> ledger.txt"
                    ),
                    sh("use2", "echo {{ steps['count-rows'].status }} >> ledger.txt"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert ledger_lines() == ["got-42", "succeeded"]


def test_changed_definition_is_flagged_not_rerun_until_replace(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo v1 >> ledger.txt")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo v2 >> ledger.txt")]}])
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0
    assert "nothing to do" in r.out and "changed since applied (not re-run): a" in r.out
    assert status_json(runbook, "r.yaml")["steps"][0]["changed"] is True
    r = runbook("apply", "r.yaml", "--yes", "--replace", "a")
    assert r.code == 0, r.output
    assert ledger_lines() == ["v1", "v2"]
    assert status_json(runbook, "r.yaml")["steps"][0]["changed"] is False


def test_only_runs_a_wave_when_what_it_needs_is_done(runbook) -> None:
    write(
        "r.yaml",
        phases=[
            {"id": "prep", "steps": [sh("p", "echo prep >> ledger.txt")]},
            {
                "id": "roll",
                "waves": [{"id": "w1"}, {"id": "w2"}],
                "steps": [sh("s", "echo s-{{ wave.id }} >> ledger.txt")],
            },
        ],
    )
    r = runbook("apply", "r.yaml", "--yes", "--only", "roll.w1")
    assert r.code == 2 and "must be done first: p" in r.err
    assert runbook("apply", "r.yaml", "--yes", "--only", "prep").code == 0
    assert runbook("apply", "r.yaml", "--yes", "--only", "w1").code == 0
    assert ledger_lines() == ["prep", "s-w1"]
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert ledger_lines() == ["prep", "s-w1", "s-w2"]


def test_dry_run_renders_and_writes_nothing(runbook) -> None:
    write(
        "r.yaml",
        vars={"who": "world"},
        secrets={"tok": {"env": "DRY_TOKEN"}},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo hello {{ vars.who }} {{ secrets.tok }}"),
                    sh("b", "echo {{ steps.a.outputs.stdout }}"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--dry-run")
    assert r.code == 0, r.output
    assert "echo hello world '***'" in r.out  # every {{ }} of a command is quoted
    assert "<a.outputs.stdout>" in r.out
    assert not Path(".runbook").exists()


def test_wave_rollback_reaches_steps_before_a_when_skipped_step(runbook) -> None:
    undo = {"action": "shell", "with": {"command": "echo undo-a >> ledger.txt"}}
    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "waves": [{"id": "w1"}],
                "steps": [
                    sh("a", "echo a >> ledger.txt", rollback=undo),
                    sh("b", "echo b >> ledger.txt", when=False),
                    {"id": "c", "action": "wait", "with": {"duration": "0s"}},
                    sh("d", "false", on_failure="rollback-wave"),
                ],
            }
        ],
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1
    assert ledger_lines() == ["a", "undo-a"]
    assert statuses(runbook, "r.yaml")["a[w1]"] == "rolled_back"


def test_a_run_that_needed_compensation_never_ends_in_a_plain_success(runbook) -> None:
    undo = {"action": "shell", "with": {"command": "echo undo-{{ wave.id }} >> ledger.txt"}}
    write(
        "r.yaml",
        risks=[{"id": "r", "likelihood": "low", "impact": "low", "contingencies": ["tell"]}],
        contingencies=[
            {"id": "tell", "action": "shell", "with": {"command": "echo tell >> ledger.txt"}}
        ],
        phases=[
            {
                "id": "p",
                "waves": [{"id": "w1"}],
                "steps": [
                    sh("copy", "echo copy >> ledger.txt", rollback=undo),
                    sh("gate", "test -e fixed", risks=["r"], on_failure="rollback-wave"),
                ],
            }
        ],
    )
    assert runbook("apply", "r.yaml", "--yes").code == 1
    Path("fixed").touch()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert "succeeded after compensation (exit 1)" in r.out
    assert "contingencies fired in this run: tell" in r.out
    assert "1 step rollback(s) earlier in this run" in r.out
    assert status_json(runbook, "r.yaml")["run"]["status"] == "succeeded"
    r = runbook("apply", "r.yaml", "--yes")  # the run is over: nothing to do, exit 0
    assert r.code == 0 and "nothing to do" in r.out


def test_a_wave_run_again_runs_its_steps_in_order_across_a_when_skipped_step(runbook) -> None:
    """The next attempt of a rolled-back wave runs every step of it in order: a step skipped by
    `when` in the first attempt is evaluated again, not counted as done (the steps after it
    used to start before the ones before it, and the run could end with those never run)."""

    def undo(name: str) -> dict[str, object]:
        return {"action": "shell", "with": {"command": f"echo undo-{name} >> ledger.txt"}}

    write(
        "r.yaml",
        phases=[
            {
                "id": "p",
                "waves": [{"id": "w1"}],
                "steps": [
                    sh("a", "sleep 0.3; echo a >> ledger.txt", rollback=undo("a")),
                    sh("b", "echo b >> ledger.txt", when="vars.never", rollback=undo("b")),
                    sh("c", "echo c >> ledger.txt", rollback=undo("c")),
                    sh("d", "test -e fixed", on_failure="rollback-wave"),
                ],
            }
        ],
        vars={"never": False},
    )
    assert runbook("apply", "r.yaml", "--yes").code == 1
    assert ledger_lines() == ["a", "c", "undo-c", "undo-a"]
    Path("fixed").touch()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1 and "succeeded after compensation (exit 1)" in r.out, r.output
    assert ledger_lines()[4:] == ["a", "c"]
    assert "b[w1] pending again (was skipped (when))" in r.out
    assert statuses(runbook, "r.yaml") == {
        "a[w1]": "succeeded",
        "b[w1]": "skipped",
        "c[w1]": "succeeded",
        "d[w1]": "succeeded",
    }
