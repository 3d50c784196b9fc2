"""Issue 12 audit: a cohort gate on SQLite never reads text as 0 (sum()/avg() would): a value
that is not a number makes the measurement inconclusive, as the plain gate does."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from tests.engine.cohort_fixtures import ledger
from tests.engine.helpers import status_json
from tests.plugins.test_check_cohort import gate, prepare


def _metrics(rows: list[tuple[Any, Any]]) -> None:
    with sqlite3.connect("metrics.db") as db:
        db.execute("CREATE TABLE subscriptions (customer_id, cancelled)")  # no type: as given
        db.executemany("INSERT INTO subscriptions VALUES (?, ?)", rows)


@pytest.mark.parametrize(
    ("metric", "bad"), [("mean", "abc"), ("rate", ""), ("mean", "NaN"), ("sum", "1.5x")]
)
def test_a_cohort_gate_with_text_values_is_inconclusive_not_a_number(
    runbook: Any, metric: str, bad: str
) -> None:
    w = prepare(runbook, gate(dsn="sqlite:///metrics.db", metric=metric, condition="value <= 0.01"))
    keys = [k for ks in w.values() for k in ks]
    # one member's row is text among numbers: read as 0 it would pass the gate
    _metrics(
        [(k, bad if i == 0 else 0) for i, k in enumerate(sorted(w["pilot"]))]
        + [(k, 0) for k in keys if k not in w["pilot"]]
    )
    r = runbook("apply", "m.yaml", "--yes")
    assert r.code == 3, r.output  # inconclusive: a person decides
    assert "1 row(s) gave a value that is not a number" in r.out
    shown = {"": "gave an empty value", "NaN": "gave nan"}.get(bad, repr(bad))
    assert shown in r.out, r.output
    by = {s["id"]: s for s in status_json(runbook, "m.yaml")["steps"]}
    assert by["churn-gate[pilot]"]["status"] == "waiting"
    assert by["churn-gate[pilot]"]["outputs"].get("outcome") in (None, "inconclusive")
    assert ledger("SELECT DISTINCT state FROM entity WHERE wave = 'early'") == [("pending",)]


def test_a_cohort_gate_reads_numeric_text_as_a_number(runbook: Any) -> None:
    w = prepare(runbook, gate(dsn="sqlite:///metrics.db", metric="mean", condition="value <= 0.01"))
    keys = [k for ks in w.values() for k in ks]
    _metrics([(k, " 0.0 ") for k in keys])
    r = runbook("apply", "m.yaml", "--yes")
    assert "not a number" not in r.out, r.output
    by = {s["id"]: s for s in status_json(runbook, "m.yaml")["steps"]}
    assert by["churn-gate[pilot]"]["status"] == "succeeded", r.output
