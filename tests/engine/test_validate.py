from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import EXAMPLES

MINIMAL = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: minimal}
phases:
  - id: only
    steps:
      - id: hello
        action: wait
        with: {duration: 0s}
"""


def test_minimal_runbook_is_valid(runbook, tmp_path: Path) -> None:
    Path("m.yaml").write_text(MINIMAL)
    r = runbook("validate", "m.yaml")
    assert r.code == 0, r.err
    assert "m.yaml: valid" in r.out


def test_errors_are_located_and_all_reported(runbook) -> None:
    text = MINIMAL.replace("{duration: 0s}", "{duration: soon, extra: 1}").replace(
        "action: wait", "action: wait\n        timeout: 3 minutes"
    )
    Path("bad.yaml").write_text(text)
    r = runbook("validate", "bad.yaml")
    assert r.code == 2
    lines = [line for line in r.err.splitlines() if re.match(r"bad\.yaml:\d+:\d+: ", line)]
    assert "bad.yaml:9:18: phases[0].steps[0].timeout: invalid duration '3 minutes'" in r.err
    assert any("phases[0].steps[0].with.extra: unknown key 'extra'" in line for line in lines)
    assert any("with.duration: invalid duration 'soon'" in line for line in lines)
    assert len(lines) == 3
    assert "Traceback" not in r.output


def test_json_format_lists_problems(runbook) -> None:
    Path("bad.yaml").write_text(MINIMAL.replace("action: wait", "action: wiat"))
    r = runbook("validate", "--format", "json", "bad.yaml")
    assert r.code == 2
    doc = json.loads(r.out)
    (problem,) = doc["files"][0]["problems"]
    assert problem["line"] == 8 and problem["col"] == 17
    assert "did you mean 'wait'" in problem["message"]


def test_examples_pass_strict(runbook) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    assert len(files) >= 2
    r = runbook("validate", "--strict", *files)
    assert r.code == 0, r.err


def test_check_conditions_are_checked_as_expressions(runbook) -> None:
    steps = """\
      - {id: a, action: check, with: {command: "echo 1", condition: "value >= {{ vars.x }}"}}
      - {id: b, action: check, with: {command: "echo 1", condition: "value >= vars.nope"}}
      - {id: c, action: check, with: {command: "echo 1", condition: "value >="}}
      - {id: d, action: check, with: {command: "echo 1", condition: "value >= vars.x and values | length > 0"}}
"""
    text = MINIMAL.replace("metadata: {name: minimal}", "metadata: {name: minimal}\nvars: {x: 1}")
    text = text.split("      - id: hello")[0] + steps
    Path("c.yaml").write_text(text)
    r = runbook("validate", "c.yaml")
    assert r.code == 2
    assert "steps[0].with.condition: `condition` is a Jinja2 expression, written without" in r.err
    assert "steps[1].with.condition: undeclared variable vars.nope" in r.err
    assert "steps[2].with.condition: template syntax" in r.err
    assert "steps[3]" not in r.err


def test_ssh_steps_name_inventory_hosts_and_groups(runbook) -> None:
    text = MINIMAL.replace(
        "metadata: {name: minimal}",
        "metadata: {name: minimal}\nhosts:\n  app1: {address: 10.0.0.5, groups: [app]}",
    ).replace(
        "action: wait\n        with: {duration: 0s}",
        "action: ssh\n        with: {command: 'true', hosts: [app1, app2], groups: [ap]}\n"
        "        rollback: none",
    )
    Path("s.yaml").write_text(text)
    r = runbook("validate", "s.yaml")
    assert r.code == 2
    assert "with.hosts[1]: no host 'app2' in the runbook's `hosts` inventory" in r.err
    assert (
        "with.groups[0]: no group 'ap' in the runbook's `hosts` inventory; did you mean 'app'?"
        in r.err
    )
    assert "hosts[0]" not in r.err
