"""report: the post-run evaluation of real runs, in markdown, HTML and JSON; bad input."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import RUNBOOK, sh, status_json, write
from tests.engine.report_run import HOSTILE, applied

STATE = Path(".runbook/acme-migration/state.db")

ME = pwd.getpwuid(os.geteuid()).pw_name  # the identity `approve` records


def report_json(runbook: Any, *args: str) -> dict[str, Any]:
    r = runbook("report", "m.yaml", "--format", "json", *args)
    assert r.code == 0, r.output
    doc: dict[str, Any] = json.loads(r.out)
    return doc


def test_markdown_answers_what_happened_where_it_hurt_and_what_customers_got(runbook) -> None:
    applied(runbook)
    run_id = status_json(runbook, "m.yaml")["run"]["id"]
    r = runbook("report", "m.yaml")
    assert r.code == 0, r.output
    md = r.out
    assert md.startswith("# Run report: acme-migration\n")
    assert f"**Run {run_id}: failed**" in md
    summary = md.split("## Timeline")[0]
    assert "13 steps: 10 succeeded, 1 failed, 2 rolled back." in summary
    assert "Waves: rollout.pilot completed, rollout.early completed, rollout.all rolled back" in (
        summary
    )
    assert "health\\[all\\] failed (attempt 1): check failed: 2 of 2 measurement(s)" in summary
    assert "1 retry on 1 step(s); most on warm-cache (1)." in summary
    assert "contingency tell-support fired for risk churn after health\\[all\\] failed" in summary
    assert (
        "200 rows moved in waves (customers 200; by wave: pilot 20 · early 80 · all 100)."
        in summary
    )
    assert "100 moved back by rollback (wave all)." in summary
    assert "4 notification(s) sent, 0 skipped (already sent), 0 uncertain." in summary
    # the timeline: a mermaid gantt with every step that ran, the failed one critical
    gantt = md.split("```mermaid\n")[1].split("```")[0]
    assert gantt.startswith("gantt\n") and "dateFormat YYYY-MM-DD HH:mm:ss.SSS" in gantt
    assert "  section rollout · all\n" in gantt and "  section contingencies\n" in gantt
    assert "  health[all] :crit, " in gantt and "  undo copy[all] :done, " in gantt
    assert "  go-no-go (waiting) :active, " in gantt
    for step in ("backup", "warm-cache", "announce", "copy[pilot]", "verify[early]"):
        assert f"\n  {step} :done, " in gantt
    # per wave: customers moved, moved back, verified, gates, outcome
    assert (
        "| rollout.all | rolled back | 1 failed, 2 rolled back | 100 | 100 | 100 (0 mismatches) "
        "| health\\[all\\] 0/2 |" in md
    )
    assert "| rollout.pilot | completed | 3 succeeded | 20 | — | 20 (0 mismatches) |" in md
    assert (
        "| health\\[all\\] | value &lt; 0.02 | failed | 0/2 | 0.04 … 0.04 | 0.04 ✗, 0.04 ✗ |"
        in (md)
    )
    assert "| tell-support | churn | health\\[all\\] | notify | succeeded |" in md
    # the real identity (the OS user), and the `--by` name beside it, never instead
    assert f"| go-no-go | {ME} | alice |" in md
    assert "| copy\\[all\\] | rolled\\_back |" in md and "rowcount=100" in md
    assert "| announce | step | succeeded | 3 | 0 | 0 |" in md
    assert (
        "| churn | customers cancel after the move" in md and "| **yes** | health\\[all\\] |" in md
    )
    assert (
        "| data-loss | customer records lost or altered during copy | low | critical | dba | no |"
        in (md)
    )
    # nothing from the journal or the runbook reaches the page as markup
    assert "<script>" not in md and "&lt;script&gt;alert" in md


def test_json_has_every_figure(runbook) -> None:
    applied(runbook)
    doc = report_json(runbook)
    assert doc["run"]["status"] == "failed" and doc["run"]["resumes"] == 1
    assert doc["run"]["id"] == status_json(runbook, "m.yaml")["run"]["id"]
    assert doc["counts"] == {"succeeded": 10, "failed": 1, "rolled_back": 2}
    assert doc["customers_moved"] == 200
    waves = {w["wave"]: w for w in doc["waves"]}
    assert [w["customers_moved"] for w in doc["waves"]] == [20, 80, 100]
    assert waves["all"]["customers_moved_back"] == 100 and waves["all"]["outcome"] == "rolled back"
    gate = waves["all"]["gates"][0]
    assert gate["threshold"] == ["<", 0.02] and gate["status"] == "failed"
    assert [(m["value"], m["passed"]) for m in gate["measurements"]] == [(0.04, False)] * 2
    assert [m["value"] for m in waves["early"]["gates"][0]["measurements"]] == [0.01] * 3
    assert waves["pilot"]["verifies"][0]["rows_checked"] == 20
    assert [(r["step"], r["attempt"]) for r in doc["retries"]] == [("warm-cache", 2)]
    assert [f["step"] for f in doc["failures"]] == ["health[all]"]
    (c,) = doc["contingencies"]
    assert (c["id"], c["risk"], c["step"], c["status"]) == (
        "tell-support",
        "churn",
        "health[all]",
        "succeeded",
    )
    (a,) = doc["approvals"]
    assert a["by"] == ME and a["on_behalf_of"] == "alice" and a["waited"] > 0
    assert a["comment"] == f"go {HOSTILE}"
    assert {r["step"]: r["status"] for r in doc["rollbacks"]} == {
        "verify[all]": "rolled_back",
        "copy[all]": "rolled_back",
    }
    assert {n["step"]: n["sent"] for n in doc["notifications"]} == {
        "announce": 3,
        "tell-support": 1,
    }
    risks = {r["id"]: r for r in doc["risks"]}
    assert risks["churn"]["materialised"] and risks["churn"]["fired"] == ["tell-support: succeeded"]
    assert not risks["data-loss"]["materialised"]
    steps = {s["id"]: s for s in doc["steps"]}
    spans = steps["go-no-go"]["spans"]
    assert [s["kind"] for s in spans] == ["apply", "waiting", "apply"]
    assert [s["status"] for s in spans] == ["waiting", "waiting", "succeeded"]
    assert [s["kind"] for s in steps["copy[all]"]["spans"]] == ["apply", "rollback"]
    assert (
        steps["warm-cache"]["attempts"] == 2 and steps["warm-cache"]["marks"][0]["kind"] == "retry"
    )
    for s in doc["steps"]:
        for span in s["spans"]:
            assert 0 <= span["t0"] <= span["t1"] <= doc["run"]["elapsed"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "srcset", "data") or (
                name.startswith("on")
            ):
                self.urls.append(f"{tag}.{name}={value}")


def test_html_is_one_self_contained_escaped_page(runbook) -> None:
    applied(runbook)
    r = runbook("report", "m.yaml", "--format", "html", "--output", "report.html")
    assert r.code == 0, r.output
    assert r.out == "" and "written to report.html (html)" in r.err
    page = Path("report.html").read_text()
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    assert "iframe" not in parser.tags and "object" not in parser.tags
    assert parser.urls == []  # no src, no href, no event handler: nothing is fetched or run
    assert "url(" not in page and "@import" not in page and "http://" not in page
    assert "content=\"default-src 'none'; style-src 'unsafe-inline'\"" in page
    assert page.count('<svg class="gantt"') == 1 and page.count('<svg class="gate"') == 3
    assert 'fill="#2f9e44"' in page and 'fill="#e03131"' in page and 'fill="#c2255c"' in page
    assert "go &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "customers cancel after the move &lt;script&gt;" in page
    assert "@media print" in page
    # the same report on stdout
    assert runbook("report", "m.yaml", "--format", "html").out == page


def test_secrets_stay_out_of_every_format(runbook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "hunter2-s3cr3t")
    write(
        "s.yaml",
        name="s",
        secrets={"token": {"env": "TOKEN"}},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("show", "echo token={{ secrets.token }}"),
                    sh("fail", "echo {{ secrets.token }} >&2; exit 3", on_failure="continue"),
                ],
            }
        ],
    )
    assert runbook("apply", "s.yaml", "--yes").code == 1
    masked = {"markdown": "echo \\*\\*\\* &gt;", "html": "echo *** &gt;", "json": "token=***"}
    for fmt, shown in masked.items():
        r = runbook("report", "s.yaml", "--format", fmt)
        assert r.code == 0, r.output
        assert "hunter2-s3cr3t" not in r.out + r.err
        assert shown in r.out  # the step's command and output are there, masked


def test_never_applied_is_exit_2_and_creates_nothing(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    r = runbook("report", "r.yaml")
    assert r.code == 2
    assert "runbook 't' has never been applied (no state in .runbook/t): nothing to report" in r.err
    assert "Traceback" not in r.output and not Path(".runbook").exists()


def test_invalid_runbook_gets_located_errors(runbook) -> None:
    Path("bad.yaml").write_text(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: bad}\nphases:\n"
        "  - id: p\n    steps:\n      - {id: a, action: wiat}\n"
    )
    r = runbook("report", "bad.yaml")
    assert r.code == 2
    assert "bad.yaml:7:25: phases[0].steps[0].action: unknown action 'wiat'" in r.err
    assert "Traceback" not in r.output


def test_damaged_journal_is_exit_2_and_left_untouched(runbook) -> None:
    import sqlite3

    applied(runbook)
    con = sqlite3.connect(STATE, isolation_level=None)
    (seq,) = con.execute(
        'SELECT min(seq) FROM journal WHERE rec LIKE \'%"id":"go-no-go","status":"running"%\''
    ).fetchone()
    con.execute(
        "UPDATE journal SET rec = replace(rec, '\"running\"', '\"runninX\"') WHERE seq = ?",
        (seq,),
    )
    con.close()
    before = STATE.read_bytes()
    r = runbook("report", "m.yaml", "--format", "html", "--output", "r.html")
    assert r.code == 2
    assert f"journal record {seq} is not a valid state record" in r.err
    assert "Traceback" not in r.output
    assert not Path("r.html").exists() and STATE.read_bytes() == before


def test_output_into_a_missing_folder_is_exit_2(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0
    r = runbook("report", "r.yaml", "--output", "no/such/dir/r.md")
    assert r.code == 2
    assert "--output no/such/dir/r.md: cannot write: No such file or directory" in r.err
    assert not Path("no").exists()


def test_steps_no_longer_in_the_edited_runbook_are_still_reported(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true"), sh("old", "true")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true"), sh("new", "true")]}])
    doc = json.loads(runbook("report", "r.yaml", "--format", "json").out)
    steps = {s["id"]: s for s in doc["steps"]}
    assert steps["old"]["phase"] is None and steps["old"]["status"] == "succeeded"
    assert steps["new"]["status"] == "pending" and not steps["new"]["this_run"]
    assert "1 step(s) of this run are no longer in r.yaml: old" in doc["notices"][0]
    md = runbook("report", "r.yaml").out
    assert "  section (no longer in the runbook)\n  old :done, " in md


def test_an_earlier_run_is_reported_as_it_ended(runbook) -> None:
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "echo a"), sh("b", "echo b")]}])
    assert runbook("apply", "r.yaml", "--yes").code == 0
    first = status_json(runbook, "r.yaml")["run"]["id"]
    # --replace stays inside the run (SPEC §11); a full rollback ends it, the next apply
    # starts a second one
    assert runbook("apply", "r.yaml", "--yes", "--replace", "b").code == 0
    assert status_json(runbook, "r.yaml")["run"]["id"] == first
    assert runbook("rollback", "r.yaml", "--yes").code == 0
    assert runbook("apply", "r.yaml", "--yes").code == 0
    second = status_json(runbook, "r.yaml")["run"]["id"]
    assert first != second
    latest = json.loads(runbook("report", "r.yaml", "--format", "json").out)
    assert latest["run"]["id"] == second
    assert [r["id"] for r in latest["runs"]] == [first, second]
    steps = {s["id"]: s for s in latest["steps"]}
    assert steps["b"]["this_run"] and steps["a"]["this_run"]
    r = runbook("report", "r.yaml", "--run", first, "--format", "json")
    assert r.code == 0, r.output
    old = json.loads(r.out)
    assert old["run"]["id"] == first and all(s["this_run"] for s in old["steps"])
    assert "pick one with `--run ID`" in runbook("report", "r.yaml").out
    r = runbook("report", "r.yaml", "--run", "nope")
    assert r.code == 2
    assert f"--run nope: no such run of t (runs: {first}, {second})" in r.err


def test_a_killed_run_shows_the_step_still_running_then_interrupted(runbook) -> None:
    write(
        "r.yaml",
        phases=[{"id": "p", "steps": [sh("a", "true"), sh("slow", "touch started; sleep 60")]}],
    )
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            if Path("started").exists():
                break
            time.sleep(0.05)
        assert Path("started").exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    doc = json.loads(runbook("report", "r.yaml", "--format", "json").out)
    assert doc["run"]["status"] == "running"
    (span,) = next(s for s in doc["steps"] if s["id"] == "slow")["spans"]
    assert span["open"] and span["status"] == "running"
    assert "is still running (or its process died" in doc["summary"]["happened"][0]
    assert runbook("apply", "r.yaml", "--yes").code == 3  # shell is not idempotent: unknown
    doc = json.loads(runbook("report", "r.yaml", "--format", "json").out)
    slow = next(s for s in doc["steps"] if s["id"] == "slow")
    assert slow["status"] == "unknown" and doc["run"]["resumes"] == 1
    assert [(s["status"], s["open"]) for s in slow["spans"]] == [("interrupted", False)]


def test_thousands_of_steps_are_drawn_in_lanes_per_phase(runbook) -> None:
    steps = [{"id": f"w{i}", "action": "wait", "with": {"duration": "0s"}} for i in range(320)]
    write("r.yaml", phases=[{"id": "many", "parallel": True, "steps": steps}])
    assert runbook("apply", "r.yaml", "--yes", "--max-parallel", "4").code == 0
    md = runbook("report", "r.yaml").out
    gantt = md.split("```mermaid\n")[1].split("```")[0]
    assert "  many (320 steps) :done, " in gantt and "w17" not in gantt
    assert "320 steps: the 0 that did not simply succeed are listed" in md
    page = runbook("report", "r.yaml", "--format", "html").out
    assert "320 steps: one row per phase or wave" in page
    assert page.count("<title>w") == 320  # every step is a bar, named in its tooltip
    assert "<details><summary>All 320 steps</summary>" in page


def test_report_help_names_the_formats(runbook) -> None:
    r = runbook("report", "--help")
    assert r.code == 0
    assert "--format [markdown|html|json]" in r.out and "--run ID" in r.out
