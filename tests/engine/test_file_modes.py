"""SPEC §9: files the engine writes are 0600 in 0700 folders, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import runbook_yaml, sh


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the common default: files 0644, folders 0755
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_outbox_and_report_files_are_private(runbook: Any, open_umask: None) -> None:
    Path("r.yaml").write_text(
        runbook_yaml(
            "modes",
            phases=[
                {
                    "id": "p",
                    "steps": [
                        sh("a", "echo hi"),
                        {
                            "id": "tell",
                            "action": "notify",
                            "with": {"to": ["ana@example.com"], "message": "moved"},
                            "rollback": "none",
                        },
                        {
                            "id": "tell-here",
                            "action": "notify",
                            "with": {
                                "to": ["bo@example.com"],
                                "message": "moved",
                                "outbox": "mail/out",
                            },
                            "rollback": "none",
                        },
                    ],
                }
            ],
        )
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert runbook("report", "r.yaml", "--output", "report.md").code == 0
    assert runbook("outbox", "r.yaml", "--export", "exported/mail").code == 0
    state = Path(".runbook")
    folders = [state, *(p for p in state.rglob("*") if p.is_dir())]
    files = [p for p in state.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"state.db"}
    assert not any(p.suffix == ".eml" for p in files)  # the outbox is a table of state.db
    exported = sorted(Path("exported").rglob("*.eml"))
    assert [p.parent.name for p in exported] == ["tell", "tell-here"]
    out = [Path("mail"), Path("mail/out"), Path("exported"), *{p.parent for p in exported}]
    for folder in [*folders, *out, Path("exported/mail")]:
        assert _mode(folder) == 0o700, folder
    for file in [*files, *Path("mail/out").glob("*.eml"), *exported, Path("report.md")]:
        assert _mode(file) == 0o600, file
    assert len(list(Path("mail/out").glob("*.eml"))) == 1
