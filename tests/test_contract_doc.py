"""docs/contract.md cannot fall behind the command line (issue 10, "Also").

Every command has its `### runbook NAME` section; every option of `runbook NAME --help` (each
of its spellings, `-y` and `--yes`) and every value of a choice option appears in that
section; the global options appear before the first command. The README points at the page.
"""

from __future__ import annotations

import re

import click
import pytest

from runbook_engine import cli
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
HEADING = re.compile(r"^### runbook (\S+)$", re.M)


def sections() -> dict[str, str]:
    marks = list(HEADING.finditer(DOC))
    out = {}
    for m, nxt in zip(marks, [*marks[1:], None], strict=True):
        end = nxt.start() if nxt else DOC.find("\n## ", m.end())
        out[m.group(1)] = DOC[m.end() : end if end != -1 else len(DOC)]
    return out


def command_of(name: str) -> click.Command:
    ctx = click.Context(cli.cli)
    command = cli.cli.get_command(ctx, name)
    assert command is not None
    return command


def mentioned(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_every_command_has_a_section() -> None:
    assert list(sections()) == list(cli.COMMANDS)


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_of_the_help_is_in_its_section(name: str) -> None:
    section = sections()[name]
    command = command_of(name)
    assert mentioned(section, f"runbook {name}"), f"section {name} never shows the command"
    missing = []
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for spelling in [*param.opts, *param.secondary_opts]:
            if not mentioned(section, spelling):
                missing.append(spelling)
        if isinstance(param.type, click.Choice):
            missing.extend(
                f"{param.opts[0]} {choice}"
                for choice in param.type.choices
                if not mentioned(section, str(choice))
            )
    assert not missing, f"docs/contract.md, `runbook {name}`: not documented: {missing}"


def test_the_global_options_are_documented() -> None:
    head = DOC[: HEADING.search(DOC).start()]  # type: ignore[union-attr]
    for param in cli.cli.params:
        if isinstance(param, click.Option):
            for spelling in param.opts:
                assert mentioned(head, spelling), spelling
    for spelling in ("-h", "--help"):
        assert mentioned(head, spelling)


def test_exit_codes_and_statuses_are_documented() -> None:
    from runbook_engine.errors import Exit
    from runbook_engine.state.status import RunStatus, Status

    for code in Exit:
        assert f"| `{int(code)}` |" in DOC, code
    for status in [*Status, *RunStatus]:
        assert f"`{status.value}`" in DOC, status


def test_the_readme_points_at_the_contract() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/contract.md" in readme
    assert "project's SPEC" not in readme


def test_a_new_option_would_be_caught() -> None:
    """The check itself: an option missing from a section is reported."""
    section = sections()["unlock"]
    assert mentioned(section, "--force")
    assert not mentioned(section, "--forcefully")
    assert not mentioned("`--state-dir-x`", "--state-dir")
