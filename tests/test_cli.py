"""The command line as a whole: help for every command, docs that name them, exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runbook_engine import cli
from tests.conftest import ROOT


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_has_help_and_is_in_the_readme(runbook, name: str) -> None:
    r = runbook(name, "--help")
    assert r.code == 0, r.err
    assert f"Usage: runbook {name}" in r.out
    body = r.out.split("Options:")[0]
    assert len(body.split()) > 12, f"`runbook {name} --help` says too little"
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"runbook (\[[^\]]*\] )?{name}\b", readme), f"README never shows `{name}`"


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_help_has_an_example(runbook, name: str) -> None:
    """Issue 10: `unlock --help` had no example; every command's help shows one."""
    body = runbook(name, "--help").out.split("Options:")[0]
    assert re.search(r"^  Examples?:$", body, re.M), f"`runbook {name} --help` has no example"
    after = body.split("Example", 1)[1]
    assert re.search(rf"^    runbook (--state-dir \S+ )?{name}\b", after, re.M), after


def test_top_level_help_lists_commands_and_exit_codes(runbook) -> None:
    r = runbook("--help")
    assert r.code == 0
    for name in cli.COMMANDS:
        assert name in r.out
    assert "3    paused" in r.out and "4    locked" in r.out


def test_unknown_command_is_usage_error(runbook) -> None:
    r = runbook("aply")
    assert r.code == 2
    assert "No such command" in r.err


def test_unexpected_exception_prints_one_line_and_logs_the_traceback(
    runbook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook_engine.commands import validate

    def boom(*_args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(validate, "validate", boom)
    Path("x.yaml").write_text("{}")
    r = runbook("validate", "x.yaml")
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("runbook: internal error: RuntimeError: a bug (traceback in ")
    log = Path(lines[0].rsplit("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback (most recent call last)" in log.read_text()
    assert "Traceback" not in r.out
