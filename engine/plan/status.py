"""The plan against the current state (SPEC §4): each step to run, done, changed since applied,
skipped or waiting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format.loader import Loaded
from ..state.status import State, Status
from ..state.view import approval_standing
from .build import StepStatus

_PLAN = {
    Status.SUCCEEDED: "done",
    Status.SKIPPED: "skipped",
    Status.WAITING: "waiting",
    Status.UNKNOWN: "waiting",  # for the operator's decision (`runbook resolve`)
    Status.RUNNING: "running",
    Status.ROLLING_BACK: "running",
}


def plan_statuses(
    loaded: Loaded,
    state: State,
    state_dir: str | None = None,
    values: Mapping[str, Any] | None = None,
) -> dict[str, StepStatus]:
    """Each step's standing; a waiting approval step also says how many approvals count and
    why the others do not (``approval void: REASON``) against this runbook and ``values``
    (the vars given to ``plan``, masked)."""
    out: dict[str, StepStatus] = {}
    for node, inst in loaded.runbook.instances.items():
        st = state.steps.get(node)
        if st is None:
            out[node] = StepStatus("to run")
            continue
        shown = _PLAN.get(st.status, "to run")  # pending, failed, rolled_back: they run again
        changed = st.status is Status.SUCCEEDED and bool(st.digest) and st.digest != inst.digest
        note = None
        if state_dir is not None and st.status is Status.WAITING:
            standing = approval_standing(state, loaded.runbook, node, state_dir, values)
            note = standing["text"] if standing else None
        out[node] = StepStatus(shown, changed, note=note)
    return out
