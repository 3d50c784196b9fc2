"""A third-party action package, really installed, found through the `runbook.actions` group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.engine.helpers import RUNBOOK, runbook_yaml

ACTION = """
from pathlib import Path


class Hello:
    name = "hello"
    summary = "write a greeting to a file"
    idempotent = True
    changes = True
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["to", "file"],
        "properties": {"to": {"type": "string"}, "file": {"type": "string"}},
    }

    def describe(self, params):
        return f"greet {params.get('to')}"

    def run(self, params, ctx):
        Path(params["file"]).write_text(f"hello {params['to']} from {ctx.step_id}\\n")
        return {"greeted": params["to"]}
"""


def _install(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "hello_action").mkdir(parents=True)
    (src / "hello_action" / "__init__.py").write_text(ACTION)
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "hello-action"
        version = "1.0"

        [project.entry-points."runbook.actions"]
        hello = "hello_action:Hello"
        """)
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return target


def test_installed_plugin_validates_plans_and_runs(tmp_path: Path) -> None:
    site = _install(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "w"
    work.mkdir()
    doc = runbook_yaml(
        "plug",
        phases=[
            {
                "id": "p",
                "steps": [
                    {
                        "id": "greet",
                        "action": "hello",
                        "with": {"to": "ana", "file": "out.txt"},
                        "rollback": "none",
                    }
                ],
            }
        ],
    )
    (work / "r.yaml").write_text(doc)
    bad = doc.replace("to: ana", "to: 3")
    (work / "bad.yaml").write_text(bad)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUNBOOK, *args], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )

    r = run("validate", "--strict", "r.yaml")
    assert r.returncode == 0, r.stderr
    r = run("validate", "bad.yaml")
    assert r.returncode == 2
    assert "phases[0].steps[0].with.to: expected string, got integer" in r.stderr
    r = run("apply", "r.yaml", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "out.txt").read_text() == "hello ana from greet\n"
    r = run("status", "r.yaml", "--format", "json")
    assert '"greeted": "ana"' in r.stdout
    # without the package the action is unknown, and the known ones are listed
    r = subprocess.run(
        [RUNBOOK, "validate", "r.yaml"], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "unknown action 'hello'" in r.stderr and "sql.copy" in r.stderr
