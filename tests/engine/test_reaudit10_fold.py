"""Issue 10 re-audit, item 8: a journal whose approval item is a list or `{not json`, whose
number is `1e999`, or whose values nest thousands deep crashed status, report, apply, approve
and rollback with an internal error.  Each is now exit 2 naming the record, the state
untouched."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import sh, write

STATE = Path(".runbook/t/state.db")
COMMANDS = [
    ("status", "r.yaml"),
    ("status", "r.yaml", "--format", "json"),
    ("report", "r.yaml", "--format", "json"),
    ("report", "r.yaml", "--format", "markdown"),
    ("report", "r.yaml", "--format", "html", "--output", "out.html"),
    ("apply", "r.yaml", "--yes"),
    ("approve", "r.yaml", "gate"),
    ("rollback", "r.yaml", "--yes"),
]


def _item(value: str) -> Any:
    def change(rec: dict[str, Any]) -> str:
        if rec.get("t") != "record":
            return ""
        rec["items"] = {k: value for k in rec["items"]}
        return json.dumps(rec)

    return change


def _raw(text: str) -> Any:
    return lambda rec: text if rec.get("t") == "retry" or rec.get("t") == "record" else ""


DEEP = '{"t":"record","step":"gate","items":{},"x":' + "[" * 3000 + "]" * 3000 + "}"
CASES = {
    "approval_item_a_list": (_item("[1, 2]"), "must be a JSON object"),
    "approval_item_not_json": (_item("{not json"), "is not JSON"),
    "approval_item_by_an_object": (_item(json.dumps({"by": {"x": 1}})), "`by` cannot be"),
    "approval_item_nested_too_deep": (
        _item('{"x": ' + "[" * 100 + "]" * 100 + "}"),
        "nested deeper than 64",
    ),
    "number_infinite": (_raw('{"t":"record","step":"gate","items":{},"n":1e999}'), "damaged"),
    "nan_constant": (_raw('{"t":"record","step":"gate","items":{},"n":NaN}'), "damaged"),
    "nested_thousands_deep": (_raw(DEEP), "damaged"),
    "nested_deeper_than_64": (
        _raw('{"t":"record","step":"gate","items":{},"x":' + "[" * 80 + "]" * 80 + "}"),
        "nested deeper than 64",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_record_item_or_number_or_nesting_is_exit_2_naming_the_record(
    runbook: Any, case: str
) -> None:
    change, says = CASES[case]
    gate = {"id": "gate", "action": "approval", "with": {"message": "ok?"}}
    write("r.yaml", phases=[{"id": "p", "steps": [sh("a", "true"), gate]}])
    assert runbook("apply", "r.yaml", "--yes").code == 3
    assert runbook("approve", "r.yaml", "gate").code == 0
    con = sqlite3.connect(STATE, isolation_level=None)
    try:
        rows = con.execute("SELECT seq, rec FROM journal ORDER BY seq").fetchall()
        for seq, raw in rows:
            new = change(json.loads(raw))
            if new and ("approval:" in raw or '"t":"record"' not in new or "1e999" in new):
                con.execute("UPDATE journal SET rec = ? WHERE seq = ?", (new, seq))
                changed = seq
                break
        else:
            raise AssertionError("no record to change")
    finally:
        con.close()
    before = hashlib.sha256(STATE.read_bytes()).hexdigest()
    for command in COMMANDS:
        r = runbook(*command)
        assert r.code == 2, (command, r.output)
        assert f"journal record {changed} is" in r.err and says in r.err, (command, r.err)
        assert "Traceback" not in r.output and "internal error" not in r.output
    assert hashlib.sha256(STATE.read_bytes()).hexdigest() == before
    assert not Path("out.html").exists()
