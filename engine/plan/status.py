"""The plan against the current state (SPEC §4): each step to run, done, changed since applied,
skipped or waiting."""

from __future__ import annotations

from ..format.loader import Loaded
from ..state.status import State, Status
from .build import StepStatus

_PLAN = {
    Status.SUCCEEDED: "done",
    Status.SKIPPED: "skipped",
    Status.WAITING: "waiting",
    Status.UNKNOWN: "waiting",  # for the operator's decision (`runbook resolve`)
    Status.RUNNING: "running",
    Status.ROLLING_BACK: "running",
}


def plan_statuses(loaded: Loaded, state: State) -> dict[str, StepStatus]:
    out: dict[str, StepStatus] = {}
    for node, inst in loaded.runbook.instances.items():
        st = state.steps.get(node)
        if st is None:
            out[node] = StepStatus("to run")
            continue
        shown = _PLAN.get(st.status, "to run")  # pending, failed, rolled_back: they run again
        changed = st.status is Status.SUCCEEDED and bool(st.digest) and st.digest != inst.digest
        out[node] = StepStatus(shown, changed)
    return out
