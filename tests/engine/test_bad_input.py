"""Malformed runbooks: each gets a located message and exit 2, never a traceback, and nothing
is written anywhere (SPEC §5 "Bad input", §6 positions).

Each row is (id, file content, the exact ``FILE:LINE:COL: PATH:`` prefix, a message fragment).
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RUNBOOK_BIN

HEAD = """\
apiVersion: runbook/v1
kind: Runbook
metadata:
  name: bad
"""


def doc(body: str) -> str:
    """HEAD (4 lines) + body: the body's first line is line 5."""
    return HEAD + body


def step(with_: str, action: str = "wait", extra: str = "") -> str:
    """One phase, one step: `id` on line 8, `action` on line 9, `with` on line 10, `extra` 11."""
    return doc(
        "phases:\n"
        "  - id: only\n"
        "    steps:\n"
        "      - id: hello\n"
        f"        action: {action}\n"
        f"        with: {with_}\n" + extra
    )


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghi"
    for prev, cur in itertools.pairwise(names):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def big_file(path: Path) -> None:
    filler = ("# " + "x" * 1022 + "\n").encode()
    with path.open("wb") as fh:
        fh.write(step("{duration: 0s}").encode())
        for _ in range(50 * 1024):
            fh.write(filler)


@dataclass(frozen=True)
class Case:
    id: str
    content: str | bytes | Callable[[Path], None]
    where: str  # the exact "bad.yaml:LINE:COL: PATH: " prefix (no PATH for file-level errors)
    fragment: str

    def write(self, path: Path) -> None:
        if callable(self.content):
            self.content(path)
        elif isinstance(self.content, bytes):
            path.write_bytes(self.content)
        else:
            path.write_text(self.content, encoding="utf-8")


WAVE_PHASE = doc(
    "phases:\n"
    "  - id: roll\n"
    "    waves: [{id: w1}]\n"  # line 7
    "    steps: []\n"
)

