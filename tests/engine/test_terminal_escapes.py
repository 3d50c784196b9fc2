"""Issue 12 audit: control characters from member data (keys, names, error text) never reach
the terminal raw from `apply`, `status` or `rollback`: one helper escapes them in every line."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from tests.engine.helpers import status_json

RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # anything but tab and line feed
KEYS = ["k1", "k6\x1b]0;PWNED\x07\x1b[31m", "k2\r\nX-Inj: 1"]


def _runbook() -> None:
    with sqlite3.connect("legacy.db") as db:
        db.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT)")
        db.executemany(
            "INSERT INTO customers VALUES (?, ?)",
            [(KEYS[0], "Alice"), (KEYS[1], "\x1b[2JTERM"), (KEYS[2], "Bob\rEve")],
        )
    step = {
        "id": "a",
        "action": "shell",
        "marks": "moved",
        "rollback": "none",
        "foreach": {"cohort": "subs", "max_failed": 0},
        "with": {"command": "printf '%s' {{ member.name }} >&2; exit 1"},
    }
    doc = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "term"},
        "vars": {"legacy_db": "sqlite:///legacy.db"},
        "cohorts": {
            "subs": {
                "source": {
                    "dsn": "{{ vars.legacy_db }}",
                    "query": "SELECT id, name FROM customers",
                },
                "key": "id",
                "attributes": ["name"],
                "waves": [{"id": "all", "size": "rest"}],
            }
        },
        "phases": [{"id": "p", "waves": {"cohort": "subs"}, "steps": [step]}],
    }
    Path("r.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _clean(text: str) -> None:
    assert not RAW.search(text), repr(RAW.search(text))


def test_control_characters_from_member_data_are_escaped_in_apply_and_status(
    runbook: Any,
) -> None:
    _runbook()
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    _clean(r.output)
    assert "k6\\x1b]0;PWNED\\x07\\x1b[31m" in r.out  # shown, escaped
    assert "\\x1b[2JTERM" in r.out
    for line in r.out.splitlines():  # a key's CR LF never forges a line of its own
        assert not line.startswith("X-Inj")
    r = runbook("status", "r.yaml")
    assert r.code == 0
    _clean(r.output)
    assert "k6\\x1b]0;PWNED\\x07\\x1b[31m" in r.out
    assert all(not ln.startswith("X-Inj") for ln in r.out.splitlines())
    # the state keeps the data as it is: only the display escapes it
    err = status_json(runbook, "r.yaml")["steps"][0]["error"]
    assert "\x1b]0;PWNED\x07" in err


def test_colour_codes_pass_on_a_colour_terminal_and_nothing_else() -> None:
    from runbook_engine.format.printable import one_line, printable

    assert printable("\x1b[31mred\x1b[0m", colour=True) == "\x1b[31mred\x1b[0m"
    assert printable("\x1b]0;t\x07 \x1b[2J", colour=True) == "\\x1b]0;t\\x07 \\x1b[2J"
    assert printable("a\nb\rc") == "a\nb\\rc"
    assert one_line("a\nb\tc\x9b") == "a\\nb\\tc\\x9b"
