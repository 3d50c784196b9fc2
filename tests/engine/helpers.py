"""Small runbooks for engine tests, written as YAML text so the loader sees what users write."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

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


# A test that acts on a running process waits for a sign it reached the point, never for a
# fixed time: CI runs on two cores whose load swings from 2 to 13, where starting the CLI alone
# can take seconds.
PATIENCE = 120.0


def wait_until(
    ready: Callable[[], bool],
    what: str,
    proc: subprocess.Popen[Any] | None = None,
    timeout: float = PATIENCE,
) -> None:
    """Poll ``ready`` until it holds; fail naming ``what`` if ``proc`` exits first or after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            if ready():
                return
            raise AssertionError(f"{what}: never happened (the process exited {proc.returncode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: never happened within {timeout:.0f}s")
        time.sleep(0.01)


class Output:
    """What a running process writes to stdout (and stderr, when a pipe of its own), read line
    by line as it comes, so that a test can wait for a line (``wait_for``) before it acts."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self._lines: dict[str, list[str]] = {"out": [], "err": []}
        self._seen = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, name), daemon=True)
            for stream, name in ((proc.stdout, "out"), (proc.stderr, "err"))
            if stream is not None
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], name: str) -> None:
        for line in stream:
            with self._seen:
                self._lines[name].append(line)
                self._seen.notify_all()
        with self._seen:
            self._lines[name].append("")  # end of stream
            self._seen.notify_all()

    def text(self, name: str = "out") -> str:
        with self._seen:
            return "".join(self._lines[name])

    def wait_for(self, text: str, timeout: float = PATIENCE) -> None:
        """Block until a line of stdout holds ``text``; fail if stdout ends or time runs out."""

        def seen() -> bool:
            lines = self._lines["out"]
            return any(text in ln for ln in lines) or (bool(lines) and lines[-1] == "")

        with self._seen:
            self._seen.wait_for(seen, timeout)
            if not any(text in ln for ln in self._lines["out"]):
                raise AssertionError(f"never saw {text!r} in: {self.text()!r} {self.text('err')!r}")

    def finish(self, timeout: float = PATIENCE) -> tuple[str, str]:
        """Wait for the process to exit and its output to end: (stdout, stderr)."""
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return self.text("out"), self.text("err")