CASES = [
    Case("empty-file", "", "bad.yaml:1:1: ", "empty file: expected a runbook mapping"),
    Case("only-a-comment", "# nothing here\n", "bad.yaml:1:1: ", "empty file"),
    Case(
        "a-list", "- a\n- b\n", "bad.yaml:1:1: ", "expected a runbook mapping at the top, got list"
    ),
    Case(
        "a-scalar", "hello\n", "bad.yaml:1:1: ", "expected a runbook mapping at the top, got string"
    ),
    Case(
        "wrong-apiversion",
        step("{duration: 0s}").replace("runbook/v1", "runbook/v2"),
        "bad.yaml:1:13: apiVersion: ",
        "unsupported apiVersion 'runbook/v2'; this runbook engine reads runbook/v1",
    ),
    Case(
        "wrong-kind",
        step("{duration: 0s}").replace("kind: Runbook", "kind: Playbook"),
        "bad.yaml:2:7: kind: ",
        "expected 'Runbook', got 'Playbook'",
    ),
    Case(
        "missing-metadata-name",
        step("{duration: 0s}").replace("  name: bad\n", "  owner: ops\n"),
        "bad.yaml:4:3: metadata: ",
        "missing required key 'name'",
    ),
    Case(
        "bad-name-characters",
        step("{duration: 0s}").replace("name: bad", "name: Bad_Name"),
        "bad.yaml:4:9: metadata.name: ",
        "invalid name 'Bad_Name': use lower-case letters, digits and '-'",
    ),
    Case(
        "unknown-top-level-key",
        step("{duration: 0s}") + "varz: {}\n",
        "bad.yaml:11:1: varz: ",
        "unknown key 'varz'; did you mean 'vars'?",
    ),
    Case(
        "duplicate-key-top-level",
        step("{duration: 0s}") + "kind: Runbook\n",
        "bad.yaml:11:1: kind: ",
        "duplicate key 'kind' (first at line 2)",
    ),
    Case(
        "duplicate-key-in-step",
        step("{duration: 0s}", extra="        action: shell\n"),
        "bad.yaml:11:9: phases[0].steps[0].action: ",
        "duplicate key 'action' (first at line 9)",
    ),
    Case(
        "duplicate-step-id",
        step("{duration: 0s}", extra="      - {id: hello, action: wait, with: {duration: 1s}}\n"),
        "bad.yaml:11:14: phases[0].steps[1].id: ",
        "duplicate id 'hello' (step; first used at line 8)",
    ),
    Case(
        "duplicate-id-phase-and-step",
        step("{duration: 0s}").replace("id: hello", "id: only"),
        "bad.yaml:8:13: phases[0].steps[0].id: ",
        "duplicate id 'only' (step; first used at line 6)",
    ),
    Case(
        "duplicate-id-step-and-contingency",
        step("{duration: 0s}")
        + "contingencies:\n  - id: hello\n    action: wait\n    with: {duration: 0s}\n",
        "bad.yaml:12:9: contingencies[0].id: ",
        "duplicate id 'hello' (contingency; first used at line 8)",
    ),
    Case(
        "bad-id-characters",
        step("{duration: 0s}").replace("id: hello", "id: Hello_World"),
        "bad.yaml:8:13: phases[0].steps[0].id: ",
        "invalid id 'Hello_World': use lower-case letters, digits and '-'",
    ),
    Case(
        "unknown-action",
        step("{duration: 0s}", action="wiat"),
        "bad.yaml:9:17: phases[0].steps[0].action: ",
        "unknown action 'wiat'; did you mean 'wait'? (known: approval, check, http, notify, "
        "shell, sql.copy, sql.exec, sql.query, sql.verify, ssh, wait)",
    ),
    # -- a bad `with` for each built-in action --------------------------------------------
    Case(
        "with-shell",
        step("{cmd: ls}", action="shell", extra="        rollback: none\n"),
        "bad.yaml:10:16: phases[0].steps[0].with.cmd: ",
        "unknown key 'cmd'",
    ),
    Case(
        "with-ssh",
        step("{command: uptime}", action="ssh", extra="        rollback: none\n"),
        "bad.yaml:10:15: phases[0].steps[0].with: ",
        "missing 'hosts' or 'groups'",
    ),
    Case(
        "with-sql-exec",
        step("{dsn: 'sqlite:///x.db'}", action="sql.exec", extra="        rollback: none\n"),
        "bad.yaml:10:15: phases[0].steps[0].with: ",
        "missing required key 'sql'",
    ),
    Case(
        "with-sql-query",
        step("{dsn: 'sqlite:///x.db', query: ''}", action="sql.query"),
        "bad.yaml:10:46: phases[0].steps[0].with.query: ",
        "must not be empty",
    ),
    Case(
        "with-sql-copy",
        step(
            "{source: a, target: b, table: 'no such', key: id}",
            action="sql.copy",
            extra="        rollback: none\n",
        ),
        "bad.yaml:10:45: phases[0].steps[0].with.table: ",
        "invalid table name 'no such'",
    ),
    Case(
        "with-sql-verify",
        step("{source: a, target: b, table: t, key: id, max_report: 0}", action="sql.verify"),
        "bad.yaml:10:69: phases[0].steps[0].with.max_report: ",
        "0 is less than the minimum of 1",
    ),
    Case(
        "with-http",
        step("{url: 'ftp://example.org/'}", action="http", extra="        rollback: none\n"),
        "bad.yaml:10:21: phases[0].steps[0].with.url: ",
        "expected an http:// or https:// URL, got 'ftp://example.org/'",
    ),
    Case(
        "with-notify",
        step("{channel: sms}", action="notify", extra="        rollback: none\n"),
        "bad.yaml:10:25: phases[0].steps[0].with.channel: ",
        "expected one of email, webhook, outbox, got 'sms'",
    ),
    Case(
        "with-approval",
        step("{approvers: alice}", action="approval"),
        "bad.yaml:10:27: phases[0].steps[0].with.approvers: ",
        "expected list, got string",
    ),
    Case(
        "with-check",
        step("{condition: 'value < 1'}", action="check"),
        "bad.yaml:10:15: phases[0].steps[0].with: ",
        "give one of: 'query' with 'dsn', 'url' with 'json_path', or 'command'",
    ),
    Case(
        "with-wait",
        step("{duration: soon}"),
        "bad.yaml:10:26: phases[0].steps[0].with.duration: ",
        "invalid duration 'soon'",
    ),
    Case(
        "with-not-a-mapping",
        step("sleep 5"),
        "bad.yaml:10:15: phases[0].steps[0].with: ",
        "expected mapping, got string",
    ),
    # -- templates ------------------------------------------------------------------------
    Case(
        "template-syntax-error",
        step('{command: "echo {{ vars.x "}', action="shell", extra="        rollback: none\n"),
        "bad.yaml:10:25: phases[0].steps[0].with.command: ",
        "template syntax: unexpected end of template",
    ),
    Case(
        "undefined-var",
        step("{duration: '{{ vars.pause }}'}"),
        "bad.yaml:10:26: phases[0].steps[0].with.duration: ",
        "undeclared variable vars.pause",
    ),
    Case(
        "undeclared-secret",
        step(
            '{command: "curl -u {{ secrets.token }} x"}',
            action="shell",
            extra="        rollback: none\n",
        ),
        "bad.yaml:10:25: phases[0].steps[0].with.command: ",
        "undeclared secret secrets.token",
    ),
    Case(
        "unknown-step-in-steps",
        step("{duration: '{{ steps.nope.outputs.wait }}'}"),
        "bad.yaml:10:26: phases[0].steps[0].with.duration: ",
        "unknown step steps.nope",
    ),
    Case(
        "wave-outside-a-wave-phase",
        step("{duration: '{{ wave.vars.pause }}'}"),
        "bad.yaml:10:26: phases[0].steps[0].with.duration: ",
        "`wave` is only defined in the steps of a phase with `waves`",
    ),
    # -- order ----------------------------------------------------------------------------
    Case(
        "unknown-needs",
        step("{duration: 0s}", extra="        needs: [nope]\n"),
        "bad.yaml:11:17: phases[0].steps[0].needs[0]: ",
        "unknown step or phase 'nope' in needs",
    ),
    Case(
        "self-needs",
        step("{duration: 0s}", extra="        needs: [hello]\n"),
        "bad.yaml:11:17: phases[0].steps[0].needs[0]: ",
        "step 'hello' needs itself",
    ),
    Case(
        "cycle",
        doc(
            "phases:\n"
            "  - id: only\n"
            "    parallel: true\n"
            "    steps:\n"
            "      - {id: a, action: wait, with: {duration: 0s}, needs: [c]}\n"  # line 9
            "      - {id: b, action: wait, with: {duration: 0s}, needs: [a]}\n"
            "      - {id: c, action: wait, with: {duration: 0s}, needs: [b]}\n"
        ),
        "bad.yaml:9:9: phases[0].steps[0]: ",
        "dependency cycle: a (line 9) -> b (line 10) -> c (line 11) -> a (line 9)",
    ),
    Case(
        "wave-phase-without-steps",
        WAVE_PHASE,
        "bad.yaml:6:5: phases[0]: ",
        "phase 'roll' has waves but no steps",
    ),
    Case(
        "rollback-wave-outside-a-wave-phase",
        step("{duration: 0s}", extra="        on_failure: rollback-wave\n"),
        "bad.yaml:11:21: phases[0].steps[0].on_failure: ",
        "`rollback-wave` needs a phase with `waves`",
    ),
    # -- risks ----------------------------------------------------------------------------
    Case(
        "undeclared-risk",
        step("{duration: 0s}", extra="        risks: [data-loss]\n"),
        "bad.yaml:11:17: phases[0].steps[0].risks[0]: ",
        "risk 'data-loss' is not declared under `risks`",
    ),
    Case(
        "risk-unknown-contingency",
        step("{duration: 0s}", extra="        risks: [slow]\n")
        + "risks:\n  - {id: slow, likelihood: low, impact: low, contingencies: [page-ops]}\n",
        "bad.yaml:13:62: risks[0].contingencies[0]: ",
        "unknown contingency 'page-ops'",
    ),
    # -- hostile or broken files ----------------------------------------------------------
    Case(
        "python-object-tag",
        HEAD.replace("name: bad", 'name: !!python/object/apply:os.system ["touch pwned"]')
        + "phases: []\n",
        "bad.yaml:4:9: metadata.name: ",
        "unsupported YAML tag !!python/object/apply:os.system",
    ),
    # issue 10, item 19: what the fuzz campaign found (each was a traceback, exit 1)
    Case(
        "alias-in-a-merge-key",
        step("{duration: 0s}").replace("        with:", "        wit<<: *ah:"),
        "bad.yaml:10:16: phases[0].steps[0].wit<<: ",
        "unknown alias *ah",
    ),
    Case(
        "alias-as-the-whole-value",
        step("{duration: 0s}").replace("{duration: 0s}", "*ah"),
        "bad.yaml:10:15: phases[0].steps[0].with: ",
        "unknown alias *ah",
    ),
    Case(
        "bool-tag-on-a-word",
        step("{duration: 0s}", extra="        parallel: !!bool maybe\n"),
        "bad.yaml:11:19: phases[0].steps[0].parallel: ",
        "'maybe' is not a valid !!bool",
    ),
    Case(
        "float-tag-on-nothing",
        step("{duration: 0s}", extra='        timeout: !!float ""\n'),
        "bad.yaml:11:18: phases[0].steps[0].timeout: ",
        "'' is not a valid !!float",
    ),
    Case(
        "plain-merge-indicator-as-a-value",
        step("{duration: 0s}").replace("id: hello", "id: <<"),
        "bad.yaml:8:13: phases[0].steps[0].id: ",
        "invalid id '<<'",
    ),
    Case(
        "alias-bomb",
        alias_bomb(),
        "bad.yaml:7:8: g[0]: ",
        "aliases expand to more than 1,000,000 nodes: refused (a YAML alias bomb?)",
    ),
    Case(
        "binary-garbage",
        bytes(random.Random(7).randrange(256) for _ in range(4096)),
        "bad.yaml:1:",
        "is this a runbook?",
    ),
    Case(
        "control-characters",
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00",
        "bad.yaml:1:1: ",
        "control character '\\x7f' in the text: is this a runbook?",
    ),
    Case(
        "invalid-utf8",
        HEAD.encode().replace(b"name: bad", b"name: caf\xe9") + b"phases: []\n",
        "bad.yaml:4:12: ",
        "not UTF-8 text (byte 58): is this a runbook?",
    ),
    Case(
        "fifty-megabytes",
        big_file,
        "bad.yaml:1:1: ",
        "file is 50.0 MiB; runbooks are limited to 16 MiB",
    ),
    Case(
        "two-documents",
        step("{duration: 0s}") + "---\n" + step("{duration: 0s}"),
        "bad.yaml:11:1: ",
        "more than one YAML document: a runbook is one",
    ),
    Case(
        "tab-indented",
        doc("phases:\n\t- id: only\n"),
        "bad.yaml:6:1: ",
        "YAML syntax: while scanning for the next token found character that cannot start any "
        "token: a tab? YAML indents with spaces",
    ),
    Case(
        "unclosed-flow-mapping",
        step("{duration: 0s"),
        "bad.yaml:11:1: ",
        "YAML syntax: while parsing a flow mapping (from line 10, column 15) did not find "
        "expected ',' or '}'",
    ),
]

