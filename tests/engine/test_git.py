"""git integration with real ``git`` in temp repos: REV:PATH, the external diff driver, textconv."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RUNBOOK_BIN, ci_requires
from tests.engine.diff_fixtures import BASE, REFORMATTED, edit, write

WEAKER = edit(BASE, ("on_failure: rollback\n", "on_failure: continue\n"))
ATTRIBUTES = "runbooks/**/*.yaml diff=runbook\n"  # as docs/review.md says


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(RUNBOOK_BIN).parent) + os.pathsep + env.get("PATH", "")
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env["GIT_PAGER"] = "cat"
    return env


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", *args], capture_output=True, text=True, env=_env(), check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture
def repo(_isolated: Path) -> Path:
    """A git repo (the test's cwd) with runbooks/x.yaml = BASE committed on `main`."""
    if shutil.which("git") is None:
        ci_requires("git")
    git("init", "-q", "-b", "main")
    git("config", "user.email", "test@example.com")
    git("config", "user.name", "Test")
    write("runbooks/x.yaml", BASE)
    git("add", "runbooks/x.yaml")
    git("commit", "-q", "-m", "base")
    return _isolated


def _driver() -> None:
    write(".gitattributes", ATTRIBUTES)
    git("config", "diff.runbook.command", "runbook diff --git-external")


def _textconv() -> None:
    write(".gitattributes", ATTRIBUTES)
    git("config", "diff.runbook.textconv", "runbook show")


# -- REV:PATH ----------------------------------------------------------------------------------


def test_rev_path_against_the_work_tree(runbook, repo: Path) -> None:
    write("runbooks/x.yaml", WEAKER)
    r = runbook("diff", "main:runbooks/x.yaml", "runbooks/x.yaml")
    assert r.code == 1, r.err
    assert r.out.startswith("runbook diff main:runbooks/x.yaml -> runbooks/x.yaml\n")
    assert (
        "!! [on-failure-weakened] step `copy`: on_failure weakened: rollback -> continue" in r.out
    )
    write("runbooks/x.yaml", REFORMATTED)
    r = runbook("diff", "main:runbooks/x.yaml", "runbooks/x.yaml")
    assert r.code == 0, r.out
    assert "no semantic changes" in r.out


def test_two_revisions(runbook, repo: Path) -> None:
    write("runbooks/x.yaml", WEAKER)
    git("commit", "-q", "-am", "weaker")
    r = runbook("diff", "HEAD~1:runbooks/x.yaml", "HEAD:./runbooks/x.yaml")
    assert r.code == 1
    assert "on-failure-weakened" in r.out


def test_invalid_side_from_git_is_located_with_its_rev(runbook, repo: Path) -> None:
    write("runbooks/x.yaml", BASE.replace("impact: critical", "impact: dire"))
    git("commit", "-q", "-am", "broken")
    write("runbooks/x.yaml", BASE)
    r = runbook("diff", "main:runbooks/x.yaml", "runbooks/x.yaml")
    assert r.code == 2
    line = BASE.splitlines().index("    impact: critical") + 1
    assert f"main:runbooks/x.yaml:{line}:13: risks[0].impact:" in r.err
    assert r.out == ""


def test_missing_rev_or_path(runbook, repo: Path) -> None:
    r = runbook("diff", "nope:runbooks/x.yaml", "runbooks/x.yaml")
    assert r.code == 2
    assert (
        "runbook: nope:runbooks/x.yaml: cannot read from git: invalid object name 'nope'" in r.err
    )
    r = runbook("diff", "main:runbooks/y.yaml", "runbooks/x.yaml")
    assert r.code == 2
    assert (
        "main:runbooks/y.yaml: cannot read from git: path 'runbooks/y.yaml' does not exist in 'main'"
        in r.err
    )
    r = runbook("diff", "main:runbooks", "runbooks/x.yaml")
    assert r.code == 2
    assert "main:runbooks: is a directory in git, not a runbook file" in r.err
    assert "Traceback" not in r.output


def test_rev_path_outside_a_repository(
    runbook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("git") is None:
        ci_requires("git")
    write("x.yaml", BASE)
    outside = tmp_path / "no-repo"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    r = runbook("diff", "main:x.yaml", "../work/x.yaml")
    assert r.code == 2
    assert "main:x.yaml: cannot read from git: not a git repository" in r.err


def test_an_existing_file_wins_over_rev_path(runbook, repo: Path) -> None:
    write("v1:x.yaml", REFORMATTED)  # no revision v1 exists: read as a file
    r = runbook("diff", "v1:x.yaml", "runbooks/x.yaml")
    assert r.code == 0, r.err
    assert "runbook diff v1:x.yaml -> runbooks/x.yaml" in r.out


# -- the external diff driver ----------------------------------------------------------------


def test_external_driver_through_git_diff(repo: Path) -> None:
    _driver()
    write("runbooks/x.yaml", WEAKER)
    proc = git("diff")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "diff --runbook a/runbooks/x.yaml b/runbooks/x.yaml"
    assert lines[1] == "RISKIER: 1 change(s) make this migration riskier"
    assert '  ~ step copy on_failure: "rollback" -> "continue"' in lines
    write("runbooks/x.yaml", REFORMATTED)
    proc = git("diff")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[1:] == ["no semantic changes"]


def test_external_driver_added_and_deleted_files(repo: Path) -> None:
    _driver()
    write("runbooks/new.yaml", BASE.replace("name: shop-migration", "name: other"))
    git("add", "runbooks/new.yaml")
    proc = git("diff", "--cached")
    assert proc.returncode == 0, proc.stderr
    assert "diff --runbook a/runbooks/new.yaml b/runbooks/new.yaml (new file)" in proc.stdout
    assert "  + step copy (shell)" in proc.stdout
    git("commit", "-q", "-m", "new")
    git("rm", "-q", "runbooks/x.yaml")
    proc = git("diff", "--cached")
    assert proc.returncode == 0, proc.stderr
    assert "diff --runbook a/runbooks/x.yaml b/runbooks/x.yaml (deleted file)" in proc.stdout
    assert "  - step copy (shell, phase rollout)" in proc.stdout
    assert "gate-removed" in proc.stdout  # removing a whole runbook removes its gates


def test_external_driver_on_an_invalid_side_falls_back_to_text(repo: Path) -> None:
    _driver()
    write("runbooks/x.yaml", BASE.replace("action: check", "action: chek"))
    proc = git("diff")
    assert proc.returncode == 0, proc.stderr  # git aborts on a failing driver: never fail
    assert "runbook: not a valid runbook on both sides; showing a plain text diff" in proc.stdout
    assert "unknown action 'chek'" in proc.stdout
    assert "-        action: check\n+        action: chek\n" in proc.stdout


def test_git_external_argument_count(runbook, repo: Path) -> None:
    r = runbook("diff", "--git-external", "a", "b", "c")
    assert r.code == 2
    assert "--git-external takes git's 7 arguments" in r.err
    r = runbook("diff", "--git-external", "runbooks/x.yaml")  # git's unmerged-path call
    assert r.code == 0
    assert r.out == "* Unmerged path runbooks/x.yaml\n"


# -- textconv ----------------------------------------------------------------------------------


def test_textconv_hides_a_reformat_and_shows_a_change(repo: Path) -> None:
    _textconv()
    write("runbooks/x.yaml", REFORMATTED)
    assert git("diff", "--stat").stdout  # the bytes did change...
    proc = git("diff")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", proc.stderr  # ...but the meaning did not
    write("runbooks/x.yaml", edit(BASE, ("failure_limit: 1", "failure_limit: 2")))
    proc = git("diff")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines.count("-      failure_limit: 1") == 3  # once per wave instance
    assert lines.count("+      failure_limit: 2") == 3
    assert not [
        x
        for x in lines
        if x[:1] in "+-" and "failure_limit" not in x and x[:3] not in ("+++", "---")
    ]
