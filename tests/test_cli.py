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


def _crash(runbook, monkeypatch: pytest.MonkeyPatch, *args: str):  # type: ignore[no-untyped-def]
    from runbook_engine.commands import validate

    def boom(*_args: object) -> int:
        raise RuntimeError("cannot reach postgresql://app:hunter2@db.example/erp")

    monkeypatch.setattr(validate, "validate", boom)
    Path("x.yaml").write_text("{}")
    r = runbook(*args, "validate", "x.yaml")
    assert r.code == 1
    assert "hunter2" not in r.err and "postgresql://app:***@db.example/erp" in r.err
    return Path(r.err.strip().rsplit("traceback in ", 1)[1].rstrip(")"))


def test_crash_log_is_private_under_the_state_dir_never_in_shared_tmp(
    runbook, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat
    import tempfile

    old = os.umask(0o022)
    try:
        Path("state").mkdir()
        log = _crash(runbook, monkeypatch, "--state-dir", "state")
    finally:
        os.umask(old)
    assert log.parent == Path("state/.logs")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    text = log.read_text()
    assert "hunter2" not in text and "postgresql://app:***@db.example/erp" in text
    assert text.startswith("runbook ") and "--state-dir state validate x.yaml" in text
    assert not str(log).startswith(os.path.join(tempfile.gettempdir(), "runbook-logs"))
    # two crashes in the same second get two files: the name is not guessable
    assert _crash(runbook, monkeypatch, "--state-dir", "state") != log


def test_crash_log_without_a_state_dir_goes_to_a_private_per_user_folder(
    runbook, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    log = _crash(runbook, monkeypatch)
    home = Path(os.environ["XDG_STATE_HOME"]) / "runbook" / "logs"
    assert log.parent == home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert not Path(".runbook").exists()  # no state dir is made for a log


def test_crash_log_folder_that_is_a_symlink_is_refused(
    runbook, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    elsewhere = Path("elsewhere")
    elsewhere.mkdir()
    home = Path(os.environ["XDG_STATE_HOME"]) / "runbook"
    home.mkdir(parents=True)
    (home / "logs").symlink_to(elsewhere.resolve())
    from runbook_engine.commands import validate

    def boom(*_args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(validate, "validate", boom)
    Path("x.yaml").write_text("{}")
    r = runbook("validate", "x.yaml")
    assert r.code == 1
    assert "internal error: RuntimeError: a bug (no traceback log: " in r.err
    assert list(elsewhere.iterdir()) == []
