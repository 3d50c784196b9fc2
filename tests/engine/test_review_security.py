"""SPEC §9 for review output: the markdown for PR comments pings nobody and keeps its code
spans whole; ``git`` never reads an argument as an option or a path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runbook_engine.review.markdown import code
from tests.engine.diff_fixtures import BASE, edit, write
from tests.engine.test_git import repo  # noqa: F401 - the real git repository fixture


def test_markdown_diff_neutralises_mentions_and_backtick_runs(runbook: Any) -> None:
    new = edit(
        BASE,
        ('with: {command: "echo verify"}', 'with: {command: "echo ``@dba-team`` ` @ops"}'),
        ("owner: ops\n", "owner: '@security-team'\n"),
    )
    write("old.yaml", BASE)
    write("new.yaml", new)
    r = runbook("diff", "--format", "markdown", "old.yaml", "new.yaml")
    assert r.code == 1, r.err
    out = r.out
    # a value with a double backtick is one code span, fenced by a longer run
    assert '``` "echo ``@dba-team`` ` @ops" ```' in out
    assert '~ metadata.owner: `"ops"` → `"@security-team"`' in out  # in code: no ping
    # outside code spans no @name survives as a mention
    plain = "".join(part for i, part in enumerate(_outside_code(out)) if i % 2 == 0)
    assert "@security" not in plain and "@dba" not in plain and "@ops" not in plain


def _outside_code(text: str) -> list[str]:
    """Alternating [outside, inside, outside, ...] parts by CommonMark's backtick runs."""
    import re

    parts: list[str] = []
    pos = 0
    for m in re.finditer(r"(`+)(.*?[^`])\1(?!`)", text, re.S):
        parts += [text[pos : m.start()], m.group(0)]
        pos = m.end()
    parts.append(text[pos:])
    return parts


def test_code_span_fence_outgrows_every_backtick_run() -> None:
    assert code("plain") == "`plain`"
    assert code("a``b") == "``` a``b ```"
    assert code("`x") == "`` `x ``"
    assert code("two\nlines") == "`two lines`"


def test_git_never_reads_a_revision_as_an_option(runbook: Any, repo: Path) -> None:  # noqa: F811
    trap = Path("pwned:runbooks")
    r = runbook("diff", "--", f"--output={trap}/x.yaml", "runbooks/x.yaml")
    assert r.code == 2
    assert "cannot read from git: a revision cannot start with '-'" in r.err
    assert not trap.exists() and not Path("pwned").exists()
    assert not any(p.name.startswith("pwned") for p in Path.cwd().iterdir())
