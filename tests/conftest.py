"""Shared fixtures: an isolated home and working directory, and the CLI called in-process.

Real servers (PostgreSQL, sshd, SMTP, HTTP) are fixtures in ``tests/servers/``; each starts the
real program on 127.0.0.1 in a temp dir.  Where the machine lacks one, its fixture skips
locally and FAILS under ``CI=true``: CI must not pass by skipping.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runbook_engine.cli import run as cli_run

pytest_plugins = [
    name
    for name in (
        "tests.servers.postgres",
        "tests.servers.sshd",
        "tests.servers.smtp",
        "tests.servers.http",
        "tests.servers.provider",
    )
    if (Path(__file__).parent / "servers" / (name.rsplit(".", 1)[1] + ".py")).exists()
]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "runbooks" / "examples"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test runs in its own directory with its own HOME and state dir."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.delenv("RUNBOOK_STATE_DIR", raising=False)
    monkeypatch.delenv("RUNBOOK_STATE", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(work)
    yield work


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@pytest.fixture
def runbook(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Call the CLI in-process: ``runbook("validate", "x.yaml")`` -> Result."""

    def call(*args: str) -> Result:
        capsys.readouterr()
        code = cli_run(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


def ci_requires(what: str) -> None:
    """Skip locally, fail under CI=true, when the machine lacks a server."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {what} is not available on this machine", pytrace=False)
    pytest.skip(f"{what} is not available")


RUNBOOK_BIN = str(Path(sys.executable).with_name("runbook"))
