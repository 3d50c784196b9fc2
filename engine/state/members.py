"""The members of a ``foreach`` step left `unknown` by a crash (its own calls, or those of its
per-member rollback): what `resolve --member` decides and what `status` lists."""

from __future__ import annotations

from typing import Any

from ..format.model import Runbook

SHOWN = 10  # unknown members named in a message


def unknown_calls(state: Any, rb: Runbook, step: str) -> tuple[str, list[Any]]:
    """The records key (``STEP`` or ``STEP#rollback``) whose calls an operator decides now,
    and its members left `unknown` in the wave's current attempt: the rollback's when it has
    some (a per-member rollback cut by a crash), else the step's own."""
    inst = rb.instances.get(step)
    if inst is None or inst.wave is None or inst.step.foreach is None:
        return step, []
    current = state.attempts.get((inst.step.foreach.cohort, inst.wave.id))
    if current is None:
        return step, []
    for key in (f"{step}#rollback", step):
        calls = state.member_calls.get((key, current.attempt), {})
        unknown = [k for k, v in calls.items() if v == "unknown"]
        if unknown:
            return key, unknown
    return step, []


def unknown_text(state: Any, rb: Runbook, step: str) -> str | None:
    """The members still unknown, as status shows them (None: none)."""
    _, unknown = unknown_calls(state, rb, step)
    if not unknown:
        return None
    more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
    return (
        f"{len(unknown)} member call(s) cut by a crash still unknown "
        f"({', '.join(str(k) for k in unknown[:SHOWN])}{more})"
    )
