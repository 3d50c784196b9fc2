"""Small runbooks for engine tests, written as YAML text so the loader sees what users write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

RUNBOOK = str(Path(sys.executable).with_name("runbook"))


def runbook_yaml(
    name: str = "t",
    phases: list[dict[str, Any]] | None = None,
    **top: Any,
) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": name},
        **top,
        "phases": phases or [],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write(path: str | Path, name: str = "t", **kw: Any) -> Path:
    p = Path(path)
    p.write_text(runbook_yaml(name, **kw))
    return p


def sh(sid: str, command: str, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"id": sid, "action": "shell", "with": {"command": command}}
    step.setdefault("rollback", "none")
    step.update(extra)
    return step


def ledger_lines(path: str | Path = "ledger.txt") -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []


def journal(state_dir: str | Path, name: str) -> list[dict[str, Any]]:
    """Every record of the state's journal table, in commit order (read with plain sqlite3)."""
    import sqlite3

    path = Path(state_dir) / name / "state.db"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [json.loads(r) for (r,) in con.execute("SELECT rec FROM journal ORDER BY seq")]
    finally:
        con.close()


def status_json(runbook: Any, file: str) -> dict[str, Any]:
    r = runbook("status", file, "--format", "json")
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.out)
    return doc


def statuses(runbook: Any, file: str) -> dict[str, str]:
    return {s["id"]: s["status"] for s in status_json(runbook, file)["steps"]}


def run_process(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUNBOOK, *args], capture_output=True, text=True, timeout=120, **kw)


def write_subs_runbook(name: str, steps: list[dict[str, Any]], waves: list[dict[str, Any]]) -> None:
    """r.yaml: one phase over cohort `subs` (legacy.db's customers: id, email) with ``steps``."""
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "vars": {"legacy_db": "sqlite:///legacy.db"},
        "cohorts": {
            "subs": {
                "source": {
                    "dsn": "{{ vars.legacy_db }}",
                    "query": "SELECT id, email FROM customers",
                },
                "key": "id",
                "attributes": ["email"],
                "waves": waves,
            }
        },
        "phases": [{"id": "p", "waves": {"cohort": "subs"}, "steps": steps}],
    }
    Path("r.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
