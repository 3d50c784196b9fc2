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