SUBPROCESS_ROWS = {
    "empty-file",
    "alias-in-a-merge-key",
    "bool-tag-on-a-word",
    "python-object-tag",
    "alias-bomb",
    "invalid-utf8",
    "fifty-megabytes",
    "cycle",
    "tab-indented",
}


def listing(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, name), root)
        for d, dirs, files in os.walk(root)
        for name in [*dirs, *files]
    )


def _rows() -> list[object]:
    slow = {"alias-bomb", "fifty-megabytes"}
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.timeout(30)] if c.id in slow else [])
        for c in CASES
    ]


def test_the_table_is_complete() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _rows())
def test_bad_runbook_in_process(case: Case, runbook, tmp_path: Path) -> None:
    case.write(Path("bad.yaml"))
    before = listing(tmp_path)
    r = runbook("validate", "bad.yaml")
    assert r.code == 2, r.output
    assert "Traceback" not in r.output
    located = [line for line in r.err.splitlines() if line.startswith(case.where)]
    assert any(case.fragment in line for line in located), r.err
    assert listing(tmp_path) == before  # nothing written: no state, no crash log
    assert not Path(".runbook").exists()


@pytest.mark.parametrize("case", [c for c in _rows() if c.id in SUBPROCESS_ROWS])
def test_bad_runbook_as_a_process(case: Case, tmp_path: Path) -> None:
    case.write(Path("bad.yaml"))
    before = listing(tmp_path)
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [RUNBOOK_BIN, "validate", "bad.yaml"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert any(
        line.startswith(case.where) and case.fragment in line for line in proc.stderr.splitlines()
    ), proc.stderr
    assert listing(tmp_path) == before
