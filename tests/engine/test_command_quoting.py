"""SPEC §9 and §11 for commands and templates: customer data never becomes shell syntax, a
``{{ }}`` inside a quoted literal of a command is exit 2 at its position, ``raw`` on outside
data is a lint warning, and nothing starting with ``_`` is reachable in the sandbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.engine.helpers import runbook_yaml, sh, status_json

EMAIL = "x'$(touch PWNED)'@y"


def _customers_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
        db.execute("INSERT INTO customers VALUES (1, ?)", (EMAIL,))


def test_customer_email_cannot_become_shell_syntax(runbook: Any) -> None:
    _customers_db(Path("crm.db"))
    Path("r.yaml").write_text(
        runbook_yaml(
            vars={"db": "sqlite:///crm.db"},
            phases=[
                {
                    "id": "p",
                    "steps": [
                        {
                            "id": "lookup",
                            "action": "sql.query",
                            "with": {
                                "dsn": "{{ vars.db }}",
                                "query": "SELECT email FROM customers",
                            },
                        },
                        sh("welcome", "echo {{ steps.lookup.outputs.value }} > welcomed.txt"),
                        sh("words", "printf '%s|' {{ steps.lookup.outputs.rows[0] }} > words.txt"),
                    ],
                }
            ],
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert not Path("PWNED").exists()
    assert Path("welcomed.txt").read_text() == EMAIL + "\n"
    assert Path("words.txt").read_text() == EMAIL + "|"  # a list: one word per item


def test_tour_contingency_pages_an_error_with_quotes_verbatim(runbook: Any) -> None:
    """The tour's contingency once echoed ``{{ failed_step.error }}`` inside '…': an error
    that holds a quote (here the failing command's own text) ran as shell."""
    tour = (ROOT / "runbooks" / "tour" / "operator-session.yaml").read_text()
    tour = tour.replace('"test {{ vars.fail_wave }} != {{ wave.id }}"', '"exit 1 # it\'s `x`"')
    Path("tour.yaml").write_text(tour)
    assert runbook("apply", "tour.yaml", "--yes").code == 3  # the approval gate
    assert runbook("approve", "tour.yaml", "go-ahead", "--by", "me").code == 0
    r = runbook("apply", "tour.yaml", "--yes")
    assert r.code == 1, r.output
    page = Path("tour/pager.log").read_text()
    assert page == "PAGE: health[pilot] failed: `exit 1 # it's `x`` exited with status 1\n"


def test_a_list_renders_as_separate_quoted_words_and_quote_is_not_doubled(runbook: Any) -> None:
    Path("r.yaml").write_text(
        runbook_yaml(
            vars={"files": ["a b", "c;rm -rf x", "$HOME"], "who": "it's me"},
            phases=[
                {
                    "id": "p",
                    "steps": [
                        sh("list", "printf '[%s]' {{ vars.files }} > list.txt"),
                        sh("once", "printf '[%s]' {{ vars.who | quote }} {{ vars.who }} > q.txt"),
                        sh("raw", "{{ 'printf' | raw }} '[%s]' {{ vars.files | quote }} > r.txt"),
                    ],
                }
            ],
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    assert Path("list.txt").read_text() == "[a b][c;rm -rf x][$HOME]"
    assert Path("q.txt").read_text() == "[it's me][it's me]"
    assert Path("r.txt").read_text() == "[a b][c;rm -rf x][$HOME]"


@pytest.mark.parametrize(
    ("command", "kind"),
    [("echo 'PAGE: {{ run.id }}' done", "'…'"), ('echo "id={{ run.id }}" done', '"…"')],
)
def test_a_template_inside_a_quoted_literal_of_a_command_is_exit_2_at_its_position(
    runbook: Any, command: str, kind: str
) -> None:
    text = runbook_yaml(phases=[{"id": "p", "steps": [sh("s", command)]}])
    Path("r.yaml").write_text(text)
    # the position is the `{{` itself, however the YAML scalar is written
    (line,) = [i for i, ln in enumerate(text.splitlines(), 1) if "{{" in ln]
    col = text.splitlines()[line - 1].index("{{") + 1
    r = runbook("validate", "r.yaml")
    assert r.code == 2
    assert f"r.yaml:{line}:{col}: phases[0].steps[0].with.command: `{{{{ }}}}` inside a {kind}" in (
        r.err
    )
    assert runbook("apply", "r.yaml", "--yes").code == 2
    assert not Path(".runbook").exists()  # bad input never changes the state
    # the value the author vouches for may sit in quotes
    Path("r.yaml").write_text(text.replace("run.id }}", "run.id | raw }}"))
    assert runbook("validate", "r.yaml").code == 0


def test_a_template_inside_quotes_of_a_block_scalar_points_at_its_line() -> None:
    from runbook_engine.errors import ValidationFailed
    from runbook_engine.format.loader import load_text

    text = runbook_yaml(phases=[{"id": "p", "steps": [sh("s", "true")]}]).replace(
        "command: 'true'", "command: |\n            echo ok\n            echo 'x {{ run.id }}'"
    )
    with pytest.raises(ValidationFailed) as info:
        load_text(text, "b.yaml")
    (problem,) = info.value.problems
    lines = text.splitlines()
    assert lines[problem.line - 1][problem.col - 1 :].startswith("{{ run.id }}")


def test_raw_on_outside_data_is_a_lint_warning_and_an_error_under_strict(runbook: Any) -> None:
    Path("r.yaml").write_text(
        runbook_yaml(
            risks=[
                {
                    "id": "r",
                    "likelihood": "low",
                    "impact": "low",
                    "contingencies": ["page"],
                }
            ],
            contingencies=[
                {
                    "id": "page",
                    "action": "shell",
                    "with": {"command": "echo {{ failed_step.error | raw }} {{ failed_step.id }}"},
                }
            ],
            phases=[
                {
                    "id": "p",
                    "steps": [
                        sh("a", "true", risks=["r"]),
                        sh("b", "echo {{ steps.a.outputs.stdout | raw }}"),
                        sh("c", "echo {{ 'vouched' | raw }} {{ steps.a.status | raw }}"),
                    ],
                }
            ],
        )
    )
    r = runbook("validate", "r.yaml")
    assert r.code == 0
    warned = [ln for ln in r.err.splitlines() if "| raw` writes outside data" in ln]
    assert len(warned) == 2, r.err
    assert "contingencies[0].with.command: warning: `failed_step.error | raw`" in warned[0]
    assert "phases[0].steps[1].with.command: warning: `steps.a.outputs.stdout | raw`" in (warned[1])
    assert runbook("validate", "--strict", "r.yaml").code == 2


def test_outside_data_in_sql_text_is_a_lint_warning(runbook: Any) -> None:
    Path("r.yaml").write_text(
        runbook_yaml(
            phases=[
                {
                    "id": "p",
                    "steps": [
                        sh("a", "echo 7"),
                        {
                            "id": "b",
                            "action": "sql.exec",
                            "with": {
                                "dsn": "sqlite:///x.db",
                                "sql": "DELETE FROM t WHERE id = {{ steps.a.outputs.stdout }}",
                            },
                            "rollback": "none",
                        },
                        {
                            "id": "c",
                            "action": "sql.exec",
                            "with": {
                                "dsn": "sqlite:///x.db",
                                "sql": "DELETE FROM t WHERE id = :id",
                                "params": {"id": "{{ steps.a.outputs.stdout }}"},
                            },
                            "rollback": "none",
                        },
                    ],
                }
            ],
        )
    )
    r = runbook("validate", "r.yaml")
    assert r.code == 0
    assert (
        "phases[0].steps[1].with.sql: warning: `steps.a.outputs.stdout` is outside data "
        "templated into SQL text: pass it as a bound parameter (`params:`) instead"
    ) in r.err
    assert "steps[2]" not in r.err  # params are the way


@pytest.mark.parametrize(
    "expr",
    [
        "steps.a['__cla' ~ vars.ss]",  # a computed key: validation cannot see it
        "steps['a']['__reduce_ex' ~ vars.u](2)",
        "steps.a['outputs']['__cla' ~ vars.ss]",
        "steps['__cla' ~ vars.ss]",
        "vars['__cla' ~ vars.ss]",
    ],
)
def test_sandbox_reaches_nothing_starting_with_underscore(runbook: Any, expr: str) -> None:
    Path("r.yaml").write_text(
        runbook_yaml(
            vars={"ss": "ss__", "u": "__"},
            phases=[
                {
                    "id": "p",
                    "steps": [sh("a", "echo hi"), sh("b", f"echo {{{{ {expr} }}}} > leak.txt")],
                }
            ],
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert not Path("leak.txt").exists()
    b = next(s for s in status_json(runbook, "r.yaml")["steps"] if s["id"] == "b")
    assert b["status"] == "failed"
    assert b["error"].startswith("template error in with.command: ")
    assert "__" in b["error"] and "<" not in b["error"]  # named, never rendered


def test_plain_data_keeps_its_underscore_keys(runbook: Any) -> None:
    Path("r.yaml").write_text(
        runbook_yaml(
            vars={"row": {"_id": "k-1"}},
            phases=[{"id": "p", "steps": [sh("a", "echo {{ vars.row['_id'] }} > id.txt")]}],
        )
    )
    assert runbook("apply", "r.yaml", "--yes").code == 0
    assert Path("id.txt").read_text() == "k-1\n"
