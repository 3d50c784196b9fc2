"""The journal's records of one run -> a ``Report`` (``report_model.py``).

A run is the stretch of the journal from its first ``run`` record to the first ``run`` record of
the next run (runs never interleave: a new run begins only once the previous one succeeded or
was rolled back).  Statuses are the fold of the journal up to the end of that stretch, so an
earlier run (``--run ID``) is reported as it stood when it ended.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput, StateError
from ..format.loader import Loaded
from ..state.db import Database
from .cohorts import cohort_reports
from .model import (
    Report,
)
from .sections import Sections
from .walk import Walk


def runs_of(records: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(run id, first record, end) of every run, in journal order."""
    out: list[tuple[str, int, int]] = []
    for i, rec in enumerate(records):
        if rec.get("t") != "run" or not isinstance(rec.get("run"), str):
            continue
        if out and out[-1][0] == rec["run"]:
            continue
        if out:
            out[-1] = (out[-1][0], out[-1][1], i)
        out.append((rec["run"], i, len(records)))
    return out


def pick_run(records: list[dict[str, Any]], run_id: str | None, name: str) -> tuple[int, int]:
    runs = runs_of(records)
    if not runs:
        raise StateError(
            f"{name}: the state has no run yet (an apply stopped before starting one): "
            "nothing to report"
        )
    if run_id is None:
        return runs[-1][1], runs[-1][2]
    for rid, start, end in runs:
        if rid == run_id:
            return start, end
    known = ", ".join(r[0] for r in runs)
    raise InvalidInput(f"--run {run_id}: no such run of {name} (runs: {known})")


def build(
    loaded: Loaded,
    records: list[dict[str, Any]],
    run_id: str | None,
    notices: list[str],
    ledger: Database | None = None,
) -> Report:
    """``ledger``: the state database opened read-only, for the customers' part (cohorts)."""
    rb = loaded.runbook
    start, end = pick_run(records, run_id, rb.name)
    walk = Walk(loaded, records, start, end)
    rows = [walk.row(sid, inst) for sid, inst in rb.instances.items()]
    strays = [sid for sid in walk.order if sid not in rb.instances]
    rows.extend(walk.row(sid, None) for sid in strays)
    notes = list(notices)
    if strays:
        shown = ", ".join(strays[:10]) + (" …" if len(strays) > 10 else "")
        notes.append(
            f"{len(strays)} step(s) of this run are no longer in {rb.file}: {shown} "
            "(the runbook was edited since)"
        )
    cohorts = []
    if rb.cohorts and ledger is not None:
        run = str(records[start].get("run"))
        cohorts = cohort_reports(rb, walk.state, ledger, run, records[start:end])
        if end < len(records):
            notes.append(
                "the customers' figures are the ledger as it stands now, after later runs; "
                "the `in run` columns are this run's"
            )
    sections = Sections(rb, walk, rows, cohorts)
    runs = []
    for rid, s, e in runs_of(records):
        status = [r.get("status") for r in records[s:e] if r.get("t") == "run"]
        runs.append({"id": rid, "status": str(status[-1]), "started": str(records[s].get("at"))})
    rep = sections.report(walk.run_info(), runs, notes)
    void_now(rep, walk)
    return rep


def void_now(rep: Report, walk: Walk) -> None:
    """The approvals of a step still waiting that no longer count now, marked void with the
    reason ``plan`` and ``status`` give (``approval void: REASON``: expired past the step's
    ``expires``, the runbook or the step edited, other vars). An approval acted on (its step
    ran) stood, whatever its age since."""
    from datetime import UTC, datetime

    from ..format import approvals
    from ..state.status import Status

    state, rb = walk.state, walk.rb
    run = state.run
    if run is None or run.finished:
        return
    for node, inst in rb.instances.items():
        if inst.step.action != "approval" or state.status_of(node) is not Status.WAITING:
            continue
        try:  # allow_self does not void anything: any default does
            rules = approvals.rules(inst.step.call.params, run.vars or {}, True, node)
        except ValueError:
            continue
        st = state.steps.get(node)
        got = approvals.tally(
            state.records.get(node),
            run.id,
            rules,
            digest=rb.digest,
            vars_now=approvals.vars_digest(run.vars or {}),
            step_pin=inst.digest,
            now=datetime.now(UTC),
            used=approvals.used_of(st.outputs if st else None),
        )
        for doc, why in got.void:
            was = doc.get("was")
            who = str((was if isinstance(was, dict) else doc).get("by"))
            for a in reversed(rep.approvals):
                if a.step == node and a.by == who and a.run in (run.id, None):
                    if a.void is None:
                        a.void = why
                    break
