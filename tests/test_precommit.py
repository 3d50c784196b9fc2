"""``.pre-commit-hooks.yaml``: another repository runs ``runbook validate --strict`` through
pre-commit, with a clone of this repository as its hook repo (real pre-commit, real git, the
hook's own virtualenv installed from this repository)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, RUNBOOK_BIN, ci_requires
from tests.engine.diff_fixtures import BASE, edit, write

PRE_COMMIT = str(Path(RUNBOOK_BIN).with_name("pre-commit"))
PACKAGE = ("engine", "plugins", "schemas", "setup.cfg", "pyproject.toml", ".pre-commit-hooks.yaml")
NO_ROLLBACK = edit(
    BASE,
    (
        '        with: {command: "echo verify"}\n        rollback: none\n',
        '        with: {command: "echo verify"}\n',
    ),
)

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )


def _git(cwd: Path, env: dict[str, str], *args: str) -> str:
    proc = _run(["git", *args], cwd, env)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def _hook_repo(dest: Path, env: dict[str, str]) -> str:
    """A clone of this repository with the working tree's package files; returns a commit."""
    _git(dest.parent, env, "clone", "-q", str(ROOT), str(dest))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PACKAGE:
        src, dst = ROOT / name, dest / name
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copy2(src, dst)
    _git(dest, env, "add", "-A", *PACKAGE)
    if _run(["git", "diff", "--cached", "--quiet"], dest, env).returncode != 0:
        _git(
            dest,
            env,
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-m",
            "wip",
        )
    return _git(dest, env, "rev-parse", "HEAD")


def test_pre_commit_runs_validate_strict_on_runbooks(tmp_path: Path) -> None:
    if not os.path.exists(PRE_COMMIT):
        ci_requires("pre-commit (install the dev extra)")
    if shutil.which("git") is None:
        ci_requires("git")
    env = dict(os.environ)
    env.update(PRE_COMMIT_HOME=str(tmp_path / "pre-commit-cache"), GIT_CONFIG_NOSYSTEM="1")
    env.pop("NO_COLOR", None)
    env["PRE_COMMIT_COLOR"] = "never"
    rev = _hook_repo(tmp_path / "hook-repo", env)

    project = tmp_path / "project"
    project.mkdir()
    _git(project, env, "init", "-q", "-b", "main")
    _git(project, env, "config", "user.email", "dev@example.com")
    _git(project, env, "config", "user.name", "Dev")
    write(
        project / ".pre-commit-config.yaml",
        f"repos:\n  - repo: {tmp_path / 'hook-repo'}\n    rev: {rev}\n    hooks:\n      - id: runbook-validate\n",
    )
    write(project / "runbooks" / "migrate.yaml", BASE)
    write(project / "notes" / "todo.yaml", "not: [a runbook\n")  # outside runbooks/: not checked
    _git(project, env, "add", ".")

    ok = _run([PRE_COMMIT, "run", "--all-files"], project, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "runbook validate --strict" in ok.stdout and "Passed" in ok.stdout

    write(project / "runbooks" / "bad.yaml", NO_ROLLBACK)
    _git(project, env, "add", ".")
    bad = _run([PRE_COMMIT, "run", "--all-files"], project, env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    line = NO_ROLLBACK.splitlines().index("      - id: verify") + 1
    assert (
        f"runbooks/bad.yaml:{line}:9: phases[2].steps[0]: warning: step 'verify' (shell) changes "
        "something but has no `rollback`" in bad.stdout
    )
    assert "Failed" in bad.stdout
    assert "todo.yaml" not in bad.stdout

    installed = _run([PRE_COMMIT, "install"], project, env)
    assert installed.returncode == 0, installed.stderr
    commit = _run(["git", "commit", "-q", "-m", "add runbooks"], project, env)
    assert commit.returncode != 0  # the hook refused the commit
    assert "no `rollback`" in commit.stdout + commit.stderr
    assert _run(["git", "rev-parse", "--verify", "HEAD"], project, env).returncode != 0  # no commit
    write(project / "runbooks" / "bad.yaml", BASE.replace("name: shop-migration", "name: fixed"))
    _git(project, env, "add", ".")
    commit = _run(["git", "commit", "-q", "-m", "add runbooks"], project, env)
    assert commit.returncode == 0, commit.stdout + commit.stderr
